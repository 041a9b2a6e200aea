"""What a cluster deployment relies on, without a cluster: the GPU a task runs on, the discovery
script, where a shipped model is found, what workers report, the shipped examples, and the wheel
installed into ``make dist``'s environment archive."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from pyspark.resource import ResourceInformation

from conftest import ROOT
from ner_udf.cli import EXAMPLES, main
from ner_udf.manifest import CountsParam, WorkerMetrics, worker_sections
from ner_udf.preflight import find_model_dir
from ner_udf.spark import task_device

SCRIPT = ROOT / "ner_udf" / "resources" / "get_gpus_resources.sh"


class FakeTaskContext:
    def __init__(self, resources):
        self._resources = resources

    def resources(self):
        return self._resources


@pytest.mark.parametrize("device, resources, expected", [
    ("cuda", {"gpu": ResourceInformation("gpu", ["3"])}, "cuda:3"),
    ("auto", {"gpu": ResourceInformation("gpu", ["1", "2"])}, "cuda:1"),  # the first of the task's GPUs
    ("cuda", {}, None),             # no GPU scheduling: model.device decides (cuda = cuda:0)
    ("cuda", {"gpu": ResourceInformation("gpu", [])}, None),
    ("cpu", {"gpu": ResourceInformation("gpu", ["0"])}, None),  # model.device=cpu is never overridden
])
def test_each_task_uses_the_gpu_spark_assigned(device, resources, expected):
    assert task_device(device, FakeTaskContext(resources)) == expected
    assert task_device(device, None) is None  # not in a task (driver, plain Python)


def test_gpu_discovery_script(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=index ] || exit 3\nprintf '0\\n 1\\n3\\n'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": "gpu", "addresses": ["0", "1", "3"]}
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    r = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0  # Spark then refuses to start the executor, naming the script


def test_shipped_gpu_config_names_the_discovery_script():
    conf = yaml.safe_load((ROOT / "conf" / "cluster-gpu.yaml").read_text())["spark"]["conf"]
    assert conf["spark.executor.resource.gpu.amount"] == conf["spark.task.resource.gpu.amount"] == "1"
    assert Path(conf["spark.executor.resource.gpu.discoveryScript"]).name == SCRIPT.name


def test_a_relative_model_name_is_found_where_spark_unpacked_it(tmp_path, monkeypatch):
    work, files, elsewhere = (tmp_path / d for d in ("work", "files", "elsewhere"))
    for d in (work / "model", files / "model", files / "other", elsewhere):
        d.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert find_model_dir("model", [work, files]) == Path("model")  # the working directory first
    assert find_model_dir("other", [work, files]) == files / "other"
    assert find_model_dir(str(elsewhere), [work, files]) == elsewhere
    assert find_model_dir("org/model-id", [work, files]) is None  # a hub id
    assert find_model_dir(str(tmp_path / "missing"), [work, files]) is None


def test_worker_records_keep_the_first_report():
    class Acc:
        def __init__(self):
            self.value, self.param = {}, CountsParam()

        def add(self, v):
            self.value = self.param.addInPlace(self.value, v)

    acc = Acc()
    metrics = WorkerMetrics(acc)
    metrics.worker_info("h/1", python="/w/app/0/environment/bin/python", model_path="/w/app/0/model", device="cpu")
    metrics.worker_info("h/2", python="/w/app/1/environment/bin/python", model_path="/w/app/1/model", device="cpu")
    metrics.worker_info("h/1", python="other", model_path="other", device="cpu")
    metrics.model_loaded("h/10", "h/1", 5, None)
    workers = worker_sections(acc.value)["workers"]
    assert workers == {"h/1": {"python": "/w/app/0/environment/bin/python", "model_path": "/w/app/0/model",
                               "device": "cpu"},
                       "h/2": {"python": "/w/app/1/environment/bin/python", "model_path": "/w/app/1/model",
                               "device": "cpu"}}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_init_config_writes_each_shipped_example(name, tmp_path, capsys):
    dest = tmp_path / EXAMPLES[name]
    assert main(["init-config", name, str(dest)]) == 0
    src = ROOT / ("ner_udf/resources" if name == "gpu-discovery" else "conf") / EXAMPLES[name]
    assert dest.read_bytes() == src.read_bytes()
    assert os.access(dest, os.X_OK) == (name == "gpu-discovery")
    assert main(["init-config", name, str(dest)]) == 2  # never replaced
    assert "exists; not replaced" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_in_the_environment_archive_runs_on_its_own(tmp_path):
    """``make dist`` installed the wheel into a fresh venv and packed it: unpacked elsewhere, its
    ``ner-tag`` and ``python -m ner_udf`` work, and the examples come with it."""
    archive = ROOT / "dist" / "ner-udf-env.tar.gz"
    assert archive.exists(), f"{archive} missing: run `make dist` (make test does)"
    env_dir = tmp_path / "environment"
    with tarfile.open(archive) as tf:
        tf.extractall(env_dir, filter="tar")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"  # as `source environment/bin/activate`
    r = subprocess.run(["ner-tag", "init-config", "cluster-cpu", str(tmp_path / "c.yaml")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.yaml").read_bytes() == (ROOT / "conf" / "cluster-cpu.yaml").read_bytes()
    assert f"{env_dir}/share/ner-udf/conf/cluster-cpu.yaml" in r.stdout  # from the installed wheel, not this clone
    r = subprocess.run([str(env_dir / "bin" / "python"), "-m", "ner_udf", "--help"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: ner-tag" in r.stdout, r.stderr
    r = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import ner_udf, torch, transformers, pyspark, sys; "
                        "print(ner_udf.__file__); print(sys.prefix)"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    module, prefix = r.stdout.split()
    assert module.startswith(str(env_dir)) and prefix == str(env_dir), r.stdout

"""A real Spark standalone cluster on 127.0.0.1: one master and two 1-core workers started from the
pip-installed pyspark, and the job submitted exactly as README "Deploying" says (its standalone block,
with this cluster's address, sizes and paths put in). Executors must run the Python of the shipped
environment archive and load the shipped model archive (``make dist``), not ``.venv`` or ``.cache/``;
their entities must equal the tagger's in this process, with the same config file's settings and the
same model (the job's tables equal the tagger's: test_job). Every process the test starts is stopped
by its pid, also when the test fails."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, assert_same_entities, entity_scores
from ner_udf.config import config_from
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from submit import run_in_group
from texts import corpus

pytestmark = pytest.mark.slow
README = (ROOT / "README.md").read_text()
DIST = {"env": ROOT / "dist" / "ner-udf-env.tar.gz", "model": ROOT / "dist" / "model.tar.gz"}


def recipe() -> str:
    """README's standalone spark-submit block, as one shell script."""
    return next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "--master spark://" in b)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float, procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a cluster process exited with {p.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


@contextmanager
def standalone_cluster(tmp: Path, workers: int = 2):
    """``(master_url, [work_dir, ...])`` of a running cluster; every process stopped by pid on exit."""
    spark_class = Path(sys.executable).parent / "spark-class"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(name: str, args: list[str]) -> None:
        log = tmp / f"{name}.log"
        with open(log, "wb") as out:  # spark-class execs the JVM: the pid is the JVM's
            procs.append((subprocess.Popen([str(spark_class), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, cwd=tmp), log))

    try:
        port, ui = free_port(), free_port()
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(ui)])
        url = f"spark://127.0.0.1:{port}"
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
                 "master listening", 120, procs)
        work = [tmp / f"work-{i}" for i in range(workers)]
        for i, w in enumerate(work):
            start(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                                  "--memory", "3g", "--work-dir", str(w), "--webui-port", str(free_port()), url])

        def alive() -> bool:
            state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2))
            return sum(w["state"] == "ALIVE" for w in state["workers"]) == workers

        wait_for(alive, f"{workers} workers registered", 180, procs)
        yield url, work
    finally:
        for p, _ in reversed(procs):  # workers first: each stops its executors on SIGTERM
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_standalone_cluster_runs_the_shipped_environment_and_model(rampart_dir, tmp_path):
    for name, path in DIST.items():
        assert path.exists(), f"{path} missing: run `make dist` (make test does)"
    texts = corpus(60, seed=141)
    pq.write_table(pa.table({"doc_id": pa.array(range(len(texts)), pa.int64()), "text": texts}), tmp_path / "in.parquet")

    # the reference: the tagger here, with the recipe's config file and the model directory on this machine
    cfg = config_from(ROOT / "conf" / "cluster-cpu.yaml", {"model.name": str(rampart_dir)})
    results = Tagger.from_loaded(load_model(cfg.model), cfg.tagging).tag(texts)
    local = {(i, e.label, e.start, e.end, texts[i][e.start:e.end]): e.score
             for i, res in enumerate(results) for e in res.entities}
    assert len(local) > 20, len(local)
    (weights,) = rampart_dir.glob("*.safetensors")  # one file: its sha256 is the manifest's weights_sha256
    with open(weights, "rb") as fh:
        weights_sha256 = hashlib.file_digest(fh, "sha256").hexdigest()

    with standalone_cluster(tmp_path) as (master, work_dirs):
        script = recipe()
        for a, b in (("spark://spark-master:7077", master), ("spark.executor.cores=8", "spark.executor.cores=1"),
                     ("spark.task.cpus=8", "spark.task.cpus=1"), ("spark.executor.memory=4g", "spark.executor.memory=2g"),
                     ("hdfs:///lake/docs", str(tmp_path / "in.parquet")), ("hdfs:///lake/ner", str(tmp_path / "cluster")),
                     ("PYSPARK_DRIVER_PYTHON=.venv/bin/python", f"PYSPARK_DRIVER_PYTHON={shlex.quote(sys.executable)}")):
            assert a in script, f"README's standalone recipe no longer says {a!r}"
            script = script.replace(a, b)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # spark-submit of this pyspark
        # bash, spark-submit's JVM and the Python driver: one process group, ours
        job = run_in_group(["bash", "-euc", script], env, ROOT)
        assert job.returncode == 0, job.stdout[-5000:]

    manifest = json.loads((tmp_path / "cluster" / "manifest.json").read_text())
    loads, workers = manifest["model_loads"], manifest["workers"]
    print(f"\nmaster {manifest['spark']['master']}; model loads per executor: {loads}")
    for name, w in sorted(workers.items()):
        print(f"worker {name}: python {w['python']}, model {w['model_path']}")
    assert manifest["spark"]["master"] == master
    # spark-submit's --conf won over the config file's spark.conf (8 cores would fit no worker)
    assert manifest["spark"]["conf"]["spark.executor.cores"] == manifest["spark"]["conf"]["spark.task.cpus"] == "1"
    assert len(loads) == 2 and set(loads.values()) == {1}, loads  # two executors, one model load each
    assert len(workers) == 2, workers
    roots = [str(w.resolve()) + os.sep for w in work_dirs]
    for w in workers.values():  # inside Spark's work directories: the shipped archives, not .venv / .cache
        assert any(w["python"].startswith(r) for r in roots) and w["python"].endswith("/environment/bin/python"), w
        assert any(w["model_path"].startswith(r) for r in roots) and w["model_path"].endswith("/model"), w
    assert manifest["model"]["weights_sha256"] == weights_sha256
    assert_same_entities(entity_scores(tmp_path / "cluster"), local)
    assert manifest["counts"]["documents"]["total"] == len(texts)

"""Faults injected into a running job: on ``local-cluster[2,1,2048]`` (two executor JVMs with one
core each, under spark-submit) a Python worker, and in another run an executor JVM, is killed with
SIGKILL while it tags. Spark retries; each run must commit output equal to a clean run's, and its
manifest must show the fault (failed task attempts, lost executor) and count the killed worker's
model load.

The kill's moment: the driver prints ``model loaded by worker HOST/PID`` when a worker reports its
load, which it does on its first batch, before tagging it; every task has ~1,000 documents to tag
after that, so the kill lands mid-task (the manifest's failed attempt proves it did).
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import assert_same_entities, entity_scores
from submit import submit
from texts import corpus

pytestmark = pytest.mark.slow

N_DOCS, PARTITIONS = 8000, 8
LOADED = re.compile(r"model loaded by worker (?P<host>[^/\s]+)/(?P<pid>\d+) ")


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, tuple[Path, dict, list[str]]]:
    """The same job three times: clean, a Python worker killed, an executor JVM killed."""
    tmp = tmp_path_factory.mktemp("faults")
    texts = corpus(N_DOCS, seed=171, max_words=60)
    pq.write_table(pa.table({"doc_id": pa.array(range(N_DOCS), pa.int64()), "text": texts}), tmp / "in.parquet")
    return {fault: run_with(fault, tmp, tiny_model_dir) for fault in ("none", "python worker", "executor")}


def run_with(fault: str, tmp: Path, model: Path) -> tuple[Path, dict, list[str]]:
    """The job on two executors; unless ``fault`` is "none", its target killed at the first model load."""
    out = tmp / f"out-{fault.replace(' ', '-')}"
    killed = {}

    def kill_on_load(line: str) -> None:
        m = LOADED.search(line)
        if fault != "none" and not killed and m:
            worker = int(m["pid"])
            target = worker if fault == "python worker" else executor_jvm(worker)
            os.kill(target, signal.SIGKILL)
            killed.update(worker=f"{m['host']}/{worker}", pid=target)

    done = submit("local-cluster[2,1,2048]",
                  ["--input", str(tmp / "in.parquet"), "--output", str(out), "--model", str(model),
                   "--set", f"spark.partitions={PARTITIONS}", "--set", "model.device=cpu"],
                  {"spark.executor.memory": "1g"}, on_line=kill_on_load)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, "\n".join(lines[-60:])
    assert fault == "none" or killed, "no model load reported, nothing killed:\n" + "\n".join(lines[-60:])
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["killed"] = killed
    print(f"{fault}: killed {killed or 'nothing'}; faults {json.dumps(manifest['faults'])}; "
          f"model loads {manifest['model_loads_per_worker']}")
    return out, manifest, lines


def executor_jvm(worker_pid: int) -> int:
    """The executor JVM above a Python worker: worker -> pyspark daemon -> executor."""
    jvm = _ppid(_ppid(worker_pid))
    cmdline = Path(f"/proc/{jvm}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "CoarseGrainedExecutorBackend" in cmdline, cmdline
    return jvm


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def documents(out: Path) -> list[dict]:
    cols = ["doc_id", "status", "n_chars", "n_tokens", "n_windows", "n_entities", "truncated", "text_sha256"]
    return sorted(pq.read_table(out / "documents").select(cols).to_pylist(), key=lambda r: r["doc_id"])


def test_a_clean_run_loads_the_model_once_per_executor(runs):
    out, manifest, _ = runs["none"]
    assert manifest["spark"]["master"] == "local-cluster[2,1,2048]" and manifest["spark"]["partitions"] == PARTITIONS
    assert manifest["spark"]["task_slots"] == 2  # two executors of one core, spark.task.cpus 1
    loads, tasks = manifest["model_loads"], manifest["tasks_per_worker"]
    print(f"model loads per executor: {loads}; tasks per Python worker: {tasks}")  # shown with pytest -s / -rP
    assert len(loads) == 2 and set(loads.values()) == {1}, loads  # two executors, exactly one load each
    assert sum(tasks.values()) == PARTITIONS and len(tasks) == 2, tasks  # one reused worker per executor
    assert [d["doc_id"] for d in documents(out)] == list(range(N_DOCS))
    assert manifest["faults"] == {"failed_task_attempts": 0, "killed_task_attempts": 0, "stages_retried": 0,
                                  "failures": [], "executors_lost": []}


@pytest.mark.parametrize("fault", ["python worker", "executor"])
def test_a_killed_worker_or_executor_changes_nothing_in_the_output(runs, fault):
    clean_out, clean, _ = runs["none"]
    out, manifest, lines = runs[fault]
    # same documents rows (every input row once), same entities
    docs = documents(out)
    assert [d["doc_id"] for d in docs] == list(range(N_DOCS))
    assert docs == documents(clean_out)
    assert_same_entities(entity_scores(out), entity_scores(clean_out))
    assert manifest["counts"] == clean["counts"]
    # the manifest shows the fault
    faults = manifest["faults"]
    assert faults["failed_task_attempts"] >= 1, faults
    if fault == "python worker":
        assert any("Python worker exited unexpectedly" in (f["reason"] or "") for f in faults["failures"]), faults
    else:
        assert len(faults["executors_lost"]) >= 1, faults
    # the killed worker's model load is counted (its task attempt failed: the accumulator never heard of it)
    killed = manifest["killed"]["worker"]
    assert manifest["model_loads_per_worker"].get(killed) == 1, (killed, manifest["model_loads_per_worker"])
    assert "load" in manifest["worker_peak_rss_mb"].get(killed, {}), manifest["worker_peak_rss_mb"]
    assert sum(manifest["model_loads"].values()) >= 3, manifest["model_loads"]  # 2 executors + the replacement

"""Dynamic allocation: with no initial executors Spark reports 2 cores whatever the cluster, so the
default partitions are planned from ``spark.dynamicAllocation.maxExecutors`` (``spark.planned_slots``),
and a run on a local-cluster that starts with no executor gets all of them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ner_udf.spark import planned_slots
from submit import submit
from texts import corpus

DYNAMIC = {"spark.dynamicAllocation.enabled": "true"}


def test_without_dynamic_allocation_the_registered_slots_are_planned_for():
    assert planned_slots(6, "yarn", {}) == (6, None)
    assert planned_slots(6, "yarn", {"spark.dynamicAllocation.enabled": "false",
                                     "spark.dynamicAllocation.maxExecutors": "50"}) == (6, None)
    for master in ("local", "local[2]", "local[*]"):  # Spark ignores dynamic allocation there
        assert planned_slots(2, master, {**DYNAMIC, "spark.dynamicAllocation.maxExecutors": "50"}) == (2, None)
    assert planned_slots(2, "local-cluster[5,2,1024]", {**DYNAMIC,
                                                        "spark.dynamicAllocation.maxExecutors": "5"}) == (5, None)


def test_under_dynamic_allocation_max_executors_times_their_slots_are_planned_for():
    assert planned_slots(2, "yarn", {**DYNAMIC, "spark.dynamicAllocation.maxExecutors": "3"}) == (3, None)  # 1 core each
    assert planned_slots(2, "yarn", {**DYNAMIC, "spark.dynamicAllocation.maxExecutors": "10",
                                     "spark.executor.cores": "8", "spark.task.cpus": "2"}) == (40, None)
    assert planned_slots(2, "yarn", {**DYNAMIC, "spark.dynamicAllocation.maxExecutors": "3",
                                     "spark.executor.cores": "1", "spark.task.cpus": "4"}) == (3, None)  # 1 per executor
    # never fewer than the executors registered now (initialExecutors above maxExecutors' slots)
    assert planned_slots(16, "yarn", {**DYNAMIC, "spark.dynamicAllocation.maxExecutors": "2"}) == (16, None)


def test_under_unbounded_dynamic_allocation_the_registered_slots_come_with_a_warning():
    for conf in (DYNAMIC, {**DYNAMIC, "spark.dynamicAllocation.maxExecutors": str(2**31 - 1)}):
        slots, warning = planned_slots(2, "k8s://https://h:6443", conf)
        assert slots == 2
        assert "registered now (8 partitions)" in warning
        assert "set spark.dynamicAllocation.maxExecutors or spark.partitions" in warning


N_DOCS = 6000


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dynamic") / "in.parquet"
    texts = corpus(N_DOCS, seed=505, max_words=60)
    pq.write_table(pa.table({"doc_id": pa.array(range(N_DOCS), pa.int64()), "text": texts}), path)
    return path


def submit_dynamic(args: list[str], conf: dict[str, str],
                   master: str = "local-cluster[3,1,1024]") -> subprocess.CompletedProcess:
    """The job through spark-submit on ``master`` (by default three executors of one core) under
    dynamic allocation with no initial executors; Spark's own log apart, in ``stderr``."""
    conf = {"spark.executor.memory": "1g", **DYNAMIC, "spark.dynamicAllocation.shuffleTracking.enabled": "true",
            "spark.dynamicAllocation.initialExecutors": "0", "spark.dynamicAllocation.minExecutors": "0", **conf}
    return submit(master, args, conf, merged=False)


def dry_run(corpus_file: Path, tmp: Path, model: Path, conf: dict[str, str]) -> tuple[dict, str]:
    """The plan ``--dry-run`` prints, and the whole output (spark-submit merges the driver's stderr
    into its stdout)."""
    done = submit_dynamic(["--input", str(corpus_file), "--output", str(tmp / "out"), "--model", str(model),
                           "--set", "model.device=cpu", "--dry-run"], conf)
    both = done.stdout + done.stderr
    assert done.returncode == 0, both[-4000:]
    return json.JSONDecoder().raw_decode(done.stdout, done.stdout.index("{\n"))[0], both


@pytest.mark.slow
def test_a_dry_run_plans_for_max_executors(corpus_file, tiny_model_dir, tmp_path):
    plan, err = dry_run(corpus_file, tmp_path, tiny_model_dir, {"spark.dynamicAllocation.maxExecutors": "3"})
    assert plan["spark"]["task_slots"] == 3 and plan["partitions"] == 12, plan
    assert plan["spark"]["warning"] is None and "ner-tag: warning" not in err


@pytest.mark.slow
def test_a_dry_run_without_max_executors_warns(corpus_file, tiny_model_dir, tmp_path):
    plan, err = dry_run(corpus_file, tmp_path, tiny_model_dir, {})
    slots = plan["spark"]["task_slots"]
    assert plan["partitions"] == 4 * slots
    assert "spark.dynamicAllocation.maxExecutors" in plan["spark"]["warning"]
    assert f"ner-tag: warning: {plan['spark']['warning']}" in err


@pytest.mark.slow
def test_a_run_that_starts_with_no_executor_gets_max_executors(corpus_file, tiny_model_dir, tmp_path):
    """Five executors of two cores, one task slot each (spark.task.cpus 2), none at the start, where
    Spark reports 2 cores: the run plans for maxExecutors' 5 slots (20 partitions), tasks wait, and
    dynamic allocation brings all five. (The 4 partitions planned before from those 2 cores, 1
    slot, never asked for a fifth: the same run with spark.partitions=4 got four executors.)"""
    out = tmp_path / "out"
    done = submit_dynamic(["--input", str(corpus_file), "--output", str(out), "--model", str(tiny_model_dir),
                           "--set", "model.device=cpu", "--quiet"],
                          {"spark.dynamicAllocation.maxExecutors": "5", "spark.executor.cores": "2",
                           "spark.task.cpus": "2", "spark.executor.memory": "512m",
                           "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
                           "spark.dynamicAllocation.sustainedSchedulerBacklogTimeout": "1s"},
                          master="local-cluster[5,2,1024]")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    loads, tasks = manifest["model_loads"], manifest["tasks_per_worker"]
    print(f"model loads per executor: {loads}; tasks per Python worker: {tasks}")  # shown with pytest -rP
    assert manifest["spark"]["task_slots"] == 5 and manifest["spark"]["partitions"] == 20
    assert manifest["spark"]["warning"] is None
    assert len(loads) == 5 and set(loads.values()) == {1}, loads  # all five executors came and tagged
    assert sum(tasks.values()) == 20, tasks
    assert manifest["counts"]["documents"]["total"] == N_DOCS

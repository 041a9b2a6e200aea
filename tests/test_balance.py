"""Cost-based spreading of texts over partitions (``tagging.balance``): the planner alone, where
rows land, the same entities as hash spreading, and the manifest's per-task times."""

from __future__ import annotations

import json
import random
import statistics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import assert_same_entities, entity_scores
from ner_udf import spark as glue
from ner_udf.balance import bucket_count, partition_loads, plan_buckets, resolve
from ner_udf.cli import main
from ner_udf.config import load_config
from texts import corpus, random_text

SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
SPARK = ["--set", "spark.master=local[2]", "--set",
         "spark.conf={spark.driver.host: 127.0.0.1, spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false'}"]
PARTITIONS = 4
LONG = (20_000, 22_000, 24_000, 26_000)  # characters of the four long documents


def test_lpt_puts_the_costliest_buckets_apart_and_evens_the_rest():
    costs = {0: 100, 1: 90, 2: 80, 3: 70, **{b: 10 for b in range(4, 40)}}
    plan = plan_buckets(costs, 64, 4)
    assert len({plan[b] for b in range(4)}) == 4  # the four big ones on four partitions
    loads = partition_loads(costs, plan, 4)
    assert sum(loads) == sum(costs.values()) and max(loads) - min(loads) <= 10, loads
    assert plan == plan_buckets(dict(reversed(costs.items())), 64, 4)  # deterministic, whatever the order
    assert plan[63] == 63 % 4  # an empty bucket still has a valid partition


def test_lpt_ties_go_to_the_lowest_bucket_and_partition():
    assert plan_buckets({5: 1, 2: 1, 7: 1}, 8, 2) == [0, 1, 0, 1, 0, 1, 0, 0]  # 2 -> 0, 5 -> 1, 7 -> 0
    assert plan_buckets({}, 3, 5) == [0, 1, 2]
    assert bucket_count(4) == 256 and bucket_count(1000) == 16_384 and bucket_count(20_000) == 20_000
    with pytest.raises(ValueError):
        plan_buckets({9: 1}, 8, 2)


def test_auto_is_hash_only_where_tasks_run_one_at_a_time():
    for master in ("local", "local[1]", "local[2]", "local[*]", "local[2,3]"):  # slots after spark.task.cpus
        assert resolve("auto", master, 1) == "hash", master
        assert resolve("auto", master, 2) == "cost", master
    # a cluster's slots at the start are not its slots later (dynamic allocation): always cost
    for master in ("local-cluster[2,1,1024]", "spark://h:7077", "yarn", "k8s://https://h:6443", ""):
        assert resolve("auto", master, 1) == "cost", master
    assert resolve("cost", "local[1]", 1) == "cost" and resolve("hash", "yarn", 8) == "hash"  # explicit wins


def test_task_times_keep_one_report_per_partition():
    from ner_udf import events
    from ner_udf.manifest import task_times

    def task(partition, ms, attempt=0):
        return {"e": events.TASK, "worker": "h/1", "peak_mb": 1, "partition": partition, "attempt": attempt, "ms": ms}

    records = [task(1, 4000), task(0, 1000), task(1, 2000, attempt=1), task(2, 3000),
               {"e": events.TASK, "worker": "h/1", "peak_mb": 1}, {"e": events.LOAD, "ms": 9000}]
    assert task_times(records) == {"count": 3, "median_s": 2.0, "max_s": 3.0, "max_over_median": 1.5,
                                   "seconds": [1.0, 2.0, 3.0]}  # partition 1: its retry's time
    assert task_times([])["count"] == 0


def long_text(rnd: random.Random, n_chars: int) -> str:
    words = []
    while sum(map(len, words)) + len(words) < n_chars:
        words.append(random_text(rnd, 40))
    return " ".join(words)[:n_chars]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]")
    for k, v in SPARK_CONF.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    rnd = random.Random(5)
    texts = corpus(200, seed=31) + [long_text(rnd, n) for n in LONG] + ["Paris"] * 3 + [None, ""]
    path = tmp_path_factory.mktemp("balance") / "in.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "body": pa.array(texts, pa.string())}),
                   path)
    return path, texts


def prepared(spark, path):
    cfg = load_config(overrides={"input.id_col": "id", "input.text_col": "body"})
    return glue.prepare(spark.read.parquet(str(path)), cfg)


def test_rows_land_where_the_plan_puts_them(spark, corpus_file):
    from pyspark.sql import functions as F

    path, texts = corpus_file
    df = prepared(spark, path)
    buckets = bucket_count(PARTITIONS)
    costs, counted = glue.bucket_costs(df, buckets)
    assert counted == len(texts)  # the scan that measures the costs also counts the rows
    plan = plan_buckets(costs, buckets, PARTITIONS)  # what spread() plans for itself
    planned = partition_loads(costs, plan, PARTITIONS)
    assert max(planned) <= 1.5 * statistics.median(planned), planned

    spread, counted = glue.spread(df, PARTITIONS, "cost")
    assert counted == len(texts)
    assert glue.spread(df, PARTITIONS, "hash")[1] is None  # hash spreading scans nothing: no count
    with pytest.raises(ValueError, match="auto"):
        glue.spread(df, PARTITIONS, "auto")  # resolved before: glue.plan_layout
    cfg = load_config(overrides={"tagging.balance": "auto"})
    assert glue.plan_layout(spark, cfg) == (2, 8, "cost", None)  # local[2]: two task slots, 4 tasks each
    assert spread.columns == df.columns  # no helper column left for the tagger to see
    rows = spread.select("doc_id", F.spark_partition_id().alias("p"),
                         F.pmod(F.xxhash64(glue._TEXT), F.lit(buckets)).alias("b"),
                         F.coalesce(F.octet_length(glue._TEXT), F.lit(0)).alias("n")).collect()
    assert len(rows) == len(texts)
    assert all(plan[r["b"]] == r["p"] for r in rows)  # exactly where planned
    loads = [0] * PARTITIONS
    for r in rows:
        loads[r["p"]] += r["n"]
    assert max(loads) <= 1.5 * statistics.median(loads), loads
    long_ids = set(range(200, 200 + len(LONG)))
    assert len({r["p"] for r in rows if r["doc_id"] in long_ids}) == len(LONG)  # every long one apart
    paris = {r["p"] for r in rows if texts[r["doc_id"]] == "Paris"}
    assert len(paris) == 1  # identical texts meet: the tagger tags them once


def test_partition_keys_use_sparks_own_hash(spark):
    """The keys are found in Python (no Spark job): Spark's hash of an int and its hash
    partitioning must agree with them, for many ints and partition counts."""
    from pyspark.sql import functions as F

    from ner_udf.balance import spark_int_hash

    ints = [-(2 ** 31), -123_456_789, -1, *range(0, 3000), 2 ** 31 - 1]
    df = spark.createDataFrame([(k,) for k in ints], "k int")
    assert {r["k"]: r["h"] for r in df.select("k", F.hash("k").alias("h")).collect()} == \
        {k: spark_int_hash(k) for k in ints}
    for partitions in (1, 3, 8, 200):
        keys = glue.partition_keys(partitions)
        assert len(keys) == partitions
        landed = (spark.createDataFrame([(k, p) for p, k in enumerate(keys)], "k int, p int")
                  .repartition(partitions, "k").select("p", F.spark_partition_id().alias("landed")).collect())
        assert all(r["p"] == r["landed"] for r in landed), (partitions, landed)


def test_cost_spreading_tags_the_same_entities_and_records_task_times(spark, corpus_file, tiny_model_dir,
                                                                       tmp_path):
    from ner_udf import tag_entities

    path, texts = corpus_file
    out = tmp_path / "out"
    assert main(["--input", str(path), "--output", str(out), "--model", str(tiny_model_dir), "--id-col", "id",
                 "--text-col", "body", *SPARK, "--set", f"spark.partitions={PARTITIONS}",
                 "--set", "report.enabled=false"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["tagging"]["balance"] == "auto"  # the default
    assert manifest["spark"]["task_slots"] == 2 and manifest["spark"]["balance"] == "cost"  # local[2]
    tasks = manifest["throughput"]["tasks"]
    assert tasks["count"] == len(tasks["seconds"]) == PARTITIONS, tasks  # no partition is empty: each reports
    assert tasks["max_s"] == max(tasks["seconds"])
    assert tasks["median_s"] == pytest.approx(statistics.median(tasks["seconds"]), abs=1e-3)
    assert tasks["max_over_median"] >= 1

    # hash spreading (through the API, on the same session): the same entities
    entities, _ = tag_entities(spark.read.parquet(str(path)), id_col="id", text_col="body",
                               **{"model.name": str(tiny_model_dir), "spark.partitions": PARTITIONS,
                                  "tagging.balance": "hash"})
    by_hash = {(r["doc_id"], r["label"], r["start"], r["end"], r["entity"]): r["score"] for r in entities.collect()}
    assert len(by_hash) > 100
    assert_same_entities(entity_scores(out), by_hash)

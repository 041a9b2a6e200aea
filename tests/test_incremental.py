"""Scheduled ETL: incremental runs tag only new, changed or previously failed documents; model
identity; provenance columns; the run history; one day of a Hive-partitioned lake."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from ner_udf.cli import main
from test_job import SPARK
from texts import corpus

pytestmark = pytest.mark.spark
TAGGING = ["--aggregation", "first", "--max-length", "48", "--stride", "12"]


def write(path, ids, texts, extra=None):
    cols = {"id": pa.array(ids, pa.int64()),
            "body": pa.array([t if isinstance(t, bytes) else t.encode() for t in texts], pa.binary())}
    cols.update(extra or {})
    pq.write_table(pa.table(cols), path)


def run(inp, out, model, mode="incremental", *extra):
    return main(["--input", str(inp), "--output", str(out), "--model", str(model), "--id-col", "id",
                 "--text-col", "body", "--set", f"output.mode={mode}", *TAGGING, *SPARK, *extra])


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def rows(out, table):
    """The table's rows (entities without their score, compared apart with a tolerance), run_id last."""
    cols = "* exclude (score)" if table == "entities" else "*"
    return duckdb.sql(f"select {cols} from read_parquet('{out}/{table}/**/*.parquet') order by all").fetchall()


def scores(out):
    return {r[:4]: r[4] for r in duckdb.sql(
        f"select doc_id, label, start, \"end\", score from read_parquet('{out}/entities/**/*.parquet')").fetchall()}


@pytest.fixture(scope="module")
def nightly(tiny_model_dir, tmp_path_factory):
    """Four nights over one output: a first run, a rerun, 10% new documents, 5% edited documents;
    and a fresh full run over the final input."""
    tmp = tmp_path_factory.mktemp("nightly")
    out = tmp / "out"
    texts = corpus(220, seed=91)
    v1_ids, v1 = list(range(200)), texts[:200]
    v2_ids, v2 = list(range(220)), texts  # +10% new ids
    edited = list(range(0, 220, 20))  # 11 of 220 (5%): other texts under the same ids
    v3 = [corpus(1, seed=1000 + i)[0] + " Paris" if i in edited else t for i, t in enumerate(texts)]
    write(tmp / "v1.parquet", v1_ids, v1)
    write(tmp / "v2.parquet", v2_ids, v2)
    write(tmp / "v3.parquet", v2_ids, v3)
    nights = []
    for name in ("v1", "v1", "v2", "v3"):
        assert run(tmp / f"{name}.parquet", out, tiny_model_dir) == 0
        nights.append({"manifest": manifest(out), "documents": rows(out, "documents"), "entities": rows(out, "entities")})
    assert run(tmp / "v3.parquet", tmp / "fresh", tiny_model_dir, "overwrite") == 0
    return tmp, out, nights, edited


def test_first_run_tags_everything(nightly):
    _, _, nights, _ = nightly
    assert nights[0]["manifest"]["counts"]["input"] == {"read": 200, "skipped": 0, "tagged": 200, "retried": 0, "null_ids": 0}


def test_a_rerun_tags_nothing_and_changes_nothing(nightly):
    _, _, nights, _ = nightly
    m = nights[1]["manifest"]
    assert m["counts"]["input"] == {"read": 200, "skipped": 200, "tagged": 0, "retried": 0, "null_ids": 0}
    assert m["tagger"].get("windows", 0) == 0 and m["tagger"].get("tokens_fed", 0) == 0
    assert m["model_loads"] == {}  # nothing to tag: no worker loaded the model
    assert nights[1]["documents"] == nights[0]["documents"]  # run_id included: the rows of the first run
    assert nights[1]["entities"] == nights[0]["entities"]
    assert m["counts"]["table"] == {"entities": len(nights[0]["entities"]), "documents": 200}


def test_new_documents_are_tagged_alone(nightly):
    _, _, nights, _ = nightly
    m = nights[2]["manifest"]
    assert m["counts"]["input"] == {"read": 220, "skipped": 200, "tagged": 20, "retried": 0, "null_ids": 0}
    docs = nights[2]["documents"]
    assert sorted(d[0] for d in docs) == list(range(220))  # exactly one row per input id
    run_of = {d[0]: d[-1] for d in docs}
    assert {i for i, r in run_of.items() if r == m["run_id"]} == set(range(200, 220))
    assert {r for i, r in run_of.items() if i < 200} == {nights[0]["manifest"]["run_id"]}


def test_edited_documents_are_retagged_and_their_old_entities_replaced(nightly):
    _, _, nights, edited = nightly
    m = nights[3]["manifest"]
    assert m["counts"]["input"] == {"read": 220, "skipped": 209, "tagged": 11, "retried": 0, "null_ids": 0}
    ents = nights[3]["entities"]
    keys = [(e[0], e[3], e[4]) for e in ents]  # doc_id, start, end
    assert len(keys) == len(set(keys))  # no entity twice
    assert {e[0] for e in ents if e[5] == m["run_id"]} <= set(edited)
    assert all(e[5] == m["run_id"] for e in ents if e[0] in edited)  # no entity of the old texts is left
    before = {e for e in nights[2]["entities"] if e[0] not in edited}
    assert {e for e in ents if e[0] not in edited} == before  # the others untouched


def test_incremental_output_equals_a_fresh_full_run(nightly):
    tmp, out, nights, _ = nightly
    fresh = tmp / "fresh"
    strip = lambda rs: sorted(r[:-1] for r in rs)  # noqa: E731 - every column but run_id
    assert strip(rows(out, "entities")) == strip(rows(fresh, "entities"))
    assert strip(rows(out, "documents")) == strip(rows(fresh, "documents"))
    a, b = scores(out), scores(fresh)
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-4
    assert len(a) > 1000


def test_another_model_identity_is_refused(nightly, tiny_model_dir, capsys):
    tmp, out, nights, _ = nightly
    before = {t: rows(out, t) for t in ("entities", "documents")}, (out / "manifest.json").read_text()
    capsys.readouterr()
    assert run(tmp / "v3.parquet", out, tiny_model_dir, "incremental", "--aggregation", "simple") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "tagging.aggregation: first -> simple" in line and "--set output.mode=overwrite" in line, line
    assert ({t: rows(out, t) for t in ("entities", "documents")}, (out / "manifest.json").read_text()) == before
    assert sorted(p.name for p in out.iterdir()) == ["_report", "_runs", "documents", "entities", "manifest.json"]


def test_run_history(nightly):
    _, out, nights, _ = nightly
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "tag_entities.py"), "runs", str(out)],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    print("\n" + r.stdout)
    assert [ln.split()[1] for ln in lines] == [n["manifest"]["run_id"] for n in nights]
    assert [ln.split()[4] for ln in lines] == ["200", "0", "20", "11"]  # tagged
    assert all(" incremental " in ln and ln.endswith("committed") for ln in lines)
    assert sorted(os.listdir(out / "_runs")) == sorted(f"{n['manifest']['run_id']}.json" for n in nights)
    # the history is never table data
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())  # a failed run stops the session
    for table in ("documents", "entities"):
        n = len(nights[3][table])
        assert spark.read.parquet(str(out / table)).count() == n
        assert pq.read_table(out / table).num_rows == n
        assert duckdb.sql(f"select count(*) from read_parquet('{out}/{table}/**/*.parquet')").fetchall()[0][0] == n


def test_failed_documents_are_retried(tiny_model_dir, tmp_path):
    texts = corpus(40, seed=95) + [b"\xff\xfe invalid"]
    write(tmp_path / "in.parquet", list(range(41)), texts)
    extra = ("--set", "tagging.max_error_fraction=0.05")
    assert run(tmp_path / "in.parquet", tmp_path / "out", tiny_model_dir, "incremental", *extra) == 0
    assert run(tmp_path / "in.parquet", tmp_path / "out", tiny_model_dir, "incremental", *extra) == 0
    m = manifest(tmp_path / "out")
    assert m["counts"]["input"] == {"read": 41, "skipped": 40, "tagged": 1, "retried": 1, "null_ids": 0}
    docs = rows(tmp_path / "out", "documents")
    assert len(docs) == 41 and [d[1] for d in docs if d[0] == 40] == ["error"]


def test_one_day_of_a_lake(tiny_model_dir, tmp_path, capsys):
    texts = corpus(30, seed=97)
    table = pa.table({"id": pa.array(range(30), pa.int64()), "body": texts,
                      "day": ["2026-11-0%d" % (i % 3 + 1) for i in range(30)]})
    pq.write_to_dataset(table, tmp_path / "lake", partition_cols=["day"])
    day2 = [i for i in range(30) if i % 3 == 1]
    common = ["--model", str(tiny_model_dir), "--id-col", "id", "--text-col", "body", *SPARK,
              "--set", "input.passthrough_cols=[day]"]
    assert main(["--input", str(tmp_path / "lake" / "day=2026-11-02"), "--output", str(tmp_path / "a"),
                 "--set", f"input.base_path={tmp_path / 'lake'}", *common]) == 0
    assert main(["--input", str(tmp_path / "lake"), "--output", str(tmp_path / "b"),
                 "--set", "input.where=day = '2026-11-02'", *common]) == 0
    for out in ("a", "b"):
        docs = duckdb.sql(f"select doc_id, day from read_parquet('{tmp_path / out}/documents/**/*.parquet') "
                          "order by doc_id").fetchall()
        assert [(i, str(d)) for i, d in docs] == [(i, "2026-11-02") for i in day2], out  # Spark reads a date
    for inp, setting, needle in (
            ("lake", "input.where=dya = '2026-11-02'", "input.where: got \"dya = '2026-11-02'\""),
            ("lake", "input.where=day = = 1", "input.where: got 'day = = 1'"),
            ("lake/day=2026-11-02", f"input.base_path={tmp_path / 'elsewhere'}", "input.base_path: cannot read Parquet")):
        capsys.readouterr()
        assert main(["--input", str(tmp_path / inp), "--output", str(tmp_path / "c"), "--set", setting, *common]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert needle in line, line
        assert not (tmp_path / "c").exists()

"""The driver killed (``kill -9``) at several moments of a run over an existing output: Spark,
pyarrow and DuckDB read each table whole (the previous run's or the new one's, as the moment
dictates), and the next run repairs what is left and commits output equal to a clean run's. Also:
a second run against an output that a live run is writing exits 2; the dead run's lock is taken over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from ner_udf.cli import main
from test_job import SPARK, write_corpus
from texts import corpus, long_corpus

pytestmark = pytest.mark.slow
A, B = "previous", "new"


def args(inp, out, model):
    return ["--input", str(inp), "--output", str(out), "--model", str(model), "--id-col", "id", "--text-col", "body",
            "--set", "output.mode=overwrite", *SPARK]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    a_texts = corpus(20, seed=71)
    b_texts = corpus(100, seed=72) + long_corpus(20, seed=73)  # long enough to be killed while tagging
    write_corpus(tmp / "a.parquet", list(range(len(a_texts))), a_texts)
    write_corpus(tmp / "b.parquet", list(range(1000, 1000 + len(b_texts))), b_texts)
    assert main(args(tmp / "a.parquet", tmp / "committed-a", tiny_model_dir)) == 0
    assert main(args(tmp / "b.parquet", tmp / "clean-b", tiny_model_dir)) == 0
    return tmp, {A: tables(tmp / "committed-a"), B: tables(tmp / "clean-b")}


def tables(out) -> dict:
    """Each table as every reader sees it: sorted rows (scores rounded), or None if absent."""
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())  # a failed run stops the session
    cols = {"documents": "doc_id, status, n_tokens, n_entities", "entities": "doc_id, label, start, \"end\", entity"}
    seen = {}
    for table, sel in cols.items():
        path = out / table
        if not path.exists():
            seen[table] = None
            continue
        names = [c.strip().strip('"') for c in sel.split(",")]
        by_spark = sorted(tuple(r) for r in spark.read.parquet(str(path)).select(*names).collect())
        pa_table = pq.read_table(path).select(names)
        by_arrow = sorted(zip(*[pa_table.column(n).to_pylist() for n in names]))
        by_duckdb = sorted(duckdb.sql(f"select {sel} from read_parquet('{path}/**/*.parquet')").fetchall())
        assert by_spark == by_arrow == by_duckdb, table
        seen[table] = by_duckdb
    manifest = out / "manifest.json"
    seen["manifest"] = json.loads(manifest.read_text())["config"]["input"]["path"] if manifest.exists() else None
    return seen


def expected(ref, docs, ents, manifest):
    return {"documents": ref[docs]["documents"], "entities": ref[ents]["entities"], "manifest": ref[manifest]["manifest"]}


def start(tmp, out, moment, model):
    ready = tmp / f"ready-{out.name}"
    log = open(tmp / f"driver-{out.name}.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pausing_driver.py"), str(ready), moment, "--",
                             *args(tmp / "b.parquet", out, model)],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    return proc, ready


def wait_for(proc, path_test, what, timeout=300):
    deadline = time.time() + timeout
    while not path_test():
        assert proc.poll() is None, f"driver exited ({proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def kill(proc):
    """kill -9 the driver; then whatever it started (its JVM exits when its stdin closes)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


MOMENTS = [  # moment, what has happened, (documents, entities, manifest) readers must see, journal left?
    ("none", "tagging: entities/ being written to staging", (A, A, A), False),
    ("staging:documents", "entities/ staged, documents/ not written", (A, A, A), False),
    ("before:write_new:_journal.json", "both tables and the manifest staged, commit not begun", (A, A, A), False),
    ("before:exists:entities:2", "documents/ swapped in, entities/ not yet", (B, A, A), True),
    ("before:delete:_journal.json", "every item swapped, journal not yet deleted (the commit point)", (B, B, B), True),
    ("after:delete:_journal.json", "committed, the previous run's items not yet removed", (B, B, B), False),
]


@pytest.mark.parametrize("moment,what,sees,journal", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_driver_killed(setup, tiny_model_dir, capsys, moment, what, sees, journal):
    tmp, ref = setup
    out = tmp / f"out-{MOMENTS.index(next(m for m in MOMENTS if m[0] == moment))}"
    shutil.copytree(tmp / "committed-a", out)
    proc, ready = start(tmp, out, moment, tiny_model_dir)
    try:
        if moment == "none":
            wait_for(proc, lambda: list(out.glob("_staging/*/entities/_temporary")), "Spark writes entities/")
        else:
            wait_for(proc, ready.exists, moment)
        lock = json.loads((out / "_lock.json").read_text())
        if moment == "before:write_new:_journal.json":  # a live run holds the output: a second run is refused
            capsys.readouterr()
            assert main(args(tmp / "b.parquet", out, tiny_model_dir)) == 2
            line = capsys.readouterr().err.strip().splitlines()[-1]
            assert f"run {lock['run_id']} (started {lock['started_at']} on " in line, line
            assert (out / "_staging" / lock["run_id"] / "manifest.json").exists()  # its work is left alone
        kill(proc)
    finally:
        if proc.poll() is None:
            kill(proc)
    with capsys.disabled():
        print(f"\n{moment} ({what}): readers saw documents={sees[0]}, entities={sees[1]}, manifest={sees[2]}")
    assert tables(out) == expected(ref, *sees)
    assert (out / "_journal.json").exists() == journal

    capsys.readouterr()
    assert main(args(tmp / "b.parquet", out, tiny_model_dir)) == 0  # the next run repairs, then commits
    err = capsys.readouterr().err
    assert f"took over the lock of run {lock['run_id']}" in err and f"its process {proc.pid} is gone" in err, err
    assert (f"undid the interrupted commit of run {lock['run_id']}" in err) == journal, err
    assert tables(out) == expected(ref, B, B, B)
    assert sorted(p.name for p in out.iterdir()) == ["_report", "_runs", "documents", "entities", "manifest.json"]
    runs = sorted(p.name for p in (out / "_runs").iterdir())  # the crashed run is in the history once committed
    assert (f"{lock['run_id']}.json" in runs) == (sees == (B, B, B) and not journal), runs

"""The output store's commit protocol, lock and recovery, on both file-system implementations.

Every file-system call a run makes is failed in turn (a wrapper around the store's file system);
after each failure Spark, pyarrow and DuckDB must read the previous run complete, or the new run
complete, exactly as the exit status says, and the next run must commit cleanly."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ner_udf.errors import UserError
from ner_udf.fs import HadoopFS, LocalFS
from ner_udf.store import JOURNAL, LOCK, OutputStore

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())


class Faulty:
    """The store's file system, with the call numbered ``fail_at`` (1-based) raising OSError."""

    PURE = ("join", "uri")  # path arithmetic, no I/O

    def __init__(self, fs, fail_at: int | None = None):
        self.fs, self.fail_at, self.calls = fs, fail_at, []

    def __getattr__(self, name):
        attr = getattr(self.fs, name)
        if name in self.PURE:
            return attr

        def call(*args):
            paths = args[:2] if name in ("rename", "exchange") else args[:1]
            self.calls.append((name, *[os.path.basename(str(a).rstrip("/")) for a in paths]))
            if len(self.calls) == self.fail_at:
                raise OSError(f"injected failure of call {self.fail_at}: {name}")
            return attr(*args)

        return call


def run_tables(n: int, tag: str) -> dict[str, pa.Table]:
    ids = list(range(n))
    return {
        "documents": pa.table({"doc_id": ids, "status": ["ok"] * n, "run": [tag] * n}),
        "entities": pa.table({"doc_id": ids * 2, "entity": [f"{tag}{i}" for i in ids * 2], "run": [tag] * 2 * n}),
    }


def do_run(fs, root, tag, n, mode="overwrite", timeout=3600.0, warnings=None):
    """One run of the store as the job drives it; the tables are written with pyarrow."""
    store = OutputStore(fs, root, f"run-{tag}", "2026-11-30T00:00:00+00:00", mode=mode, lock_timeout_s=timeout,
                        warn=(warnings.append if warnings is not None else lambda m: None))
    with store.open():
        for name, table in run_tables(n, tag).items():
            path = urlparse(store.staging(name)).path
            os.makedirs(path, exist_ok=True)
            pq.write_table(table, os.path.join(path, "part-0.parquet"))
        store.commit(json.dumps({"run_id": f"run-{tag}", "tag": tag}))


def readers(spark, root) -> dict:
    """What Spark, pyarrow and DuckDB read: for each table the set of run tags and the row count."""
    seen = {}
    for table in ("documents", "entities"):
        path = os.path.join(root, table)
        if not os.path.exists(path):
            seen[table] = {"spark": None, "pyarrow": None, "duckdb": None}
            continue
        rows_spark = [(r["run"],) for r in spark.read.parquet(path).select("run").collect()]
        rows_pa = [(r,) for r in pq.read_table(path).column("run").to_pylist()]
        rows_db = duckdb.sql(f"select run from read_parquet('{path}/**/*.parquet')").fetchall()
        seen[table] = {k: (sorted({r[0] for r in rows}), len(rows))
                       for k, rows in (("spark", rows_spark), ("pyarrow", rows_pa), ("duckdb", rows_db))}
    manifest = os.path.join(root, "manifest.json")
    seen["manifest"] = json.load(open(manifest))["tag"] if os.path.exists(manifest) else None
    return seen


def expect(tag, n) -> dict:
    t = {"documents": ([tag], n), "entities": ([tag], 2 * n)}
    return {**{k: {r: v for r in ("spark", "pyarrow", "duckdb")} for k, v in t.items()}, "manifest": tag}


def backends(spark):
    return {"local": LocalFS(), "hadoop": HadoopFS(spark, "file:///")}


def visible(root) -> list[str]:
    return sorted(n for n in os.listdir(root) if not n.startswith("."))  # Hadoop's local FS adds .crc files


@pytest.mark.parametrize("backend", ["local", "hadoop"])
def test_every_failing_call_leaves_a_whole_run(spark, tmp_path, backend):
    fs = backends(spark)[backend]
    probe_root = str(tmp_path / "probe")
    do_run(fs, probe_root, "A", 3)
    probe = Faulty(fs)
    do_run(probe, probe_root, "B", 4)  # the calls of a run that replaces an earlier one
    calls = probe.calls
    moved = [c for c in calls if c[0] == "rename" and c[1] == "documents"]  # moved aside, then the new one in
    assert len(moved) == (0 if backend == "local" else 2), calls  # local disks exchange atomically instead
    outcomes = []
    for k, call in enumerate(calls, start=1):
        root = str(tmp_path / f"k{k}")
        do_run(fs, root, "A", 3)
        try:
            do_run(Faulty(fs, fail_at=k), root, "B", 4)
            failed = False
        except (OSError, UserError) as exc:
            assert "injected failure" in str(exc), exc
            failed = True
        assert readers(spark, root) == (expect("A", 3) if failed else expect("B", 4)), (k, call)
        outcomes.append((k, call, "previous" if failed else "new"))
        warnings: list[str] = []
        do_run(fs, root, "C", 5, warnings=warnings)  # the next run repairs what is left and commits
        assert readers(spark, root) == expect("C", 5), (k, call)
        assert visible(root) == ["_runs", "documents", "entities", "manifest.json"], (k, call, os.listdir(root))
        runs = {"run-A.json", "run-C.json"} | (set() if failed else {"run-B.json"})  # a failed run leaves no record
        assert set(visible(os.path.join(root, "_runs"))) == runs, (k, call)
    print(f"\n{backend}: each of {len(calls)} calls failed in turn; what readers saw:")
    for k, call, outcome in outcomes:
        print(f"  {k:2d} {' '.join(call):50s} -> {outcome} run")
    # the commit point is the journal's deletion: a failure up to it keeps the previous run, after it the new one
    point = next(k for k, call, _ in outcomes if call[:2] == ("delete", JOURNAL))
    assert [o for k, _, o in outcomes if k <= point] == ["previous"] * point
    assert [o for k, _, o in outcomes if k > point] == ["new"] * (len(calls) - point)
    assert len(calls) - point >= 3  # cleanup and lock release come after the commit point


def test_recovery_undoes_a_commit_interrupted_between_tables(spark, tmp_path):
    """A crash (simulated: the process state is dropped, the files stay) after documents/ was
    swapped in: readers see each table whole; the next run puts the previous documents/ back
    first, then commits."""
    fs = LocalFS()
    root = str(tmp_path / "out")
    do_run(fs, root, "A", 3)

    class Crash(BaseException):
        pass

    class Stop(Faulty):
        def __getattr__(self, name):
            if name == "exists" and any(c[:2] == ("exchange", "documents") for c in self.calls):
                raise Crash()
            return super().__getattr__(name)

    store = OutputStore(Stop(fs), root, "run-B", "t", mode="overwrite", lock_timeout_s=3600)
    store.open()
    for name, table in run_tables(4, "B").items():
        path = urlparse(store.staging(name)).path
        os.makedirs(path)
        pq.write_table(table, os.path.join(path, "part-0.parquet"))
    with pytest.raises(Crash):
        store.commit(json.dumps({"run_id": "run-B", "tag": "B"}))
    seen = readers(spark, root)
    assert seen["documents"] == expect("B", 4)["documents"]  # swapped in before the crash
    assert seen["entities"] == expect("A", 3)["entities"]
    assert seen["manifest"] == "A"
    assert os.path.exists(os.path.join(root, JOURNAL))
    os.unlink(os.path.join(root, LOCK))  # the crashed process is gone
    warnings: list[str] = []
    store = OutputStore(fs, root, "run-C", "t", mode="overwrite", lock_timeout_s=3600, warn=warnings.append)
    store.open()
    assert readers(spark, root) == expect("A", 3)  # undone before anything else
    assert any("undid the interrupted commit of run run-B" in w for w in warnings), warnings
    store.close()


def write_lock(root, **record):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LOCK), "w") as fh:
        json.dump(record, fh)


def test_a_live_lock_refuses_a_second_run(tmp_path):
    fs, root = LocalFS(), str(tmp_path / "out")
    first = OutputStore(fs, root, "run-1", "2026-11-30T01:02:03+00:00", mode="overwrite", lock_timeout_s=60).open()
    with pytest.raises(UserError) as err:
        OutputStore(fs, root, "run-2", "t", mode="overwrite", lock_timeout_s=60).open()
    assert "run run-1 (started 2026-11-30T01:02:03+00:00" in str(err.value)
    first.close()
    assert not os.path.exists(os.path.join(root, LOCK))
    OutputStore(fs, root, "run-3", "t", mode="overwrite", lock_timeout_s=60).open().close()


def test_a_lock_from_another_machine_is_live_until_its_heartbeat_stops(tmp_path):
    fs, root = LocalFS(), str(tmp_path / "out")
    write_lock(root, run_id="run-old", started_at="2026-11-29T23:00:00+00:00", host="elsewhere", boot_id="x", pid=1)
    with pytest.raises(UserError, match="run run-old .* is writing"):
        OutputStore(fs, root, "run-new", "t", mode="overwrite", lock_timeout_s=60).open()
    old = time.time() - 61
    os.utime(os.path.join(root, LOCK), (old, old))
    warnings: list[str] = []
    store = OutputStore(fs, root, "run-new", "t", mode="overwrite", lock_timeout_s=60, warn=warnings.append).open()
    assert json.load(open(os.path.join(root, LOCK)))["run_id"] == "run-new"
    assert len(warnings) == 1 and "took over the lock of run run-old" in warnings[0] and "heartbeat stopped" in warnings[0]
    store.close()


def test_a_lock_whose_process_is_gone_is_taken_over_at_once(tmp_path):
    import socket
    import subprocess

    from ner_udf.store import _boot_id

    fs, root = LocalFS(), str(tmp_path / "out")
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_lock(root, run_id="run-dead", started_at="t", host=socket.gethostname(), boot_id=_boot_id(), pid=gone.pid)
    warnings: list[str] = []
    OutputStore(fs, root, "run-new", "t", mode="overwrite", lock_timeout_s=3600, warn=warnings.append).open().close()
    assert any(f"its process {gone.pid} is gone" in w for w in warnings), warnings


def test_the_heartbeat_keeps_a_long_run_locked(tmp_path):
    fs, root = LocalFS(), str(tmp_path / "out")
    store = OutputStore(fs, root, "run-long", "t", mode="overwrite", lock_timeout_s=6).open()  # a beat every 1 s
    lock = os.path.join(root, LOCK)
    old = time.time() - 5
    os.utime(lock, (old, old))
    time.sleep(2.5)
    assert time.time() - os.stat(lock).st_mtime < 2
    with pytest.raises(UserError, match="run run-long"):
        OutputStore(fs, root, "run-other", "t", mode="overwrite", lock_timeout_s=6).open()
    store.close()


def test_error_mode_refuses_an_existing_output(tmp_path):
    fs, root = LocalFS(), str(tmp_path / "out")
    do_run(fs, root, "A", 2)
    with pytest.raises(UserError, match="already holds entities, documents, manifest.json"):
        do_run(fs, root, "B", 2, mode="error")
    assert not os.path.exists(os.path.join(root, LOCK))


@pytest.mark.parametrize("backend", ["local", "hadoop"])
def test_put_dir_copies_a_local_folder(spark, tmp_path, backend):
    """How the run report reaches the output, on both file systems."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_text("<p>report</p>")
    (src / "chart.png").write_bytes(b"\x89PNG\r\n")
    fs = LocalFS() if backend == "local" else HadoopFS(spark, str(tmp_path))
    dest = str(tmp_path / "out" / "_report")
    fs.mkdirs(str(tmp_path / "out"))
    fs.put_dir(str(src), dest)
    assert sorted(p.name for p in (tmp_path / "out" / "_report").iterdir() if not p.name.endswith(".crc")) == [
        "chart.png", "index.html"]
    assert (tmp_path / "out" / "_report" / "chart.png").read_bytes() == b"\x89PNG\r\n"

#!/usr/bin/env python
"""Where the job's fixed cost goes: the driver's phases of one run, against a bare Spark session.

    .venv/bin/python benchmarks/investigations/fixed_cost.py [--precision bf16] [--repeats 2] [--docs 300]

``make bench`` times each variant as a fresh process's wall clock, so what the job pays once
(session, input checks, cost balance, counts, commit) counts against it as much as tagging does.
Each round runs, in turn:

- ``bare``: a fresh process that starts a Spark session as the peers do (same master and conf),
  reads the corpus and counts it: what every Spark recipe pays, the peers included;
- ``job``: ``jobs/tag_entities.py`` exactly as ``benchmarks/run.py`` runs it (``job_command``),
  in a fresh process with the driver's steps wrapped in timers (the session, the model check,
  the input read and its footer check, the cost balance, the first write, which tags, the counts,
  the commit), so that each driver phase is start -> end seconds from the process's start.

Medians of ``--repeats`` interleaved rounds; nothing is published (the document that cites the
figures gives the date and commit).

Figures of 2026-12-03 (commit 57068fa, a 2-core Intel Xeon with AMX, idle, ``--precision bf16
--repeats 2``, the bench's 300 documents): this directory's README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# the driver steps timed in the job's process: (module, attribute, label)
WRAPPED = [
    ("ner_udf.spark", "get_session", "session"),
    ("ner_udf.spark", "ship_package", "ship_package"),
    ("ner_udf.job", "check_model", "model_check"),
    ("ner_udf.spark", "read_input", "read_input (schema, footer check, prepare)"),
    ("ner_udf.job", "tag_prepared", "tag_prepared (cost balance)"),
    ("pyspark.sql.readwriter", "DataFrameWriter.parquet", "write (the first one tags)"),
    ("ner_udf.spark", "summarize", "summarize"),
    ("pyspark.sql.classic.dataframe", "DataFrame.count", "count"),  # pyspark 4's DataFrame
    ("ner_udf.store", "OutputStore.commit", "commit"),
]

CHILD = r"""
import functools, importlib, json, sys, time
T0 = time.perf_counter()
events = []
def wrap(owner, name, label):
    f = getattr(owner, name)
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            events.append((label, round(t - T0, 2), round(time.perf_counter() - T0, 2)))
    setattr(owner, name, g)
for mod, attr, label in {wrapped!r}:
    owner = importlib.import_module(mod)
    *outer, name = attr.split(".")
    for o in outer:
        owner = getattr(owner, o)
    wrap(owner, name, label)
from ner_udf.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    print("BENCH_RESULT " + json.dumps({{"events": events, "end": round(time.perf_counter() - T0, 2)}}), flush=True)
sys.exit(rc)
"""

BARE = r"""
import json, sys, time
T0 = time.perf_counter()
from pyspark.sql import SparkSession
b = SparkSession.builder.master({master!r})
for k, v in {conf!r}.items():
    b = b.config(k, v)
s = b.getOrCreate(); t1 = time.perf_counter()
df = s.read.parquet({corpus!r}); t2 = time.perf_counter()
df.count(); t3 = time.perf_counter()
print("BENCH_RESULT " + json.dumps({{"session": round(t1 - T0, 2), "read_schema": round(t2 - t1, 2),
                                  "first_count": round(t3 - t2, 2)}}), flush=True)
"""


def main(argv=None) -> int:
    from benchmarks import benchlib as bl
    from benchmarks import run as bench_run
    from benchmarks.benchlib import BENCH_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", default="bf16", help="model.precision of the job (default bf16: quicker rounds)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", default=str(BENCH_DIR / "fixed_cost.json"))
    a = ap.parse_args(argv)

    # the bench's own settings, environment and process handling (log, timeout, process-group kill)
    b = bench_run.Bench(bench_run.parse_args(["--docs", str(a.docs), "--seed", str(a.seed), "--master", a.master,
                                              "--precisions", a.precision, "--backends", ""]))
    model_dir = bl.build_model(bl.default_model_dir(12), layers=12)
    corpus = bl.write_corpus(bl.corpus_docs(a.docs, a.seed), BENCH_DIR / f"corpus-{a.docs}-s{a.seed}", n_files=8)
    out_path = BENCH_DIR / "out" / "fixed_cost"
    job_args = bench_run.job_command(corpus, out_path, model_dir,
                                     b.job_sets({"model.precision": a.precision}))[2:]  # after python, the script
    bare_code = BARE.format(master=a.master, conf=b.spark_conf, corpus=str(corpus))
    job_code = CHILD.format(wrapped=WRAPPED)
    rounds = []
    for rep in range(a.repeats):
        bare_out = b.process("fixed_cost_bare", [sys.executable, "-c", bare_code], "BENCH_RESULT ")
        job_out = b.process("fixed_cost_job", [sys.executable, "-c", job_code, *job_args], "BENCH_RESULT ")
        wall_b, bare, wall_j, job = bare_out["wall_s"], bare_out["result"], job_out["wall_s"], job_out["result"]
        manifest = json.loads((out_path / "manifest.json").read_text())
        tasks = manifest["throughput"].get("tasks", {})
        rounds.append({"bare": {"wall_s": round(wall_b, 2), **bare},
                       "job": {"wall_s": round(wall_j, 2), "events": job["events"], "tasks_s": tasks.get("seconds"),
                               "model_load_s": manifest["throughput"].get("model_load_s")}})
        print(f"round {rep + 1}: bare {wall_b:.1f} s {bare}; job {wall_j:.1f} s, tasks {tasks.get('seconds')}")
        for label, start, end in job["events"]:
            print(f"    {label:45s} {start:7.2f} -> {end:7.2f}  ({end - start:6.2f} s)")

    def med(values):
        return round(statistics.median(values), 2)

    summary = {"bare": {k: med([r["bare"][k] for r in rounds]) for k in rounds[0]["bare"]},
               "job_wall_s": med([r["job"]["wall_s"] for r in rounds]),
               "job_tasks_sum_s": med([sum(r["job"]["tasks_s"] or [0]) for r in rounds]),
               "job_phase_s": {}}
    for label in dict.fromkeys(e[0] for e in rounds[0]["job"]["events"]):
        summary["job_phase_s"][label] = med([sum(e[2] - e[1] for e in r["job"]["events"] if e[0] == label)
                                             for r in rounds])
    print("medians:", json.dumps(summary, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "commit": bl.git_commit()[0], "rounds": rounds,
                                       "summary": summary}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Where the job's CPU time goes: py-spy samples every Python process of one job run.

    .venv/bin/python benchmarks/investigations/profile_job.py [--docs 1000] [--precision fp32] [--rate 20]

Runs the job exactly as ``benchmarks/run.py`` does (``local[2]``, ``spark.task.cpus=2``, the
mBERT-shaped benchmark model and corpus, which run.py builds) under ``py-spy record
--subprocesses`` (installed into the venv if missing; needs ptrace, e.g. root or
``kernel.yama.ptrace_scope=0``). Idle samples (threads waiting on a socket) are left out, so the
shares are of CPU time. Each sample of the Python worker counts for the first category of
interest found in its stack (forward pass, tokenization, aggregation, padding, Arrow/pandas conversion, ...).
Writes the raw collapsed stacks under .cache/bench/profile/ and the summary to
benchmarks/investigations/PROFILE.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import benchlib as bl  # noqa: E402
from benchmarks.benchlib import BENCH_DIR, ROOT, log  # noqa: E402
from benchmarks.run import SPARK_CONF, job_command  # noqa: E402

# (category, function name or None, file path part), by priority: a sample counts for the first
# category one of whose frames it has anywhere in its stack (the worker loop and the Arrow
# serializer wrap every sample, so they come last). py-spy writes a frame as "qualified.name
# (path:line)"; the path is wherever the module was imported from.
CATEGORIES = [
    ("model load (imports, weights)", "load_model", "ner_udf/model.py"),
    ("model forward (torch)", "forward", "ner_udf/model.py"),
    ("tokenization (windows)", None, "ner_udf/windows.py"),
    ("padding", "pad", "ner_udf/batching.py"),
    ("batch planning", "plan_batches", "ner_udf/batching.py"),
    ("aggregation", None, "ner_udf/aggregation.py"),
    ("tagger bookkeeping", None, "ner_udf/tagger.py"),
    ("decode + output rows (pandas)", "_tag_frame", "ner_udf/spark.py"),
    ("Arrow/pandas (de)serialization", None, "pyspark/sql/pandas/"),
    ("Spark worker loop", None, "pyspark/"),
]


def _frame_matches(frame: str, func: str | None, path: str) -> bool:
    name, _, where = frame.partition(" (")
    return path in where and (func is None or name == func or name.endswith("." + func))


def categorize(stack: list[str]) -> str:
    for name, func, path in CATEGORIES:
        if any(_frame_matches(frame, func, path) for frame in stack):
            return name
    return "other (interpreter start, imports)"


def summarize(raw: Path) -> dict:
    """Collapsed stacks -> samples per process kind and per category of the Python worker."""
    procs: collections.Counter = collections.Counter()
    worker: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack_s, _, count_s = line.rpartition(" ")
        if not stack_s or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack_s.split(";")
        root = frames[0]
        kind = ("python worker" if ("pyspark.daemon" in root or "pyspark/daemon" in root
                                    or "pyspark.worker" in root or "daemon.py" in stack_s)
                else "driver (jobs/tag_entities.py)" if "tag_entities" in root else "other")
        procs[kind] += count
        if kind == "python worker":
            worker[categorize(frames)] += count
    return {"processes": dict(procs), "worker": dict(worker)}


def render(s: dict, args, seconds: float, manifest: dict) -> str:
    total = sum(s["worker"].values()) or 1
    lines = ["# Profile of the job's Python worker", "",
             f"`benchmarks/investigations/profile_job.py --docs {args.docs} --precision {args.precision} --rate {args.rate}`: "
             f"py-spy {args.rate} samples/s of every Python process of one job run "
             f"(`local[2]`, `spark.task.cpus=2`, the benchmark's mBERT-shaped model), idle threads excluded, "
             f"so the shares are of CPU time. Wall {seconds:.1f} s; the job's own clock "
             f"{manifest['throughput']['seconds']} s; tagger timings from the manifest: "
             f"`{json.dumps(manifest.get('tagger', {}))}`; Spark phases: "
             f"`{json.dumps(manifest['throughput'].get('phases', {}))}`.", "",
             "| Python worker: what the sample was doing | samples | share |", "|---|---:|---:|"]
    for name, n in sorted(s["worker"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {n} | {n / total:.1%} |")
    never = [name for name, _, _ in CATEGORIES if name not in s["worker"]]
    if never:
        lines += ["", f"Never sampled (under 1/{args.rate} s in all): " + ", ".join(never) + "."]
    lines += ["", "Samples per process: " + ", ".join(f"{k} {v}" for k, v in sorted(s["processes"].items())) + ".",
              "The JVM (reading Parquet, shuffles, writing) is not a Python process and is not sampled here.", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    p.add_argument("--rate", type=int, default=20, help="samples per second")
    args = p.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not spy:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    model = bl.default_model_dir()
    if not bl.model_is_built(model):
        raise SystemExit("profile_job.py: build the benchmark model first: .venv/bin/python benchmarks/run.py "
                         "--only roofline_fp32 (or make bench)")
    corpus = bl.write_corpus(bl.corpus_docs(args.docs), BENCH_DIR / f"corpus-{args.docs}-s0", n_files=8)
    out_dir = BENCH_DIR / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"job-{args.precision}-{args.docs}.txt"
    job_out = out_dir / "out"
    conf = {**SPARK_CONF, "spark.task.cpus": "2"}
    sets = {"model.precision": args.precision, "model.device": "cpu", "spark.master": "local[2]",
            "spark.conf": json.dumps(conf), "input.passthrough_cols": "[]", "output.partition_by": "[]",
            "output.mode": "overwrite"}
    cmd = [spy, "record", "--subprocesses", "--format", "raw", "--rate", str(args.rate), "-o", str(raw), "--",
           *job_command(corpus, job_out, model, sets)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log(f"profiling the job on {args.docs} docs at {args.precision} -> {raw}")
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    manifest = json.loads((job_out / "manifest.json").read_text())
    md = render(summarize(raw), args, seconds, manifest)
    (ROOT / "benchmarks" / "PROFILE.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

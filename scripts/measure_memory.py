"""Measure the memory of Spark's Python workers while the job runs (PSS and RSS from /proc).

    python scripts/measure_memory.py --model DIR --input PARQUET [--task-cpus 1|2] [--cores 2] [--repeat 10]

Runs jobs/tag_entities.py with spark-submit on local-cluster[1,CORES,...] (one executor with CORES
cores, like one cluster node), samples every Python worker process (pyspark.daemon and its forked
workers) every 0.2 s, and prints one JSON line: peak total PSS of the workers (the memory they really
cost together: shared pages are split between sharers), peak per-worker RSS, the number of workers
and model loads. ``--repeat N`` tags the corpus N times over (distinct texts: each copy gets a
suffix) to show that memory does not grow with corpus size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def _workers() -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read()
            except OSError:
                continue
            if b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
                pids.append(int(d))
    return pids


def _mem_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class Sampler(threading.Thread):
    """Peak total PSS and peak single-process RSS of all Python workers, sampled every ``period`` s."""

    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True)
        self.period = period
        self.stop = threading.Event()
        self.peak_pss_kb = self.peak_rss_kb = self.max_workers = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pids = _workers()
            mems = [_mem_kb(p) for p in pids]
            self.peak_pss_kb = max(self.peak_pss_kb, sum(p for _, p in mems))
            self.peak_rss_kb = max(self.peak_rss_kb, max((r for r, _ in mems), default=0))
            self.max_workers = max(self.max_workers, sum(1 for r, _ in mems if r > 600_000))
            self.stop.wait(self.period)


def repeat_corpus(src: str, times: int, dst: Path, text_col: str = "text", id_col: str = "doc_id") -> Path:
    table = pq.read_table(src, columns=[id_col, text_col])
    texts = table.column(text_col).to_pylist()
    out_ids, out_texts = [], []
    for k in range(times):
        for i, t in enumerate(texts):
            out_ids.append(k * len(texts) + i)
            out_texts.append(None if t is None else (t if k == 0 else f"{t} ({k})"))
    pq.write_table(pa.table({id_col: pa.array(out_ids, pa.int64()), text_col: out_texts}), dst)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", default=str(ROOT / "data" / "sample" / "corpus.parquet"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--task-cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ner-mem-"))
    inp = repeat_corpus(args.input, args.repeat, tmp / "in.parquet") if args.repeat > 1 else Path(args.input)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", f"local-cluster[1,{args.cores},6144]",
           "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.showConsoleProgress=false",
           "--conf", f"spark.task.cpus={args.task_cpus}", "--conf", "spark.executor.memory=2g",
           str(ROOT / "jobs" / "tag_entities.py"), "--input", str(inp), "--output", str(tmp / "out"),
           "--model", args.model, "--set", "model.device=cpu", "--set", f"model.precision={args.precision}",
           *[x for s in args.sets for x in ("--set", s)]]
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return r.returncode
    m = json.loads((tmp / "out" / "manifest.json").read_text())
    print(json.dumps({
        "cores": args.cores, "task_cpus": args.task_cpus, "repeat": args.repeat, "precision": args.precision,
        "documents": m["counts"]["documents"]["total"], "tokens": m["counts"]["tokens"],
        "seconds": round(seconds, 1), "job_seconds": m["throughput"]["seconds"],
        "peak_workers_pss_mb": round(sampler.peak_pss_kb / 1024), "peak_worker_rss_mb": round(sampler.peak_rss_kb / 1024),
        "workers_holding_a_model": sampler.max_workers, "model_loads": m["model_loads_per_worker"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

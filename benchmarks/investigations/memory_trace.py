"""Per-batch memory trace of the tagging path, without Spark: where a CPU worker's peak comes from.

Runs the job's own pieces (``ner_udf.model.load_model`` with its memory releaser, ``Tagger``) over
a Parquet corpus in pandas batches of ``--rows`` rows (their Python strings made per batch and
dropped after it), as a Spark Python worker does, and records
after every forward pass: the batch shape, the process's resident set (``/proc/self/statm``) and its
kernel high-water mark (``VmHWM``, exact: no sampling). Writes a JSON trace and prints where the
high-water mark was reached, e.g. after 10% of the documents versus at the end.

    .venv/bin/python benchmarks/investigations/memory_trace.py --corpus .cache/bench/corpus-10000-s0 \\
        --precision bf16 --rows 2048 --out /tmp/trace.json

(``make bench`` writes ``.cache/bench/corpus-{1000,10000}-s0``; a 30,000-document corpus:
``benchlib.write_corpus(benchlib.corpus_docs(30000, 0), BENCH_DIR / "corpus-30000-s0")``.)
The trace's rows: pandas-batch start (documents done), batch rows and length, RSS before and after
the forward pass (after the memory releaser), and VmHWM after it (KB).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def status_kb(field: str) -> int:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(field.encode() + b":"):
                return int(line.split()[1])
    return 0


def rss_kb() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="Parquet file or directory with a 'text' column")
    p.add_argument("--model", default=str(ROOT / ".cache" / "bench" / "mbert-random"))
    p.add_argument("--precision", default="bf16")
    p.add_argument("--rows", type=int, default=2048, help="rows per pandas batch (spark.arrow_batch_rows)")
    p.add_argument("--docs", type=int, default=None, help="only the first N documents")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model.* or tagging.* override, e.g. model.release_memory_mb=64")
    p.add_argument("--out", default=None, help="write the trace here (JSON)")
    a = p.parse_args(argv)

    import pyarrow.parquet as pq

    from ner_udf import model as model_mod
    from ner_udf.config import load_config
    from ner_udf.tagger import Tagger

    column = pq.read_table(a.corpus, columns=["text"]).column("text")
    if a.docs:
        column = column.slice(0, a.docs)
    n = len(column)
    cfg = load_config(overrides={"model.name": a.model, "model.precision": a.precision, "model.threads": a.threads,
                                 "tagging.aggregation": "simple"}, sets=a.set)  # --set as ner-tag parses it
    t0 = time.perf_counter()
    start_rss_kb = rss_kb()
    loaded = model_mod.load_model(cfg.model)
    # load_model reads the load's peak (VmHWM) and resets the mark, as in the job; where it could
    # not, reset here so that VmHWM is the tagging peak from now on
    after_load = {"rss_kb": rss_kb(), "hwm_kb": (loaded.load_peak_rss_mb or 0) * 1024,
                  "s": round(time.perf_counter() - t0, 2)}
    reset = loaded.peak_reset or model_mod.peak_rss_mb(reset=True)[1]
    trace, state = [], {"docs": 0}
    inner = loaded.forward

    def forward(ids, mask):
        before = rss_kb()
        out = inner(ids, mask)
        trace.append({"docs": state["docs"], "rows": int(ids.shape[0]), "len": int(ids.shape[1]),
                      "rss_before_kb": before, "rss_after_kb": rss_kb(), "hwm_kb": status_kb("VmHWM")})
        return out

    tagger = Tagger.from_loaded(dataclasses.replace(loaded, forward=forward), cfg.tagging)
    per_batch = []
    for i in range(0, n, a.rows):
        # Python strings made per batch and dropped after it, as a Spark worker gets them from Arrow:
        # holding every text for the whole run would add each new text's UTF-8 copy, which CPython
        # caches inside a str once the Rust tokenizer has read it (see text_creep.py --hold-texts)
        texts = column.slice(i, a.rows).to_pylist()
        tagger.tag(texts)
        del texts
        state["docs"] = min(i + a.rows, n)
        per_batch.append({"docs": state["docs"], "rss_kb": rss_kb(), "hwm_kb": status_kb("VmHWM")})
    seconds = time.perf_counter() - t0

    def hwm_at(frac):
        pts = [t["hwm_kb"] for t in trace if t["docs"] < frac * n]
        return round(max(pts) / 1024, 1) if pts else None

    summary = {"docs": n, "rows": a.rows, "precision": a.precision, "overrides": a.set, "seconds": round(seconds, 1),
               "tokens": tagger.stats.tokens, "batches": tagger.stats.batches,
               "start_rss_mb": round(start_rss_kb / 1024, 1), "after_load_rss_mb": round(after_load["rss_kb"] / 1024, 1),
               "load_peak_mb": round(after_load["hwm_kb"] / 1024, 1), "hwm_reset_after_load": reset,
               "hwm_mb_at": {f"{int(f * 100)}%": hwm_at(f) for f in (0.1, 0.25, 0.5, 0.75, 1.0001)},
               "final_hwm_mb": round(status_kb("VmHWM") / 1024, 1),
               "max_rss_after_forward_mb": round(max(t["rss_after_kb"] for t in trace) / 1024, 1),
               "max_rss_before_forward_mb": round(max(t["rss_before_kb"] for t in trace) / 1024, 1)}
    print(json.dumps(summary, indent=1))
    if a.out:
        cols = ["docs", "rows", "len", "rss_before_kb", "rss_after_kb", "hwm_kb"]
        Path(a.out).write_text(json.dumps({"summary": summary, "command": " ".join(sys.argv), "per_batch": per_batch,
                                           "trace_columns": cols, "trace": [[t[c] for c in cols] for t in trace]},
                                          separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

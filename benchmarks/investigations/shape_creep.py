"""Does the model path keep memory per new batch shape? Forward passes only, trimmed after each.

Replays the batch shapes of a ``memory_trace.py`` trace (random token ids, full attention mask)
through ``ner_udf.model.load_model``'s forward, calls ``malloc_trim(0)`` after every pass and
prints the resident set every 10 passes. With ``--cycle N`` it repeats the first N shapes instead
of walking through new ones, which separates per-shape growth from growth per pass. With
``--random-lengths`` it runs 2-row batches of random lengths (16-512) instead of the trace's shapes:
the row count does not matter, the length does (PyTorch's CPU flash attention keeps JIT kernels per
length at bf16, never freed; ``model.length_multiple`` pads lengths to a multiple of 16 there).

    .venv/bin/python benchmarks/investigations/shape_creep.py --trace TRACE.json \\
        --precision bf16 --batches 160 [--cycle 20] [--round-len 8]
    .venv/bin/python benchmarks/investigations/shape_creep.py --random-lengths --batches 300 --round-len 16
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from memory_trace import rss_kb  # noqa: E402  (benchmarks/ is on the path when run as a script)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default=None, help="a memory_trace.py trace (the one of docs/MEMORY.md: benchmarks/memory_trace_30k_before.json at commit 25561f7951)")
    p.add_argument("--model", default=str(ROOT / ".cache" / "bench" / "mbert-random"))
    p.add_argument("--precision", default="bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=160)
    p.add_argument("--cycle", type=int, default=0, help="repeat the first N shapes instead of new ones")
    p.add_argument("--round-len", type=int, default=1, help="pad each batch's length up to a multiple of this")
    p.add_argument("--random-lengths", action="store_true", help="2-row batches of random lengths 16-512 (seed 1)")
    a = p.parse_args(argv)

    from ner_udf import model as model_mod
    from ner_udf.batching import round_up
    from ner_udf.config import ModelConfig

    d = json.loads(Path(a.trace).read_text())
    cols = d["trace_columns"]
    m = a.round_len
    shapes = [(row[cols.index("rows")], round_up(row[cols.index("len")], m)) for row in d["trace"]]
    if a.random_lengths:
        shapes = [(2, round_up(int(n), m, 512)) for n in np.random.default_rng(1).integers(16, 513, a.batches)]
    if a.cycle:
        shapes = shapes[: a.cycle] * (a.batches // a.cycle + 1)
    shapes = shapes[: a.batches]
    # length_multiple=1: the padding is this script's --round-len, not the model's default
    loaded = model_mod.load_model(ModelConfig(name=a.model, precision=a.precision, threads=a.threads,
                                              release_memory_mb=None, length_multiple=1))
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    rng = np.random.default_rng(0)
    rss = []
    for i, (rows, length) in enumerate(shapes):
        ids = rng.integers(1000, 100000, size=(rows, length)).astype(np.int64)
        loaded.forward(ids, np.ones_like(ids))
        trim(0)
        if i % 10 == 0 or i == len(shapes) - 1:
            rss.append(rss_kb() // 1024)
    print(json.dumps({"precision": a.precision, "round_len": m, "batches": len(shapes), "distinct_shapes": len(set(shapes)),
                      "post_trim_rss_mb_every_10": rss}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

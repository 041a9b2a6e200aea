#!/usr/bin/env python3
"""GPU diagnostic: what a batch shape the device has not seen yet costs, and whether rounding
window lengths up to a multiple (fewer distinct shapes) pays for its extra padding.

    PYTHONPATH=.:.cache/gpu-site python3 benchmarks/gpu_shapes.py --docs 16000 --out "$OUT"

Same model, corpus and batches as ``benchmarks/gpu.py``'s roofline (its carried ``.cache/bench/gpu``),
``ner_udf.model.load_model(...).forward`` only. Per precision, in this order: the batches with
lengths rounded up to ``--multiple`` (first pass = new shapes, second pass = the same shapes
again), then the exact lengths (first pass, second pass). tokens/s counts real tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import benchlib as bl  # noqa: E402
from benchmarks.benchlib import log  # noqa: E402
from benchmarks.gpu import CORPUS, GPU_MAX_PADDING, SKELETON, load, sync, wait  # noqa: E402


def padded(batches, multiple: int, pad_id: int):
    import numpy as np

    out = []
    for ids, mask in batches:
        L = ids.shape[1]
        target = -(-L // multiple) * multiple
        if target != L:
            ids = np.pad(ids, ((0, 0), (0, target - L)), constant_values=pad_id)
            mask = np.pad(mask, ((0, 0), (0, target - L)), constant_values=0)
        out.append((ids, mask))
    return out


def one_pass(loaded, batches, device) -> float:
    sync(device)
    t = time.perf_counter()
    handles = [loaded.forward(ids, mask) for ids, mask in batches]
    for h in handles:
        wait(h)
    sync(device)
    return time.perf_counter() - t


def main() -> int:
    import pyarrow.parquet as pq

    from ner_udf.batching import pad, plan_batches

    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=16000)
    p.add_argument("--budget", type=int, default=65536)
    p.add_argument("--multiple", type=int, default=64)
    p.add_argument("--precisions", default="bf16,fp16,fp32")
    p.add_argument("--out", default=".")
    p.add_argument("--variants", default="rounded,exact")
    p.add_argument("--no-cudnn-sdp", action="store_true",
                   help="torch.backends.cuda.enable_cudnn_sdp(False) before anything runs")
    args = p.parse_args()
    if args.no_cudnn_sdp:
        import torch

        torch.backends.cuda.enable_cudnn_sdp(False)
    model_dir = bl.build_model(SKELETON, layers=12, tokenizer_dir=SKELETON)
    texts = pq.read_table(CORPUS, columns=["text"]).column("text").to_pylist()[: args.docs]
    tagger = bl.make_tagger(bl.load_tokenizer(model_dir), batch_tokens=args.budget)
    windows, n_tokens = bl.count_tokens(tagger, texts)
    tokens = int(n_tokens.sum())
    lengths = [len(w) for w in windows]
    idx = list(plan_batches(lengths, args.budget, GPU_MAX_PADDING))
    exact = [pad([windows[j].input_ids for j in b], tagger.pad_id) for b in idx]
    rounded = padded(exact, args.multiple, tagger.pad_id)
    res = {"docs": len(texts), "tokens": tokens, "batches": len(exact),
           "distinct_shapes_exact": len({ids.shape for ids, _ in exact}),
           "distinct_shapes_rounded": len({ids.shape for ids, _ in rounded}),
           "padded_tokens_exact": int(sum(i.size for i, _ in exact)),
           "padded_tokens_rounded": int(sum(i.size for i, _ in rounded)), "passes": {},
           "cudnn_sdp": not args.no_cudnn_sdp}
    log(json.dumps({k: v for k, v in res.items() if k != "passes"}))
    for prec in [x for x in args.precisions.split(",") if x]:
        loaded, _ = load(model_dir, prec, "cuda:0")
        variants = {"rounded": (f"rounded{args.multiple}", rounded), "exact": ("exact", exact)}
        for name, batches in (variants[v] for v in args.variants.split(",")):
            for n in (1, 2):
                s = one_pass(loaded, batches, "cuda:0")
                res["passes"][f"{prec}_{name}_pass{n}"] = {"seconds": round(s, 3), "tokens_per_s": round(tokens / s, 1)}
                log(f"{prec} {name} pass {n}: {s:.2f}s, {tokens / s:,.0f} tokens/s")
        del loaded
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_shapes.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

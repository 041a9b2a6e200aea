#!/usr/bin/env python
"""Is there a CPU backend past eager PyTorch? OpenVINO and torch.compile against eager torch, fp32 or bf16.

    .venv/bin/pip install openvino==2026.4.0        # only for the openvino leg
    .venv/bin/python benchmarks/investigations/backends.py [--model .cache/models/rampart] [--threads 2]
        [--batches 20] [--budget 8192] [--repeats 3] [--backends torch,openvino,torch_compile]
        [--precision fp32|bf16]

Builds ``--batches`` padded batches of real tokenized text (PII-style sentences plus the tests'
multilingual texts), each of a different sequence length drawn from 64..512 and ~``--budget``
tokens (rows = budget // length, rows cut at random lengths in [0.8 L, L] so there is padding).
Every backend first sees each shape once (warm-up: conversion/compile and per-shape first-call
costs are reported separately), then the 20 batches are timed ``--repeats`` times, the backends
interleaved per repeat. Reports real (non-padding) tokens/s: median and min..max of the repeats,
the ratio to eager, the max abs difference of probabilities against eager over real tokens and
the argmax agreement. Adopt a backend at >= 1.3x and >= 99.5% agreement. Writes JSON to --out.

2026-11-30 (base commit 25561f7), 2-core AVX2 machine (no avx512/AMX), torch 2.13.0 CPU,
openvino 2026.4.0, rampart model (6 layers, hidden 384), fp32, 2 threads:
- idle machine, --batches 8 --backends torch,openvino (58,337 real tokens, 3 repeats):
  torch 2,449 tok/s (2,375-2,777), openvino 3,694 (3,661-3,744): 1.51x (paired 1.54/1.51/1.35);
  max abs prob diff 5.5e-6, argmax agreement 100%. Conversion 17.8 s, IR save 0.14 s, read
  0.03 s, compile 0.5 s; first call of each new shape ~2 s at openvino against ~3 s for torch.
- machine shared with other jobs (Spark tests), all three backends: paired ratios to torch
  openvino 0.97, 0.99, 1.14, 1.83, 1.20; torch.compile(dynamic=True) 1.15, 0.62, 0.94, 2.36,
  1.07 (also 100% agreement, 5.4e-6); its first call (compile) 87 s cold, 24.5 s with a warm
  inductor cache. Contended figures decide nothing: run this on an idle machine.

2026-12-01 (base commit 38b9890), same machine idle, the benchmark's model (random mBERT-shaped,
12 layers, hidden 768: ``--model .cache/bench/mbert-random --batches 6 --repeats 3``; 43,649 real
/ 48,321 padded tokens, batch lengths 82..441):
  torch 785 tok/s (756-806), openvino 734 (733-793): 0.94x (paired 0.97/0.93/0.98),
  torch.compile(dynamic=True) 806 (804-812): 1.03x (paired 1.07/1.04/1.00); agreement 100% for
  both (max abs prob diff 7.2e-7, 4.2e-7). Conversion 61 s, compile's first call 59 s. Neither
  reaches 1.3x, and none can at fp32 here: eager torch runs these shapes at ~156 GFLOP/s, 0.86
  of torch's own square-matmul peak measured minutes later (181 GFLOP/s, ``run.py``'s
  ``peak_child``; the Zen 3 cores' two 256-bit FMA units give 157-224 GFLOP/s for 2 cores at
  2.45-3.5 GHz), so a backend could gain at most ~1.16x. OpenVINO's 1.5x on the rampart model
  (hidden 384) comes from small matmuls, where torch is further from the peak.

2026-12-03 (base commit d34f409), 2-core Intel Xeon with AMX bf16 (the machine of results.json at
4e6080f), bf16, the benchmark's model, ``--batches 6 --repeats 3 --precision bf16``, one compile
variant per process (``--backends torch,torch_compile_frozen`` and so on),
``TORCHINDUCTOR_CACHE_DIR=.cache/bench/inductor``; agreement is against eager bf16 (weights cast):
- torch.compile(dynamic=True) with inductor freezing (weights folded and prepacked for oneDNN),
  cold cache: 1,964 tok/s (1,913-2,067) against eager's 1,766 (1,753-2,016), 1.11x (paired
  1.03/1.12/1.08); first call (compile) 72 s. Warm cache, rerun: 2,436 (1,869-2,502) against
  2,075 (1,939-2,394), 1.17x (paired 1.02/0.90/1.29); first call still 37 s.
- static shapes with freezing: 1,781 (1,708-1,945) against 1,842 (1,603-1,854), 0.97x (paired
  1.05/0.97/1.07), and a compile of ~21-27 s for every new batch shape (the job's bf16 batches take
  up to 32 lengths times several row counts).
- both: max abs probability difference 1.1e-2, argmax agreement 99.76% of real tokens.
  A one-off run on 2026-12-02 at single shapes (best of 3) gave 1.2-2.0x eager bf16 at (16, 512),
  (40, 208), (64, 128); over mixed shapes the gain is 1.1-1.2x, under the 1.3x bar, and the 37-72 s
  compile per worker process is more than the bench job's whole bf16 tagging time (4 tasks of
  ~5.6 s). So no torch.compile backend ships.

2026-12-06 (base commit 5bf56fa), the same AMX Xeon, idle, ``--model .cache/bench/mbert-random
--batches 6 --repeats 3 --precision bf16 --backends torch,openvino`` (43,649 real tokens): OpenVINO
with inference precision bf16 2,463 tok/s (2,221-2,604) against eager bf16's 2,126 (2,034-2,130),
1.16x (paired 1.22/1.21/1.05), argmax agreement with eager bf16 99.83% of real tokens (max abs
probability difference 8.0e-3); conversion 56 s, first call of each new shape 2.9-3.5 s (eager
bf16: 3.5-4.7 s). Under the 1.3x bar at bf16 as at fp32, so OpenVINO stays opt-in and the bf16
recheck (``model.recheck_margin``, eager torch only) was not extended to it: at best it would
move the job's bf16 tagging tasks by that 1.16x.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

FIRST = ["Anna", "José", "Wei", "Olga", "Mohammed", "Priya", "Lars", "Chloé", "Kenji", "Fatima"]
LAST = ["Schmidt", "García", "Zhang", "Ivanova", "Haddad", "Sharma", "Nilsson", "Dubois", "Tanaka", "Okafor"]


def texts(n: int, seed: int = 0) -> list[str]:
    from texts import corpus  # tests/texts.py: multilingual sentences and random words

    rnd = random.Random(seed)
    out = corpus(n, seed=seed, max_words=60)
    for i in range(n):
        f, s = rnd.choice(FIRST), rnd.choice(LAST)
        out.append(f"Dear {f} {s}, please call +49 30 {rnd.randint(1000000, 9999999)} or write to "
                   f"{f.lower()}.{s.lower()}@example.{rnd.choice(['com', 'de', 'fr'])} before Monday. "
                   f"Your account DE{rnd.randint(10**19, 10**20 - 1)} was updated; see "
                   f"https://bank.example.org/u/{rnd.randint(1, 99999)} for details.")
    rnd.shuffle(out)
    return out


def make_batches(tokenizer, n_batches: int, budget: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    stream = []
    for t in texts(400, seed):
        stream.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
    stream = np.array(stream, dtype=np.int64)
    lengths = sorted(rng.choice(np.arange(64, 513), size=n_batches, replace=False).tolist())
    rng.shuffle(lengths)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    batches = []
    for L in lengths:
        rows = max(1, budget // L)
        ids = np.full((rows, L), pad, dtype=np.int64)
        mask = np.zeros((rows, L), dtype=np.int64)
        for r in range(rows):
            n = int(rng.integers(int(0.8 * L), L + 1)) if r else L  # the longest row sets L
            start = int(rng.integers(0, len(stream) - n))
            ids[r, :n] = [cls, *stream[start:start + n - 2], sep]
            mask[r, :n] = 1
        batches.append((ids, mask))
    return batches


def main() -> int:
    import numpy as np
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / ".cache/models/rampart"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--budget", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", default="torch,openvino,torch_compile",
                   help="comma-separated: torch (eager, the reference), openvino, torch_compile "
                        "(dynamic shapes), torch_compile_frozen (dynamic shapes, inductor freezing: "
                        "weights constant-folded and prepacked for oneDNN), torch_compile_frozen_static "
                        "(freezing, one compile per batch shape)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the weights cast as the job casts them (eager and torch.compile), "
                        "OpenVINO's inference precision hint bf16; agreement is against eager bf16")
    p.add_argument("--out", default=str(ROOT / ".cache/bench/backends.json"))
    args = p.parse_args()
    wanted = args.backends.split(",")
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(args.model, dtype=torch.float32).eval()
    fp32_model = model  # OpenVINO converts from fp32 and applies its precision hint
    if args.precision == "bf16":
        model = AutoModelForTokenClassification.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    batches = make_batches(tok, args.batches, args.budget, args.seed)
    real = int(sum(m.sum() for _, m in batches))
    padded = int(sum(m.size for _, m in batches))
    res = {"model": args.model, "threads": args.threads, "batches": len(batches), "real_tokens": real,
           "padded_tokens": padded, "shapes": [list(i.shape) for i, _ in batches],
           "precision": args.precision, "versions": {"torch": torch.__version__}, "backends": {}}
    print(f"{len(batches)} batches, {real} real / {padded} padded tokens", flush=True)

    def torch_forward(m):
        def fwd(ids, mask):
            with torch.inference_mode():
                t = torch.from_numpy(ids)
                logits = m(input_ids=t, attention_mask=torch.from_numpy(mask),
                           token_type_ids=torch.zeros_like(t)).logits
                return torch.softmax(logits.float(), dim=-1).numpy()
        return fwd

    fns, setup = {}, {}
    fns["torch"] = torch_forward(model)
    if "openvino" in wanted:
        import openvino as ov

        res["versions"]["openvino"] = ov.__version__
        ids0, mask0 = (torch.from_numpy(a) for a in batches[0])
        t = time.perf_counter()
        with torch.no_grad():
            ovm = ov.convert_model(fp32_model, example_input={"input_ids": ids0, "attention_mask": mask0,
                                                         "token_type_ids": torch.zeros_like(ids0)},
                                   input=[("input_ids", ov.PartialShape([-1, -1]), ov.Type.i64),
                                          ("attention_mask", ov.PartialShape([-1, -1]), ov.Type.i64),
                                          ("token_type_ids", ov.PartialShape([-1, -1]), ov.Type.i64)])
        conv = time.perf_counter() - t
        xml = Path(args.out).parent / "ov" / "model.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        ov.save_model(ovm, str(xml), compress_to_fp16=False)
        save = time.perf_counter() - t
        core = ov.Core()
        t = time.perf_counter()
        ovm = core.read_model(str(xml))
        read = time.perf_counter() - t
        t = time.perf_counter()
        compiled = core.compile_model(ovm, "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                   "INFERENCE_PRECISION_HINT":
                                                       "bf16" if args.precision == "bf16" else "f32",
                                                   "PERFORMANCE_HINT": "LATENCY"})
        comp = time.perf_counter() - t
        req = compiled.create_infer_request()

        def ov_forward(ids, mask):
            out = req.infer({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
            logits = torch.from_numpy(out[compiled.output(0)])
            return torch.softmax(logits.float(), dim=-1).numpy()

        fns["openvino"] = ov_forward
        setup["openvino"] = {"convert_s": round(conv, 2), "save_ir_s": round(save, 2), "read_ir_s": round(read, 2),
                             "compile_s": round(comp, 2)}
        print("openvino setup", setup["openvino"], flush=True)
    if "torch_compile" in wanted:
        cm = torch.compile(model, dynamic=True)
        fns["torch_compile"] = torch_forward(cm)
        setup["torch_compile"] = {}
    if "torch_compile_frozen" in wanted:
        # freezing needs inference mode (torch_forward runs under it); options= patches inductor's
        # config for this compile only
        fns["torch_compile_frozen"] = torch_forward(torch.compile(model, dynamic=True, options={"freezing": True}))
    if "torch_compile_frozen_static" in wanted:
        fns["torch_compile_frozen_static"] = torch_forward(
            torch.compile(model, dynamic=False, options={"freezing": True}))
    if any(n.startswith("torch_compile") for n in wanted):
        import os

        res["inductor_cache_dir"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default: /tmp/torchinductor_$USER)")

    # warm-up: every shape once per backend; first call of torch_compile includes the compile
    outs = {}
    for name, fn in fns.items():
        firsts = []
        outs[name] = []
        t0 = time.perf_counter()
        for ids, mask in batches:
            t = time.perf_counter()
            outs[name].append(fn(ids, mask))
            firsts.append(round(time.perf_counter() - t, 3))
        setup.setdefault(name, {})["warmup_pass_s"] = round(time.perf_counter() - t0, 2)
        setup[name]["first_call_s"] = firsts[0]
        setup[name]["per_shape_first_s"] = firsts
        print(name, "warm-up", setup[name]["warmup_pass_s"], "s; first call", firsts[0], flush=True)
    for name in fns:  # agreement with eager, printed now: a run cut short still has it
        diff, same = 0.0, 0
        for (ids, mask), a, b in zip(batches, outs["torch"], outs[name]):
            m = mask.astype(bool)
            diff = max(diff, float(np.abs(a[m] - b[m]).max()))
            same += int((a[m].argmax(-1) == b[m].argmax(-1)).sum())
        setup[name]["max_abs_prob_diff"], setup[name]["argmax_agreement"] = diff, round(same / real, 6)
        print(f"{name}: max abs prob diff {diff:.2e}, argmax agreement {same / real:.6f}", flush=True)
    times = {n: [] for n in fns}
    for rep in range(args.repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            for ids, mask in batches:
                fn(ids, mask)
            times[name].append(time.perf_counter() - t)
            print(f"rep {rep} {name}: {real / times[name][-1]:,.0f} tok/s", flush=True)
    base = statistics.median(real / s for s in times["torch"])
    for name in fns:
        tps = [real / s for s in times[name]]
        res["backends"][name] = {**setup.get(name, {}), "tokens_per_s_median": round(statistics.median(tps)),
                                 "tokens_per_s_min": round(min(tps)), "tokens_per_s_max": round(max(tps)),
                                 "speedup_vs_torch": round(statistics.median(tps) / base, 3),
                                 "paired_speedups": [round(t / s, 3) for t, s in zip(times["torch"], times[name])]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    summary = {n: {k: v for k, v in r.items() if k != "per_shape_first_s"} for n, r in res["backends"].items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Does ONNX Runtime beat torch on this CPU? The lever of issue 4: adopt it only at >= 1.3x with
the same entities.

    .venv/bin/pip install onnx onnxruntime          # not dependencies of the job
    .venv/bin/python benchmarks/ort_check.py [--docs 300] [--threads 2]

Exports the benchmark's mBERT-shaped model (built by ``benchmarks/run.py`` under .cache/bench/) to
ONNX with dynamic batch and sequence axes, optimizes it with onnxruntime's BERT fusions (attention,
GELU, layer norm), and runs it and torch fp32 (``ner_udf.model.load_model(...).forward``) over the
same length-sorted token-budget batches as the roofline, one after the other in this process, each
after a warm-up batch. Prints tokens/s of both, the ratio, and how many of the non-padding token
argmax labels are identical; writes .cache/bench/ort/ort_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import benchlib as bl  # noqa: E402
from benchmarks.benchlib import BENCH_DIR, log  # noqa: E402


def main() -> int:
    import numpy as np
    import torch

    from ner_udf import model as model_mod
    from ner_udf.batching import pad, plan_batches
    from ner_udf.config import ModelConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=int, default=8192)
    args = p.parse_args()
    try:
        import onnxruntime as ort
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        raise SystemExit("ort_check.py: .venv/bin/pip install onnx onnxruntime first")
    model_dir = bl.default_model_dir()
    if not bl.model_is_built(model_dir):
        raise SystemExit("ort_check.py: build the benchmark model first (make bench, or run.py --only roofline_fp32)")
    out = BENCH_DIR / "ort"
    out.mkdir(parents=True, exist_ok=True)
    loaded = model_mod.load_model(ModelConfig(name=str(model_dir), device="cpu", threads=args.threads))
    tagger = bl.make_tagger(loaded.tokenizer, batch_tokens=args.budget)
    docs = bl.corpus_docs(args.docs)
    windows, n_tokens = bl.count_tokens(tagger, docs)
    tokens = int(n_tokens.sum())
    lengths = [len(w) for w in windows]
    batches = [pad([windows[j].input_ids for j in idx], tagger.pad_id) for idx in plan_batches(lengths, args.budget)]

    onnx_path, opt_path = out / "model.onnx", out / "model.opt.onnx"
    if not opt_path.is_file():
        from transformers import AutoModelForTokenClassification

        tm = AutoModelForTokenClassification.from_pretrained(str(model_dir)).eval()
        ids, mask = (torch.from_numpy(a) for a in batches[-1])
        t = time.perf_counter()
        torch.onnx.export(tm, (ids, mask, torch.zeros_like(ids)), str(onnx_path), dynamo=False,
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                        ("input_ids", "attention_mask", "token_type_ids", "logits")},
                          opset_version=17)
        opt = optimize_model(str(onnx_path), model_type="bert", num_heads=12, hidden_size=768)
        opt.save_model_to_file(str(opt_path))
        log(f"exported and optimized in {time.perf_counter() - t:.1f}s -> {opt_path}")
        del tm
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(opt_path), so, providers=["CPUExecutionProvider"])

    def ort_forward(ids, mask):
        logits = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                       "token_type_ids": np.zeros_like(ids)})[0]
        return logits

    res = {"docs": len(docs), "tokens": tokens, "batches": len(batches), "threads": args.threads}
    outputs = {}
    for name, fn in (("torch_fp32", loaded.forward), ("onnxruntime_fp32", ort_forward)):
        fn(*batches[-1])  # warm-up
        t = time.perf_counter()
        outputs[name] = [fn(ids, mask).argmax(-1) for ids, mask in batches]
        s = time.perf_counter() - t
        res[name] = {"seconds": round(s, 2), "tokens_per_s": round(tokens / s, 1)}
        log(f"{name}: {s:.1f}s, {tokens / s:,.0f} tokens/s")
    same = total = 0
    for (ids, mask), a, b in zip(batches, outputs["torch_fp32"], outputs["onnxruntime_fp32"]):
        m = mask.astype(bool)
        same += int((a[m] == b[m]).sum())
        total += int(m.sum())
    res["ratio_ort_vs_torch"] = round(res["onnxruntime_fp32"]["tokens_per_s"] / res["torch_fp32"]["tokens_per_s"], 3)
    res["token_labels_identical"] = round(same / total, 5)
    (out / "ort_check.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

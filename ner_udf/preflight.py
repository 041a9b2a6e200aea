"""Checks run on the driver before any work: can the model be used, and what identifies it.

Cheap on purpose: a local model directory is checked from its files (its config, the safetensors
headers, and its class built on the meta device: no weights read); a hub id is resolved with
transformers (config + tokenizer, no weights), which also pins the commit. Each executor's load
checks the weights again (:func:`ner_udf.model.load_model`).
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
        check_labels(name, mconf)
        if weights:  # pickled weights cannot be read cheaply: each executor's load checks them
            check_head(name, local, weights)
        check_fast_tokenizer(name, local)
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
    check_label_settings(cfg, info["labels"])
    positions = mconf.get("max_position_embeddings")
    if cfg.tagging.max_length and positions and cfg.tagging.max_length > positions:
        raise UserError(f"tagging.max_length: got {cfg.tagging.max_length}; the model has {positions} positions")
    return info


def preload(name: str) -> threading.Thread:
    """Import what :func:`check_model` needs in a background thread: torch, transformers and the
    model's own modelling module cost seconds of CPU, which then overlap the JVM's start. Nothing
    is checked here: an import that fails fails again, with its error, in the check itself. Join the
    returned thread before anything else imports transformers: its lazy top-level module is not
    thread-safe (a concurrent ``from transformers import AutoConfig`` fails with ImportError)."""

    def imports():
        try:  # imports only (nothing that could log): the check itself reads the model's files
            import torch  # noqa: F401
            import transformers
            from transformers import AutoConfig, AutoTokenizer  # noqa: F401
            from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES

            config = Path(name) / "config.json"
            if config.is_file():
                model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
                getattr(transformers, MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES[model_type])
        except BaseException:  # noqa: BLE001 - the check reports it
            pass

    thread = threading.Thread(target=imports, name="ner-udf-preload", daemon=True)
    thread.start()
    return thread


def check_fast_tokenizer(name: str, local: Path) -> None:
    """The entities' character offsets come from a fast (Rust) tokenizer; a model whose tokenizer
    transformers can only build in Python is refused before any work (its files only: no weights)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(local), use_fast=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"model.name: cannot load the tokenizer of {name!r}: {one_line(exc)}") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"model.name: {name!r} has no fast tokenizer (tokenizer.json); offsets need one")


def check_label_settings(cfg: Config, labels: list[str]) -> None:
    """``tagging.label_map`` and ``tagging.labels`` name labels the model's entities carry (with
    aggregation ``none`` its tags, ``B-PER``; else ``PER``): a name that matches none would
    silently rename or keep nothing."""
    from .aggregation import entity_labels

    t = cfg.tagging
    produced = entity_labels(labels, t.aggregation)
    shown = f"with tagging.aggregation={t.aggregation} this model's entities are labelled {', '.join(produced)}"
    unknown = [k for k in t.label_map if k not in produced]
    if unknown:
        raise UserError(f"tagging.label_map: {unknown[0]!r} matches no label; {shown}")
    final = {t.label_map.get(n, n) for n in produced}
    unknown = [k for k in t.labels if k not in final]
    if unknown:
        mapped = f" (after label_map: {', '.join(sorted(final))})" if t.label_map else ""
        raise UserError(f"tagging.labels: {unknown[0]!r} matches no label; {shown}{mapped}")


def check_labels(name: str, mconf: dict) -> None:
    """A token-classification model names its labels 0..n-1 (transformers would otherwise invent
    ``LABEL_0``, ``LABEL_1``)."""
    id2label = mconf.get("id2label")
    if not id2label:
        raise UserError(f"model.name: {name!r} has no labels (no id2label in its config.json)")
    try:
        ids = sorted(int(k) for k in id2label)
    except (TypeError, ValueError):
        ids = None
    if ids != list(range(len(id2label))):
        raise UserError(f"model.name: {name!r}: id2label in config.json must number its labels 0..{len(id2label) - 1}, "
                        f"got ids {sorted(id2label, key=lambda k: (len(str(k)), str(k)))[:10]}")
    if mconf.get("num_labels") not in (None, len(id2label)):
        raise UserError(f"model.name: {name!r}: config.json says num_labels={mconf['num_labels']} but names "
                        f"{len(id2label)} labels")


def check_head(name: str, local: Path, weights: list[Path]) -> None:
    """Refuse a model whose token-classification head is not in its weights (transformers would
    initialise it at random and only warn: the entities would be noise) or does not fit its labels.
    The expected head comes from the model's class built on the meta device (no memory, no weights
    read); the stored tensors from the safetensors headers."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification
    from safetensors import safe_open

    try:
        stored = {}
        for w in weights:
            with safe_open(str(w), framework="np") as fh:
                stored.update({k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()})
    except Exception as exc:  # noqa: BLE001 - not safetensors, truncated header
        raise UserError(f"model.name: cannot read the weights of {name!r}: {one_line(exc)}") from None
    try:
        conf = AutoConfig.from_pretrained(str(local), trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForTokenClassification.from_config(conf, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - unknown model_type, a config transformers rejects
        raise UserError(f"model.name: cannot build a token-classification model from {name!r}: {one_line(exc)}") from None
    prefix = model.base_model_prefix + "."
    head = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = [k for k in head if k not in stored]
    if missing:
        raise UserError(f"model.name: {name!r} has no trained token-classification head ({', '.join(missing)} not in "
                        "its weights); transformers would initialise one at random")
    for k, shape in head.items():
        if stored[k] != shape:
            raise UserError(f"model.name: {name!r}: its head's {k} has shape {list(stored[k])} but its config's "
                            f"{conf.num_labels} labels need {list(shape)}")


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

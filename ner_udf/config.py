"""The job's configuration: one frozen, validated tree read from YAML plus dotted overrides.

Every key has a default; a YAML file and ``--set section.key=value`` overrides are layered on top.
Unknown keys, wrong types and impossible combinations raise :class:`~ner_udf.errors.UserError` whose message is
one line naming the key, the bad value and what would be valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError, one_line

STRATEGIES = ("none", "simple", "first", "average", "max")
DEFAULT_MODEL = "orgcatorg/bert-base-multilingual-cased-ner"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class InputConfig(_Section):
    path: str | None = None
    base_path: str | None = None
    where: str | None = None
    id_col: str = "doc_id"
    text_col: str = "text"
    passthrough_cols: tuple[str, ...] = ()
    merge_schema: bool = False
    require_ids: bool = False  # true: a null id column value is a user error (exit 2), not a status=error row


class OutputConfig(_Section):
    path: str | None = None
    mode: Literal["error", "overwrite", "incremental"] = "error"
    partition_by: tuple[str, ...] = ()
    lock_timeout_s: float = Field(default=120.0, ge=5.0)


class ModelConfig(_Section):
    name: str = DEFAULT_MODEL
    revision: str | None = None
    allow_pickle: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16", "int8"] = "fp32"
    # torch: eager PyTorch | openvino: the model converted once to OpenVINO IR (cached on disk), CPU only
    backend: Literal["torch", "openvino"] = "torch"
    threads: int | None = Field(default=None, ge=1)
    tokenizer_threads: int | None = Field(default=None, ge=1)
    release_memory_mb: int | None = Field(default=64, ge=0)
    onednn_cache_capacity: int = Field(default=8, ge=0)
    length_multiple: int | None = Field(default=None, ge=1)
    cudnn_attention: bool = False
    # bf16/fp16/int8 only: windows whose top two label probabilities on any real token are closer
    # than this are run again at fp32 and take fp32's probabilities (0 = off; README "model.recheck_margin")
    recheck_margin: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _combinations(self) -> "ModelConfig":
        """What no device can run, refused for every ModelConfig (the job's and the API's); with
        ``device: auto`` the model's load checks the same against the device it resolves."""
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("model.precision: got fp16 with model.device=cpu; on CPU use fp32, bf16 or int8")
        if self.precision == "int8" and self.device == "cuda":
            raise ValueError("model.precision: got int8 with model.device=cuda; on GPU use fp32, bf16 or fp16")
        if self.backend == "openvino" and self.device == "cuda":
            raise ValueError("model.backend: got openvino with model.device=cuda; openvino runs on CPU only: use "
                             "model.backend=torch on GPUs")
        if self.backend == "openvino" and self.precision not in ("fp32", "bf16"):
            raise ValueError(f"model.backend: got openvino with model.precision={self.precision}; openvino runs "
                             "fp32 or bf16")
        if self.recheck_margin > 0 and self.precision == "fp32":
            raise ValueError(f"model.recheck_margin: got {self.recheck_margin} with model.precision=fp32; the "
                             "recheck reruns a reduced precision's close calls at fp32: use bf16, fp16 or int8, "
                             "or recheck_margin 0")
        if self.recheck_margin > 0 and self.backend != "torch":
            raise ValueError(f"model.recheck_margin: got {self.recheck_margin} with model.backend={self.backend}; "
                             "the recheck runs with model.backend=torch only")
        return self


class TaggingConfig(_Section):
    aggregation: Literal["none", "simple", "first", "average", "max"] = "simple"
    max_length: int | None = Field(default=None, ge=8)
    stride: int | None = Field(default=None, ge=0)
    batch_tokens: int = Field(default=8192, ge=64)
    max_padding: float = Field(default=0.1, ge=0.0, le=1.0)
    chunk_chars: int = Field(default=200_000, ge=1_000)
    max_windows_per_doc: int = Field(default=0, ge=0)
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    labels: tuple[str, ...] = ()
    label_map: dict[str, str] = Field(default_factory=dict)
    dedupe: bool = True
    # cost: spread rows so each partition gets about the same number of text bytes (no straggler
    # task holding the few long documents); hash: by a hash of the text alone (the former behaviour);
    # auto: hash on a local master with one task slot (tasks run one at a time), else cost
    # (ner_udf.balance.resolve)
    balance: Literal["auto", "cost", "hash"] = "auto"
    max_error_fraction: float = Field(default=0.01, ge=0.0, le=1.0)

    def resolved_stride(self, max_length: int, n_special: int) -> int:
        """The stride actually used: the configured one, else non-overlapping for ``none`` and a
        quarter of the usable window otherwise."""
        if self.stride is not None:
            return self.stride
        if self.aggregation == "none":
            return 0
        return max(1, (max_length - n_special) // 4)


class SparkConfig(_Section):
    app_name: str = "ner-tag"
    master: str | None = None
    partitions: int | None = Field(default=None, ge=1)
    arrow_batch_rows: int = Field(default=1024, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)


class ReportConfig(_Section):
    enabled: bool = True
    by: str | None = None  # a pass-through column to break entities down by; None = the first one


class Config(_Section):
    input: InputConfig = InputConfig()
    output: OutputConfig = OutputConfig()
    model: ModelConfig = ModelConfig()
    tagging: TaggingConfig = TaggingConfig()
    spark: SparkConfig = SparkConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _combinations(self) -> "Config":
        t = self.tagging
        if t.stride is not None and t.aggregation == "none":
            raise ValueError(
                f"tagging.stride: got {t.stride} with tagging.aggregation=none; overlapping windows need "
                "an aggregation (simple, first, average, max) or leave stride unset"
            )
        if t.stride is not None and t.max_length is not None and t.stride >= t.max_length:
            raise ValueError(
                f"tagging.stride: got {t.stride}, must be < tagging.max_length ({t.max_length})"
            )
        missing = [c for c in self.output.partition_by if c not in self.input.passthrough_cols]
        if missing:
            raise ValueError(
                f"output.partition_by: got {missing[0]!r}, which is not a pass-through column; valid: "
                f"{', '.join(self.input.passthrough_cols) or '(none: add it to input.passthrough_cols)'}"
            )
        if self.report.by is not None and self.report.by not in self.input.passthrough_cols:
            raise ValueError(
                f"report.by: got {self.report.by!r}, which is not a pass-through column; valid: "
                f"{', '.join(self.input.passthrough_cols) or '(none: add it to input.passthrough_cols)'}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"]
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if e["type"] == "extra_forbidden":
        section = e["loc"][:-1]
        model: type[BaseModel] = Config
        for part in section:
            model = model.model_fields[str(part)].annotation  # type: ignore[assignment]
        valid = ", ".join(".".join([*map(str, section), k]) for k in model.model_fields)
        return f"{loc}: unknown key; valid keys here: {valid}"
    return f"{loc}: got {e.get('input')!r}; {msg}"


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise UserError(f"{dotted}: '{p}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


PATH_KEYS = (("input", "path"), ("input", "base_path"), ("output", "path"))


def _is_relative_path(value) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value and not value.startswith(("/", "~"))


def _resolve_paths(tree: dict, folder: Path) -> None:
    """Relative paths in a YAML file are relative to that file's folder, not to where the command
    runs: ``input.path``, ``input.base_path``, ``output.path``, and ``model.name`` when it names a
    directory there (else it stays as written: a hub id, or the name ``--archives`` unpacks on each
    executor). Paths given on the command line stay relative to the working directory."""
    for section, key in PATH_KEYS:
        node = tree.get(section)
        if isinstance(node, dict) and _is_relative_path(node.get(key)):
            node[key] = str((folder / node[key]).resolve())
    model = tree.get("model")
    if isinstance(model, dict) and _is_relative_path(model.get("name")) and (folder / model["name"]).is_dir():
        model["name"] = str((folder / model["name"]).resolve())


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: list[str] | None = None,
    spark_conf: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` (YAML, optional), apply ``overrides`` ({dotted key: value}), ``sets``
    (``"dotted.key=yaml value"`` strings) and ``spark_conf`` (Spark settings, added to
    ``spark.conf``: their keys hold dots), validate, and return the frozen :class:`Config`."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--config: file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise UserError(f"--config: {p} is not valid YAML: {one_line(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"--config: {p} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
        _resolve_paths(tree, p.resolve().parent)
    for item in sets or []:
        if "=" not in item:
            raise UserError(f"--set: got {item!r}; expected dotted.key=value, e.g. tagging.stride=64")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), _parse_scalar(raw))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    if spark_conf:
        section = tree.setdefault("spark", {})
        if not isinstance(section, dict) or not isinstance(section.setdefault("conf", {}) or {}, dict):
            raise UserError("--conf: spark.conf in the config is not a mapping")
        section["conf"] = {**(section.get("conf") or {}), **spark_conf}
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise UserError(_format_error(err)) from None


def config_from(config: "str | Path | Mapping[str, Any] | Config | None" = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """A :class:`Config` from what an API caller has: a YAML path, a mapping shaped like the YAML
    file, a :class:`Config`, or None (the defaults); ``overrides`` are dotted keys, as ``--set``
    takes them (``{"model.name": "...", "tagging.aggregation": "simple"}``)."""
    import copy

    if config is None or isinstance(config, (str, Path)):
        return load_config(config, overrides=overrides)
    if isinstance(config, Config):
        tree = config.to_dict()
    elif isinstance(config, Mapping):
        tree = copy.deepcopy(dict(config))
    else:
        raise UserError(f"config: got a {type(config).__name__}; pass a YAML path, a mapping or a Config")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise UserError(_format_error(err)) from None

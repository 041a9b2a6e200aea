"""Command line of the job: parse -> config -> checks -> read -> tag -> write -> commit.

Used by ``jobs/tag_entities.py`` under spark-submit and by the ``ner-tag`` console script (which
starts a local SparkSession in-process). Exit codes: 0 output committed, 2 user error (one line on
stderr, nothing written), 1 the run failed (nothing committed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

from .config import STRATEGIES, Config, ConfigError, load_config

FLAGS = {  # flag -> dotted config key
    "input": "input.path",
    "output": "output.path",
    "model": "model.name",
    "revision": "model.revision",
    "id_col": "input.id_col",
    "text_col": "input.text_col",
    "aggregation": "tagging.aggregation",
    "max_length": "tagging.max_length",
    "stride": "tagging.stride",
}


class UserError(Exception):
    """Stops the job before any output is written; exit code 2 and one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other user error
        print(f"ner-tag: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="ner-tag", description="Tag named entities in a Parquet corpus with a Hugging Face model.")
    p.add_argument("--config", help="YAML config (see conf/); every key can be overridden below")
    p.add_argument("--input", help="Parquet file or directory (Hive partitions are read as columns)")
    p.add_argument("--output", help="directory that receives entities/, documents/ and manifest.json")
    p.add_argument("--model", help="hub id or local directory of a token-classification model")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("--id-col", dest="id_col", help="document id column (default doc_id)")
    p.add_argument("--text-col", dest="text_col", help="text column (default text)")
    p.add_argument("--aggregation", choices=STRATEGIES, help="entity aggregation strategy (default simple)")
    p.add_argument("--max-length", dest="max_length", type=int, help="window size in tokens, special tokens included")
    p.add_argument("--stride", type=int, help="tokens shared by consecutive windows")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model.precision=bf16 (repeatable)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, flag) for flag, key in FLAGS.items()}
    return load_config(args.config, overrides=overrides, sets=args.sets)


# -- model checks on the driver (cheap: config + tokenizer, no weights) ------------------------
def check_model(cfg: Config) -> dict:
    """Fail fast if the model cannot be used; return what the manifest records about it.

    A local directory is checked from its files (no transformers import on the driver); a hub id
    is resolved with transformers (config + tokenizer, no weights), which also pins the commit."""
    name, rev = cfg.model.name, cfg.model.revision
    info: dict = {"name": name, "revision": rev}
    local = Path(name)
    if local.is_dir():
        mconf = _local_config(local)
        if not any((local / f).exists() for f in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")):
            raise UserError(f"model.name: no tokenizer files (tokenizer.json or vocab.txt) in {name!r}")
        weights = sorted(local.glob("*.safetensors"))
        if not weights and not cfg.model.allow_pickle:
            raise UserError(f"model.name: no *.safetensors weights in {name!r}; convert them or set model.allow_pickle=true")
        info["weights_sha256"] = _Digest(weights) if weights else None
        info["resolved_revision"] = rev
    else:
        if looks_like_path(name):
            raise UserError(f"model.name: {name!r} is not a directory (nor a hub id like org/model)")
        from transformers import AutoConfig, AutoTokenizer

        try:
            conf = AutoConfig.from_pretrained(name, revision=rev, trust_remote_code=False)
            tok = AutoTokenizer.from_pretrained(name, revision=rev, use_fast=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"model.name: cannot load {name!r}: {first}") from None
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
        raise UserError(f"model.name: cannot read {path}: {exc}") from None
    archs = conf.get("architectures") or []
    if archs and not any(a.endswith("ForTokenClassification") for a in archs):
        raise UserError(f"model.name: {str(local)!r} is a {archs[0]}, not a token-classification model")
    return conf


class _Digest(threading.Thread):
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


# -- Spark ------------------------------------------------------------------------------------
def get_session(cfg: Config):
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(cfg.spark.app_name)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started the JVM and set the master
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    elif not under_submit and not SparkConf().contains("spark.master"):  # in-process `ner-tag`
        builder = builder.master("local[*]")
    if not under_submit:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers use this interpreter
    builder = builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.spark.arrow_batch_rows))
    for k, v in cfg.spark.conf.items():
        builder = builder.config(k, str(v))
    return builder.getOrCreate()


def ship_package(spark) -> None:
    """Make ``ner_udf`` importable on executors even where it is not installed."""
    pkg = Path(__file__).resolve().parent
    target = Path(tempfile.mkdtemp(prefix="ner_udf-")) / "ner_udf.zip"
    with zipfile.ZipFile(target, "w") as zf:
        for f in pkg.rglob("*.py"):
            zf.write(f, f.relative_to(pkg.parent))
    spark.sparkContext.addPyFile(str(target))


class Output:
    """Output directory on any Hadoop file system; results are written under a temporary
    directory and moved into place only when everything succeeded."""

    TABLES = ("entities", "documents")

    def __init__(self, spark, path: str, mode: str, run_id: str):
        jvm = spark._jvm
        self.Path = jvm.org.apache.hadoop.fs.Path
        self.root = self.Path(path)
        self.fs = self.root.getFileSystem(spark._jsc.hadoopConfiguration())
        self.mode = mode
        self.tmp = self.Path(self.root, f"_tmp-{run_id}")
        self.path = path

    def prepare(self) -> None:
        existing = [t for t in (*self.TABLES, "manifest.json") if self.fs.exists(self.Path(self.root, t))]
        if existing and self.mode == "error":
            raise UserError(
                f"output.path: {self.path!r} already holds {', '.join(existing)}; use a new path or "
                "--set output.mode=overwrite"
            )
        try:
            ok = self.fs.mkdirs(self.tmp)
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"output.path: cannot write to {self.path!r}: {first}") from None
        if not ok:
            raise UserError(f"output.path: cannot write to {self.path!r}")

    def staging(self, table: str) -> str:
        return self.Path(self.tmp, table).toString()

    def commit(self, manifest: dict) -> None:
        for name in (*self.TABLES, "manifest.json"):
            old = self.Path(self.root, name)
            if self.fs.exists(old):
                self.fs.delete(old, True)
        for t in self.TABLES:
            if not self.fs.rename(self.Path(self.tmp, t), self.Path(self.root, t)):
                raise RuntimeError(f"could not move {t} into {self.path}")
        stream = self.fs.create(self.Path(self.root, "manifest.json"), True)
        try:
            stream.write(bytearray(json.dumps(manifest, indent=2, default=str).encode("utf-8")))
        finally:
            stream.close()
        self.fs.delete(self.tmp, True)

    def abort(self) -> None:
        try:
            self.fs.delete(self.tmp, True)
        except Exception:  # noqa: BLE001 - best effort
            pass


def run(cfg: Config) -> dict:
    """Run the job; returns the manifest. Raises UserError before writing anything."""
    from pyspark import StorageLevel

    from . import spark as glue

    if not cfg.output.path:
        raise UserError("output.path: not set; pass --output PATH or set output.path in the config")
    started = dt.datetime.now(dt.timezone.utc)
    t_run = time.perf_counter()
    run_id = started.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    if Path(cfg.model.name).is_dir():  # executors run elsewhere: ship an absolute path
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": str(Path(cfg.model.name).resolve())})})
    model_info = check_model(cfg)
    spark = get_session(cfg)
    ship_package(spark)
    try:
        source = glue.read_input(spark, cfg)
    except glue.InputError as exc:
        raise UserError(str(exc)) from None
    out = Output(spark, cfg.output.path, cfg.output.mode, run_id)
    out.prepare()
    loads = spark.sparkContext.accumulator({}, glue.CountsParam())
    slots = max(1, spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus", "1")))
    partitions = cfg.spark.partitions or slots * 4  # a few tasks per slot: balance without tiny sorts
    t0 = time.perf_counter()
    tagged = glue.tag(source, cfg, loads, partitions).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        passthrough = cfg.input.passthrough_cols
        parts = [c for c in cfg.output.partition_by]
        phases = {}  # seconds per Spark action: the first one reads, tags and writes entities/
        for name, frame in (("entities", glue.entities_table(tagged, passthrough)),
                            ("documents", glue.documents_table(tagged, passthrough))):
            t = time.perf_counter()
            frame.write.mode("overwrite").partitionBy(*parts).parquet(out.staging(name))
            phases[f"write_{name}"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        counts = summarize(tagged)
        phases["summarize"] = round(time.perf_counter() - t, 3)
        phases["before_tagging"] = round(t0 - t_run, 3)
        seconds = time.perf_counter() - t0
        finished = dt.datetime.now(dt.timezone.utc)
        manifest = {
            "run_id": run_id,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "model": {k: (str(v) if isinstance(v, _Digest) else v) for k, v in model_info.items()},
            "config": cfg.to_dict(),
            "counts": counts,
            "model_loads": loads.value.get("executors", {}),
            "model_loads_per_worker": loads.value.get("workers", {}),
            "tasks_per_worker": loads.value.get("tasks_per_worker", {}),
            "tagger": loads.value.get("tagger", {}),
            "worker_peak_rss_mb": worker_peaks(loads.value),
            "throughput": {
                "seconds": round(seconds, 3),
                "documents_per_s": round(counts["documents"]["total"] / seconds, 2),
                "tokens_per_s": round(counts["tokens"] / seconds, 1),
                "phases": phases,
            },
            "spark": {"version": spark.version, "master": spark.sparkContext.master,
                      "app_id": spark.sparkContext.applicationId, "partitions": partitions},
            "output": {"path": cfg.output.path, "tables": list(Output.TABLES)},
        }
        out.commit(manifest)
        return manifest
    except BaseException:
        out.abort()
        raise
    finally:
        tagged.unpersist()


def worker_peaks(acc: dict) -> dict:
    """Peak resident memory (MB) per Python worker (``host/pid``): ``load`` while the model was
    loaded, ``tagging`` after it (or ``peak``, both together, where the kernel mark cannot be reset)."""
    out: dict[str, dict[str, int]] = {}
    for key, name in (("peak_load_rss_mb", "load"), ("peak_tagging_rss_mb", "tagging"), ("peak_rss_mb", "peak")):
        for worker, mb in acc.get(key, {}).items():
            out.setdefault(worker, {})[name] = mb
    return dict(sorted(out.items()))


def summarize(tagged) -> dict:
    from pyspark.sql import functions as F

    rows = tagged.groupBy("status").agg(
        F.count("*").alias("n"), F.sum("n_tokens").alias("t"), F.sum("n_windows").alias("w")
    ).collect()
    by_status = {r["status"]: int(r["n"]) for r in rows}
    labels = {
        r["label"]: int(r["count"])
        for r in tagged.select(F.explode("entities.label").alias("label")).groupBy("label").count().collect()
    }
    return {
        "documents": {"total": sum(by_status.values()), **dict(sorted(by_status.items()))},
        "entities": {"total": sum(labels.values()), **dict(sorted(labels.items()))},
        "tokens": int(sum(r["t"] or 0 for r in rows)),
        "windows": int(sum(r["w"] or 0 for r in rows)),
    }


def _reason(exc: BaseException) -> str:
    """One line: for a Python worker failure, the worker's own exception line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    culprits = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln and not ln.startswith("File ")]
    return culprits[-1] if culprits else f"{type(exc).__name__}: {lines[0] if lines else ''}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        manifest = run(cfg)
    except (ConfigError, UserError) as exc:
        print(f"ner-tag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ner-tag: interrupted; nothing was committed", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed run: short reason, nothing committed
        print(f"ner-tag: run failed, nothing committed: {_reason(exc)}", file=sys.stderr)
        if os.environ.get("NER_TAG_DEBUG"):
            raise
        return 1
    c = manifest["counts"]
    print(
        f"ner-tag: committed {c['documents']['total']} documents, {c['entities']['total']} entities to "
        f"{cfg.output.path} in {manifest['throughput']['seconds']} s "
        f"({manifest['throughput']['tokens_per_s']} tokens/s); manifest: {cfg.output.path}/manifest.json"
    )
    return 0

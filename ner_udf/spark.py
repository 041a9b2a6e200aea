"""Spark glue: the session, reading the corpus, tagging it with ``mapInPandas``, the tables' shapes.

Kept thin: the tagging itself is :class:`ner_udf.tagger.Tagger`. The model is loaded once per Python
worker (``ner_udf.model`` caches it per process); with one task slot per executor that is once per
executor. Every input row comes out as exactly one ``documents`` row.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple

import pandas as pd
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import events
from .config import Config
from .errors import UserError, failure_reason, one_line
from .manifest import WorkerMetrics

ENTITY_TYPE = T.StructType(
    [
        T.StructField("entity", T.StringType()),
        T.StructField("label", T.StringType()),
        T.StructField("start", T.IntegerType()),
        T.StructField("end", T.IntegerType()),
        T.StructField("score", T.FloatType()),
    ]
)
DOC_FIELDS = [
    T.StructField("status", T.StringType(), False),
    T.StructField("n_chars", T.IntegerType()),
    T.StructField("n_tokens", T.IntegerType()),
    T.StructField("n_windows", T.IntegerType()),
    T.StructField("n_entities", T.IntegerType()),
    T.StructField("truncated", T.BooleanType()),
    T.StructField("error", T.StringType()),
]
_TEXT = "__text_utf8"
TEXT_SHA256 = "text_sha256"  # hex sha256 of the text's UTF-8 bytes: what an incremental run compares
RUN_ID = "run_id"  # the run that tagged the row


def get_session(cfg: Config) -> SparkSession:
    """The SparkSession: spark-submit's (it set the master), else a local one for ``ner-tag``.

    ``spark.master`` and ``spark.conf`` from the config are defaults: a setting that spark-submit
    (``--master``, ``--conf``, ``spark-defaults.conf``) already made wins over the config file."""
    from pyspark import SparkConf, SparkContext

    builder = SparkSession.builder.appName(cfg.spark.app_name)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started the JVM and set the master
    if under_submit:
        SparkContext._ensure_initialized()  # connect to spark-submit's JVM, so that SparkConf() reads it
    preset = SparkConf()  # what spark-submit passed to the JVM (empty before a JVM runs)
    if cfg.spark.master and not preset.contains("spark.master"):
        builder = builder.master(cfg.spark.master)
    elif not under_submit and not preset.contains("spark.master"):  # in-process `ner-tag`
        builder = builder.master("local[*]")
    if not under_submit:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers use this interpreter
    builder = builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.spark.arrow_batch_rows))
    for k, v in cfg.spark.conf.items():
        if not preset.contains(k):
            builder = builder.config(k, str(v))
    try:
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - e.g. spark.task.cpus above the executors' cores
        raise UserError(f"spark: cannot start a session: {failure_reason(exc)}") from None


def ship_package(spark: SparkSession) -> None:
    """Make ``ner_udf`` importable on executors even where it is not installed (the zip is removed
    when this process ends)."""
    pkg = Path(__file__).resolve().parent
    folder = tempfile.mkdtemp(prefix="ner_udf-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    target = Path(folder) / "ner_udf.zip"
    with zipfile.ZipFile(target, "w") as zf:
        for f in pkg.rglob("*.py"):
            zf.write(f, f.relative_to(pkg.parent))
    spark.sparkContext.addPyFile(str(target))


def model_roots(driver_cwd: str | None = None) -> list[Path]:
    """Where a relative ``model.name`` is looked for, in order: the working directory (an executor's
    holds what ``--archives model.tar.gz#model`` unpacked), the driver's working directory (local
    masters), and Spark's files directory (the driver's copy of ``--archives``)."""
    from pyspark import SparkFiles

    roots = [Path.cwd()]
    if driver_cwd:
        roots.append(Path(driver_cwd))
    try:
        roots.append(Path(SparkFiles.getRootDirectory()))
    except Exception:  # noqa: BLE001 - no SparkContext / not in a task: nothing shipped to look in
        pass
    return roots


def task_device(model_device: str, ctx) -> str | None:
    """The device a task runs on: ``cuda:<address>`` of the first GPU Spark assigned to the task
    (``spark.task.resource.gpu.amount``), else None (``model.device`` decides)."""
    if ctx is None or model_device == "cpu":
        return None
    gpus = ctx.resources().get("gpu")
    if gpus is not None and gpus.addresses:
        return f"cuda:{gpus.addresses[0]}"
    return None


def quiet() -> None:
    """Before a failed run's one line: make sure nothing Spark prints comes after it. Spark's logging
    goes ``OFF`` (not ``ERROR``: tasks still being cancelled log their errors at ERROR), every job is
    cancelled and the SparkContext stopped (so no task is left to fail later), and the JVM's own
    console streams are muted (uncaught exceptions of its threads print there, not through log4j).
    Under spark-submit the driver's output reaches the console through a thread that holds the
    original stream, so the one line still gets through. Also after a SparkContext that failed to
    start; a no-op when Spark never started. Meant for the end of a process (``ner-tag``,
    spark-submit), not for a caller's own session."""
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:  # Spark never started
        return
    sc = SparkContext._active_spark_context
    log4j = jvm.org.apache.logging.log4j
    try:  # every logger, not only the root: some have their own level
        log4j.core.config.Configurator.setAllLevels(log4j.LogManager.getRootLogger().getName(), log4j.Level.OFF)
        if sc is not None:
            sc.cancelAllJobs()
            sc.stop()
    finally:
        mute = jvm.java.io.PrintStream(jvm.java.io.OutputStream.nullOutputStream())
        jvm.java.lang.System.err.flush()
        jvm.java.lang.System.out.flush()
        jvm.java.lang.System.setErr(mute)
        jvm.java.lang.System.setOut(mute)


def task_slots(spark: SparkSession) -> int:
    """Tasks the session runs at once: Spark's default parallelism over ``spark.task.cpus``."""
    return max(1, spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus", "1")))


TASKS_PER_SLOT = 4  # spark.partitions: null plans this many partitions per task slot


class Layout(NamedTuple):
    """How a run spreads its tagging over the session (:func:`plan_layout`)."""

    task_slots: int  # the task slots the tagging is planned for (:func:`planned_slots`)
    partitions: int  # spark.partitions, or a few tasks per slot (TASKS_PER_SLOT x task_slots)
    balance: str     # tagging.balance as this session runs it (auto resolved: ner_udf.balance.resolve)
    warning: str | None = None  # why the default partitions may be too few for this session


def planned_slots(registered: int, master: str, conf: Mapping[str, str]) -> tuple[int, str | None]:
    """``(task slots to plan the default partitions for, warning)``, given the slots registered now
    (:func:`task_slots`), the Spark master and the session's Spark conf. Without dynamic allocation
    (or on a local master, where Spark ignores it): the registered slots. Under dynamic allocation
    (``spark.dynamicAllocation.enabled``) executors come when tasks wait for them, and the ones
    registered at the start (none, with no initial executors: Spark then reports 2 cores) say
    nothing of the cluster: plan for ``maxExecutors`` x ``spark.executor.cores`` (default 1) /
    ``spark.task.cpus`` slots, at least one per executor and at least the registered ones. With
    no ``maxExecutors`` nothing bounds the cluster: the registered slots, and a warning."""
    from .balance import local_master

    if local_master(master) or conf.get("spark.dynamicAllocation.enabled", "false").strip().lower() != "true":
        return registered, None
    most = conf.get("spark.dynamicAllocation.maxExecutors", "").strip()
    if not most or int(most) >= 2**31 - 1:  # Spark's default is Int.MaxValue: no bound
        return registered, (f"dynamic allocation without spark.dynamicAllocation.maxExecutors: the default "
                            f"partitions are planned for the {registered} task slot(s) registered now "
                            f"({TASKS_PER_SLOT * registered} partitions), however many executors could come; set "
                            "spark.dynamicAllocation.maxExecutors or spark.partitions (README: Partitions "
                            "and dynamic allocation)")
    per_executor = max(1, int(conf.get("spark.executor.cores", "1")) // int(conf.get("spark.task.cpus", "1")))
    return max(registered, int(most) * per_executor), None


def plan_layout(spark: SparkSession, cfg: Config) -> Layout:
    """The partitions and the balance for ``cfg`` on this session, from one reading of its task
    slots: a cluster's can change while executors register, and both must see the same number.
    ``spark.partitions`` set: as given, with the registered slots; else 4 x :func:`planned_slots`."""
    from .balance import resolve

    slots, warning = task_slots(spark), None
    if cfg.spark.partitions is None:
        keys = ("spark.dynamicAllocation.enabled", "spark.dynamicAllocation.maxExecutors",
                "spark.executor.cores", "spark.task.cpus")
        conf = {k: v for k in keys if (v := spark.conf.get(k, None)) is not None}
        slots, warning = planned_slots(slots, spark.sparkContext.master, conf)
    return Layout(slots, cfg.spark.partitions or slots * TASKS_PER_SLOT,
                  resolve(cfg.tagging.balance, spark.sparkContext.master, slots), warning)


def read_input(spark: SparkSession, cfg: Config) -> DataFrame:
    """The corpus at ``input.path`` (``input.base_path`` applied), its files' footers checked, then
    prepared (:func:`prepare`). Every problem is a :class:`UserError`, found before any work."""
    inp = cfg.input
    if not inp.path:
        raise UserError("input.path: not set; pass --input PATH or set input.path in the config")
    reader = spark.read
    if inp.base_path:
        reader = reader.option("basePath", inp.base_path)
    if inp.merge_schema:  # columns some files lack read as null there
        reader = reader.option("mergeSchema", "true")
    try:
        df = reader.parquet(inp.path)
    except Exception as exc:  # noqa: BLE001 - AnalysisException and friends
        key = "input.base_path" if inp.base_path and "basePath" in str(exc) else "input.path"
        value = inp.base_path if key == "input.base_path" else inp.path
        raise UserError(f"{key}: cannot read Parquet at {value!r}: {one_line(exc)}") from None
    files = df.inputFiles()
    if len(files) > 1:
        check_input_files(files, footer_columns(spark, files, [inp.id_col, inp.text_col, *inp.passthrough_cols]), inp)
    return prepare(df, cfg, repr(inp.path))


def prepare(df: DataFrame, cfg: Config, source: str = "the DataFrame") -> DataFrame:
    """What the tagger reads: the id (as ``doc_id``), the text (as UTF-8 bytes, decoded per row in
    Python so that invalid text fails one row, not the job), its sha256 and the pass-through
    columns, with ``input.where`` applied. Missing columns, a text column that is not text, a bad
    ``input.where`` and (``input.require_ids``) null ids are a :class:`UserError` naming ``source``."""
    inp = cfg.input
    wanted = [inp.id_col, inp.text_col, *inp.passthrough_cols]
    missing = [c for c in wanted if c not in set(df.columns)]
    if missing:
        raise UserError(f"input: column(s) {', '.join(missing)} not in {source}; available: {', '.join(df.columns)}")
    text_type = df.schema[inp.text_col].dataType
    if not isinstance(text_type, (T.StringType, T.BinaryType)):
        raise UserError(f"input.text_col: column {inp.text_col!r} is {text_type.simpleString()}, not string")
    if inp.where:
        try:
            df = df.where(F.expr(inp.where))
        except Exception as exc:  # noqa: BLE001 - ParseException, AnalysisException
            raise UserError(f"input.where: got {inp.where!r}: {one_line(exc)}; columns: {', '.join(df.columns)}") from None
    if inp.require_ids:  # one scan of the id column, before any work
        nulls = df.where(F.col(inp.id_col).isNull()).count()
        if nulls:
            raise UserError(f"input.require_ids: {nulls} row(s) of {source} have a null {inp.id_col!r}; fix or "
                            "filter them (input.where), or set input.require_ids: false to keep them as "
                            "status=error rows")
    text = F.col(inp.text_col).cast("binary")
    return df.select(
        F.col(inp.id_col).alias("doc_id"),
        text.alias(_TEXT),
        F.sha2(text, 256).alias(TEXT_SHA256),
        *[F.col(c) for c in inp.passthrough_cols],
    )


def _arrow_type_name(t) -> str:
    """A Parquet column's type as pyarrow reads it, for the check: exact, except that the large_
    variants are the same Parquet type. Strict on purpose: with input.merge_schema Spark refused
    to merge an int32 file's column with an int64 file's."""
    import pyarrow as pa

    return {pa.large_string(): "string", pa.large_binary(): "binary"}.get(t, str(t))


def _is_local(f: str) -> bool:
    from urllib.parse import urlparse

    return urlparse(f).scheme in ("file", "")


def _shown(f: str) -> str:
    """A file as a message names it: a local one by its path."""
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(f).path) if _is_local(f) else f


def footer_columns(spark: SparkSession, files: list[str], wanted: list[str],
                   via_hadoop: bool | None = None) -> list[dict[str, str]]:
    """For each file, its ``wanted`` columns and their types, from the Parquet footer: read with
    pyarrow when every file is local, otherwise (or with ``via_hadoop``) through Hadoop's file
    system as the session has it configured (HDFS, S3, ...: whatever Spark reads); 16 at a time."""
    from concurrent.futures import ThreadPoolExecutor

    if via_hadoop is None:
        via_hadoop = not all(_is_local(f) for f in files)
    if not via_hadoop:
        import pyarrow.parquet as pq

        def read(f: str) -> dict[str, str]:
            schema = pq.read_schema(_shown(f))
            return {c: _arrow_type_name(schema.field(c).type) for c in wanted if schema.get_field_index(c) >= 0}
    else:
        jvm = spark.sparkContext._jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        hadoop = jvm.org.apache.parquet.hadoop

        def read(f: str) -> dict[str, str]:
            reader = hadoop.ParquetFileReader.open(hadoop.util.HadoopInputFile.fromPath(jvm.org.apache.hadoop.fs.Path(f), conf))
            try:
                schema = reader.getFooter().getFileMetaData().getSchema()
            finally:
                reader.close()
            out = {}
            for c in wanted:
                if schema.containsField(c):
                    t = schema.getType(c)
                    logical = t.getLogicalTypeAnnotation()
                    name = t.asPrimitiveType().getPrimitiveTypeName().name().lower() if t.isPrimitive() else "group"
                    out[c] = name + (f" ({logical})" if logical is not None else "")
            return out

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(read, files))


def check_input_files(files: list[str], columns: list[dict[str, str]], inp) -> None:
    """Before any work: the input's files (their used columns' types, as :func:`footer_columns`
    read them) agree on the columns the job uses. Files whose column has another type (int64
    here, string there) would fail the run after the other files were read; a pass-through column
    missing from some files would silently read as null. Both are a :class:`UserError` naming the
    column, the types and one file of each, unless ``input.merge_schema`` allows the missing column."""
    for col in dict.fromkeys([inp.id_col, inp.text_col, *inp.passthrough_cols]):
        kinds: dict[str, tuple[str, str]] = {}
        lacking = []
        for path, cols in zip(map(_shown, files), columns):
            if col not in cols:
                lacking.append(path)
                continue
            kinds.setdefault(cols[col], (cols[col], path))
        if not kinds:
            continue  # in no file: a partition column (day=...), Spark makes it
        if len(kinds) > 1:
            seen = "; ".join(f"{t} in {p}" for t, p in kinds.values())
            raise UserError(f"input: the files of {inp.path!r} disagree on column {col!r}: {seen}")
        if lacking and (col in (inp.id_col, inp.text_col) or not inp.merge_schema):
            hint = "" if col in (inp.id_col, inp.text_col) else "; set input.merge_schema: true to read it as null there"
            raise UserError(f"input: column {col!r} is missing from {len(lacking)} of {len(files)} files of "
                            f"{inp.path!r}, e.g. {lacking[0]}{hint}")


def plan_incremental(source: DataFrame, prev_docs: DataFrame, prev_ents: DataFrame):
    """What an incremental run tags and keeps, given the committed tables: ``(todo, kept_docs,
    kept_ents, retried)``. An input row is skipped when the output holds a document with its
    ``doc_id`` and ``text_sha256`` whose status is not ``error``; every other row is tagged, and
    the committed rows of the ids it tags are dropped (a changed document's old entities are
    replaced, never duplicated). Committed documents absent from the input are kept; rows with a
    null ``doc_id`` are always taken from the input (status ``error``, never tagged)."""
    done = prev_docs.where(F.col("status") != "error").select("doc_id", TEXT_SHA256)
    cond = (source["doc_id"] == done["doc_id"]) & source[TEXT_SHA256].eqNullSafe(done[TEXT_SHA256])
    todo = source.join(done, cond, "left_anti")
    ids = todo.select("doc_id").distinct()
    # rows with a null doc_id match nothing: they come again from the input, never kept twice
    kept_docs = prev_docs.where(F.col("doc_id").isNotNull()).join(ids, "doc_id", "left_anti")
    kept_ents = prev_ents.where(F.col("doc_id").isNotNull()).join(ids, "doc_id", "left_anti")
    retried = ids.join(prev_docs.where(F.col("status") == "error").select("doc_id"), "doc_id", "left_semi")
    return todo, kept_docs, kept_ents, retried


def tagged_schema(df: DataFrame) -> T.StructType:
    keep = [f for f in df.schema.fields if f.name != _TEXT]
    return T.StructType(keep + DOC_FIELDS + [T.StructField("entities", T.ArrayType(ENTITY_TYPE))])


def _executor_key() -> str:
    # Python workers are forked by one daemon per executor: host + daemon pid names the executor.
    return f"{socket.gethostname()}/{os.getppid()}"


def make_tag_fn(cfg_json: str, loads_acc, driver_cwd: str | None = None, report_to: tuple | None = None):
    """The ``mapInPandas`` function; everything heavy is imported and loaded inside the worker. The
    worker reports to the run's accumulator (successful attempts) and, as it goes, to the driver at
    ``report_to`` (:mod:`ner_udf.events`: every attempt, and the progress line)."""
    metrics = WorkerMetrics(loads_acc)

    def tag_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from . import model as model_mod
        from .preflight import find_model_dir
        from .tagger import Tagger

        task_start = time.perf_counter()
        cfg = Config.model_validate_json(cfg_json)
        device = task_device(cfg.model.device, TaskContext.get())
        worker = f"{socket.gethostname()}/{os.getpid()}"
        loaded = tagger = None
        ms_load = 0  # the model load, when this task did it
        for pdf in batches:
            if len(pdf) == 0:
                continue
            if tagger is None:  # loaded on the first rows: a task with nothing to tag loads nothing
                local = find_model_dir(cfg.model.name, model_roots(driver_cwd))
                model_cfg = cfg.model if local is None else cfg.model.model_copy(update={"name": str(local)})
                before, t_load = model_mod.LOAD_COUNT, time.perf_counter()
                loaded = model_mod.load_model(model_cfg, device=device)
                if model_mod.LOAD_COUNT != before:
                    ms_load = int((time.perf_counter() - t_load) * 1000)
                    ms = int((time.perf_counter() - task_start) * 1000)
                    metrics.model_loaded(_executor_key(), worker, ms, loaded.load_peak_rss_mb)
                    events.send(report_to, e=events.LOAD, executor=_executor_key(), worker=worker, ms=ms,
                                peak_mb=loaded.load_peak_rss_mb, python=sys.executable, model_path=loaded.path,
                                device=loaded.device)
                # every task: a worker that kept the model from an earlier run is recorded too
                metrics.worker_info(worker, python=sys.executable, model_path=loaded.path, device=loaded.device)
                tagger = Tagger.from_loaded(loaded, cfg.tagging)
            tokens_before = tagger.stats.tokens
            yield _tag_frame(pdf, tagger)
            events.send(report_to, e=events.BATCH, worker=worker, docs=len(pdf),
                        tokens=tagger.stats.tokens - tokens_before)
        if tagger is None:
            return
        peak, _ = model_mod.peak_rss_mb()  # since the load when it reset the high-water mark
        ms_task = int((time.perf_counter() - task_start) * 1000)
        ctx = TaskContext.get()
        # ms: this partition's tagging, without a model load: what shows a straggler task
        events.send(report_to, e=events.TASK, executor=_executor_key(), worker=worker, peak_mb=peak,
                    peak_reset=loaded.peak_reset, ms=ms_task - ms_load,
                    partition=None if ctx is None else ctx.partitionId(),
                    attempt=None if ctx is None else ctx.attemptNumber())
        metrics.task_done(_executor_key(), worker, os.getpid(), peak, loaded.peak_reset, tagger.stats, ms_task)

    return tag_batches


def _decode(raw) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return bytes(raw).decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 text: {exc}"


NULL_ID_ERROR = "doc_id is null: the row cannot be traced to a document, so it was not tagged"


def _tag_frame(pdf: pd.DataFrame, tagger) -> pd.DataFrame:
    decoded = [(None, NULL_ID_ERROR) if null else _decode(raw)
               for null, raw in zip(pdf["doc_id"].isna().tolist(), pdf[_TEXT].tolist())]
    texts = [t for t, _ in decoded]
    results = tagger.tag(texts)
    out = pdf.drop(columns=[_TEXT])
    status, n_chars, n_tokens, n_windows, n_entities, truncated, error, entities = ([] for _ in range(8))
    for (text, bad), res in zip(decoded, results):
        if bad is not None:
            res.status, res.error, res.n_chars = "error", bad, None
        ents = [
            {"entity": text[e.start : e.end], "label": e.label, "start": e.start, "end": e.end, "score": e.score}
            for e in res.entities
        ]
        status.append(res.status)
        n_chars.append(res.n_chars)
        n_tokens.append(res.n_tokens)
        n_windows.append(res.n_windows)
        n_entities.append(len(ents))
        truncated.append(res.truncated)
        error.append(res.error)
        entities.append(ents)
    out["status"] = status
    out["n_chars"] = pd.array(n_chars, dtype="Int32")
    out["n_tokens"] = pd.array(n_tokens, dtype="Int32")
    out["n_windows"] = pd.array(n_windows, dtype="Int32")
    out["n_entities"] = pd.array(n_entities, dtype="Int32")
    out["truncated"] = truncated
    out["error"] = error
    out["entities"] = entities
    return out


def tag(df: DataFrame, cfg: Config, loads_acc, layout: Layout,
        report_to: tuple | None = None) -> tuple[DataFrame, int | None]:
    """Tag every row, spread over the layout's partitions by :func:`spread` with its balance:
    ``(tagged, rows)``, ``rows`` the number of rows to tag when the spreading counted them (else None)."""
    df, rows = spread(df, layout.partitions, layout.balance)
    fn = make_tag_fn(cfg.model_dump_json(), loads_acc, os.getcwd(), report_to)
    return df.mapInPandas(fn, tagged_schema(df)), rows


_BUCKET = "__ner_bucket"
_KEY = "__ner_partition_key"


def spread(df: DataFrame, partitions: int, balance: str = "cost") -> tuple[DataFrame, int | None]:
    """``(df in partitions partitions, its rows)``; identical texts always meet in one partition,
    where the tagger tags them once. ``hash``: by a hash of the text, so a partition that draws a
    few of the longest documents runs long after the others; the rows are not counted (None).
    ``cost``: texts are hashed into buckets, one small aggregation measures each bucket's cost (its
    texts' UTF-8 bytes, a proxy for their tokens across scripts, plus one per row) and counts its
    rows, and :func:`ner_udf.balance.plan_buckets` places the buckets. That aggregation is a Spark
    job run now, before tagging: one more scan of the input, which also gives the row count."""
    if balance == "hash":
        return df.repartition(partitions, F.xxhash64(F.col(_TEXT))), None
    if balance != "cost":
        raise ValueError(f"balance: got {balance!r}, need cost or hash (auto is resolved by plan_layout)")
    n_buckets, plan, rows = balance_plan(df, partitions)
    keys = partition_keys(partitions)
    # repartition(P, key) sends a row to pmod(hash(key), P): a key chosen per partition puts each
    # bucket exactly where the plan says
    lookup = F.expr(f"array({','.join(str(keys[p]) for p in plan)})")  # one literal, parsed once
    out = df.withColumn(_KEY, F.element_at(lookup, _bucket(n_buckets) + 1)).repartition(partitions, F.col(_KEY))
    return out.drop(_KEY), rows


def _bucket(n_buckets: int):
    """A text's bucket, 0..n_buckets-1: the one expression both the plan and the move use."""
    return F.pmod(F.xxhash64(F.col(_TEXT)), F.lit(n_buckets)).cast("int")


def bucket_costs(df: DataFrame, n_buckets: int) -> tuple[dict[int, int], int]:
    """``({bucket: cost} of the non-empty buckets, rows)`` (see :func:`spread`): a bucket's cost is
    its texts' UTF-8 bytes plus one per row (a null or empty text costs 1); ``rows`` counts them all."""
    cost = F.coalesce(F.octet_length(F.col(_TEXT)), F.lit(0)).cast("long") + 1  # UTF-8 bytes
    found = (df.select(_bucket(n_buckets).alias(_BUCKET), cost.alias("cost")).groupBy(_BUCKET)
             .agg(F.sum("cost").alias("cost"), F.count("*").alias("rows")).collect())
    return {int(r[_BUCKET]): int(r["cost"]) for r in found}, sum(int(r["rows"]) for r in found)


def balance_plan(df: DataFrame, partitions: int) -> tuple[int, list[int], int]:
    """``(buckets, partition of each bucket, rows)`` for ``df``'s texts: what ``spread(df,
    partitions)`` does with balance ``cost``."""
    from .balance import bucket_count, plan_buckets

    n_buckets = bucket_count(partitions)
    costs, rows = bucket_costs(df, n_buckets)
    return n_buckets, plan_buckets(costs, n_buckets, partitions), rows


def partition_keys(partitions: int) -> list[int]:
    """For each partition j < ``partitions``, the smallest int k >= 0 with pmod(hash(k), partitions)
    == j: Spark's hash partitioning (``F.hash``: Murmur3 x86_32 of the int, seed 42) sends a row
    keyed k there. Computed here, without a Spark job (``tests/test_balance.py`` checks it against
    Spark's own hash)."""
    from .balance import spark_int_hash

    keys: dict[int, int] = {}
    k = 0
    while len(keys) < partitions:
        keys.setdefault(spark_int_hash(k) % partitions, k)  # Python's % of a positive modulus is pmod
        k += 1
    return [keys[p] for p in range(partitions)]


def read_table(spark: SparkSession, path: str) -> DataFrame:
    """A committed (or staged) table, its partition columns read as written (no type inference:
    a partition value like ``007`` stays a string, as the input gave it)."""
    key = "spark.sql.sources.partitionColumnTypeInference.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "false")
    try:
        return spark.read.parquet(path)
    finally:
        spark.conf.set(key, before)


def append_kept(new: DataFrame, kept: DataFrame, name: str, output: str) -> DataFrame:
    """``new`` plus the committed rows ``kept``, which must have the same columns."""
    if sorted(kept.columns) != sorted(new.columns):
        raise UserError(
            f"output.mode: incremental: the committed {name}/ in {output!r} has columns {', '.join(kept.columns)}, "
            f"this run writes {', '.join(new.columns)}; use --set output.mode=overwrite")
    return new.unionByName(kept.select(*[F.col(f.name).cast(f.dataType) for f in new.schema]))


def entities_table(tagged: DataFrame, passthrough: tuple[str, ...], run_id: str) -> DataFrame:
    e = tagged.select("doc_id", *passthrough, F.explode("entities").alias("e"))
    return e.select(
        "doc_id", "e.entity", "e.label", "e.start", "e.end", "e.score", F.lit(run_id).alias(RUN_ID), *passthrough
    )


def documents_table(tagged: DataFrame, passthrough: tuple[str, ...], run_id: str) -> DataFrame:
    return tagged.select("doc_id", *[f.name for f in DOC_FIELDS], TEXT_SHA256, F.lit(run_id).alias(RUN_ID),
                         *passthrough)


def summarize(tagged: DataFrame) -> tuple[dict, int]:
    """The manifest's ``counts`` (documents by status, entities by label, tokens and windows) and
    the number of rows with a null ``doc_id``: two small Spark jobs over the persisted tagging."""
    rows = tagged.groupBy("status").agg(
        F.count("*").alias("n"), F.sum("n_tokens").alias("t"), F.sum("n_windows").alias("w"),
        F.count(F.when(F.col("doc_id").isNull(), 1)).alias("null_ids"),
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
    }, int(sum(r["null_ids"] for r in rows))


def status_counts(tagged: DataFrame, exclude_ids: DataFrame) -> dict:
    """Documents by status among the tagged rows whose ``doc_id`` is not in ``exclude_ids``."""
    rows = tagged.join(exclude_ids, "doc_id", "left_anti").groupBy("status").count().collect()
    return {r["status"]: int(r["count"]) for r in rows}


def first_error(tagged: DataFrame) -> tuple[object, str] | None:
    """(doc_id, error) of one document that ended with status ``error``."""
    row = tagged.where(F.col("status") == "error").select("doc_id", "error").first()
    return None if row is None else (row["doc_id"], row["error"])

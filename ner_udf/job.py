"""One run of the job, top to bottom: preflight -> session -> model check -> read (or, with
--dry-run, the plan) -> lock the output and watch the run -> what to tag -> tag -> write -> check
-> commit -> report."""

from __future__ import annotations

import datetime as dt
import sys
import time

from pyspark.sql import functions as F

from . import spark as glue
from .api import new_run_id, tag_prepared
from .aggregation import entity_labels
from .config import Config, config_from
from .errors import RunFailed, UserError, one_line
from .manifest import CountsParam, Manifest, identity_changes, model_identity, throughput, worker_sections
from .monitor import RunMonitor
from .preflight import check_model, preload
from .store import TABLES, OutputStore


def run(cfg: Config, progress_every_s: float | None = 10.0, verbose: bool = False,
        dry_run: bool = False) -> Manifest | dict:
    """Run the job and return the committed run's manifest; a progress line goes to stderr every
    ``progress_every_s`` seconds (None: never); Spark logs at WARN unless ``verbose``. With
    ``dry_run`` it stops after the checks and returns the plan (:func:`plan`), writing nothing.

    Raises :class:`UserError` before any work when the configuration, the input, the model or the
    output cannot be used (or another live run is writing the output), :class:`RunFailed` when too
    many documents failed; in every failure the previous output is left as it was."""
    # preflight: what can be checked before Spark starts; the model check's imports (torch,
    # transformers: seconds) load in the background while the JVM starts
    if not cfg.output.path:
        raise UserError("output.path: not set; pass --output PATH or set output.path in the config")
    preloaded = preload(cfg.model.name)
    started = dt.datetime.now(dt.timezone.utc)
    t_run = time.perf_counter()
    run_id = new_run_id(started)

    # session
    spark = glue.get_session(cfg)
    if not verbose:
        spark.sparkContext.setLogLevel("WARN")
    glue.ship_package(spark)

    # the model: a local directory, one shipped with --archives (each executor finds its own copy:
    # spark.model_roots) or a hub id; checked once the preload is done: transformers 5's lazy module
    # is not thread-safe, an import of it here while the preload imports it fails
    preloaded.join()
    model_info = check_model(cfg, glue.model_roots())

    # read (lazily: only the schema is checked here)
    source = glue.read_input(spark, cfg)
    if dry_run:
        return plan(spark, cfg, model_info, source, run_id, started.isoformat())

    # lock the output, repair what an interrupted run left, stage this run's tables; watch the
    # run's Spark jobs (progress line, workers' reports, faults)
    with OutputStore.for_output(spark, cfg.output, run_id, started.isoformat()).open() as store, \
            RunMonitor(spark, run_id, progress_every_s) as monitor:
        # what to tag: every input row, or (incremental) the rows the output lacks
        todo, previous = source, None
        if cfg.output.mode == "incremental" and (previous := store.previous_manifest()) is not None:
            check_identity(previous, model_identity(model_info, cfg), cfg.output.path)
            prev_docs, prev_ents = (glue.read_table(spark, store.table(t)) for t in ("documents", "entities"))
            todo, kept_docs, kept_ents, retried = glue.plan_incremental(source, prev_docs, prev_ents)

        # tag
        acc = spark.sparkContext.accumulator({}, CountsParam())
        layout = planned_layout(spark, cfg)  # the task slots as the session has them now, read once
        t0 = time.perf_counter()
        tagged, entities, documents, to_tag = tag_prepared(todo, cfg, acc, layout, run_id, monitor.address)
        # how many rows this run tags (the progress line's total): the cost balance counted them
        # while it measured the texts; without it, a plain first run's count is cheap (Parquet
        # answers it from its footers), other runs learn it after writing
        if to_tag is None and previous is None and not cfg.input.where:
            to_tag = source.count()
        monitor.documents_total = to_tag
        read = to_tag if previous is None else None  # a first run tags every input row
        try:
            tables = {"entities": entities, "documents": documents}
            if previous is not None:  # the committed rows of documents this run does not tag
                for name, kept in (("entities", kept_ents), ("documents", kept_docs)):
                    tables[name] = glue.append_kept(tables[name], kept, name, cfg.output.path)

            # write: the first action reads, tags and writes entities/
            phases = {}
            for name, frame in tables.items():
                monitor.phase("tagging and writing entities" if name == "entities" else f"writing {name}")
                t = time.perf_counter()
                frame.write.mode("overwrite").partitionBy(*cfg.output.partition_by).parquet(store.staging(name))
                phases["tag_and_write_entities" if name == "entities" else f"write_{name}"] = round(
                    time.perf_counter() - t, 3)
            t = time.perf_counter()
            monitor.phase("counting")
            counts, null_ids = glue.summarize(tagged)
            read = source.count() if read is None else read
            counts["input"] = {
                "read": read,
                "skipped": read - counts["documents"]["total"],
                "tagged": counts["documents"].get("ok", 0) + counts["documents"].get("error", 0),
                "retried": retried.count() if previous is not None else 0,
                "null_ids": null_ids,  # status error, not tagged
            }
            counts["table"] = {name: glue.read_table(spark, store.staging(name)).count() for name in tables}
            phases["count"] = round(time.perf_counter() - t, 3)
            phases["before_tagging"] = round(t0 - t_run, 3)
            seconds = time.perf_counter() - t0

            # check
            check_errors(counts["documents"] if previous is None else glue.status_counts(tagged, retried),
                         tagged, cfg.tagging.max_error_fraction, counts["input"]["null_ids"])

            manifest = Manifest(
                run_id=run_id,
                started_at=started.isoformat(),
                finished_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                model={k: (v if v is None or isinstance(v, (str, list)) else str(v)) for k, v in model_info.items()},
                model_identity=model_identity(model_info, cfg),  # the weights' sha256 is ready by now
                config=cfg.to_dict(),
                counts=counts,
                **worker_sections(acc.value, monitor.records()),
                throughput=throughput(seconds, phases, counts, acc.value, monitor.records()),
                spark={"version": spark.version, "master": spark.sparkContext.master,
                       "app_id": spark.sparkContext.applicationId, "task_slots": layout.task_slots,
                       "partitions": layout.partitions,
                       "balance": layout.balance,  # tagging.balance as the tagging ran it (auto resolved)
                       "warning": layout.warning,  # why the default partitions may be too few, or None
                       # the config's spark.conf keys as the session has them (spark-submit's win)
                       "conf": {k: spark.conf.get(k, None) for k in cfg.spark.conf}},
                faults=monitor.faults(),
                output={"path": cfg.output.path, "mode": cfg.output.mode, "tables": list(TABLES)},
            )
            # commit
            monitor.phase("committing")
            store.commit(manifest.to_json())

            # report: the output is committed, so a report that cannot be written is only a warning
            if cfg.report.enabled:
                monitor.phase("writing the report")
                write_report(spark, store, cfg, manifest.to_dict())
        finally:
            tagged.unpersist()
    return manifest


def write_report(spark, store, cfg: Config, manifest: dict) -> str | None:
    """``OUTPUT/_report/`` for the committed output (:mod:`ner_udf.report`); its index page, or None
    (with a warning on stderr) when it could not be written."""
    from . import report
    from .store import run_history

    try:
        try:
            history = run_history(cfg.output.path)
        except Exception:  # noqa: BLE001 - a file system pyarrow cannot open: this run alone
            history = [manifest]
        by = cfg.report.by or next(iter(cfg.input.passthrough_cols), None)
        return report.write(spark, store.fs, store.root, {t: store.table(t) for t in TABLES}, manifest, history, by)
    except Exception as exc:  # noqa: BLE001
        print(f"ner-tag: warning: the run is committed, but its report was not written: {one_line(exc)}",
              file=sys.stderr, flush=True)
        return None


def report_only(output: str, by: str | None = None, spark_conf: dict | None = None) -> str | None:
    """``ner-tag report OUTPUT``: the report of the run committed to ``output``, on a local session
    (the committed run's settings: its config's pass-through columns and report.by)."""
    cfg = config_from(None, {"output.path": output})
    spark = glue.get_session(cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"conf": spark_conf or {}})}))
    spark.sparkContext.setLogLevel("WARN")
    store = OutputStore.for_output(spark, cfg.output, "report", "")
    manifest = store.previous_manifest()
    if manifest is None:
        raise UserError(f"OUTPUT: {output!r} holds no committed run (no manifest.json)")
    try:
        committed = Config.model_validate(manifest["config"])
    except ValueError:  # written by another version: the defaults (no pass-through columns known)
        committed = cfg
    passthrough = committed.input.passthrough_cols
    if by is not None and by not in passthrough:
        raise UserError(f"--by: got {by!r}, which is not a pass-through column of this output; valid: "
                        f"{', '.join(passthrough) or '(none)'}")
    cfg = committed.model_copy(update={
        "output": committed.output.model_copy(update={"path": output}),
        "report": committed.report.model_copy(update={"by": by or committed.report.by})})
    return write_report(spark, store, cfg, manifest)


def plan(spark, cfg: Config, model_info: dict, source, run_id: str, started_at: str) -> dict:
    """What a run would do (``--dry-run``), found without writing anything: input rows, documents to
    tag (incremental: those the output lacks), partitions, the model, how it tags (aggregation,
    balance as this session runs it, precision, device, backend), the output and its state.
    Raises the :class:`UserError` the run would raise."""
    store = OutputStore.for_output(spark, cfg.output, run_id, started_at)
    state = store.inspect()
    read = source.count()
    to_tag = read
    layout = planned_layout(spark, cfg)
    if cfg.output.mode == "incremental" and (previous := store.previous_manifest()) is not None:
        check_identity(previous, model_identity(model_info, cfg), cfg.output.path)
        prev_docs, prev_ents = (glue.read_table(spark, store.table(t)) for t in ("documents", "entities"))
        to_tag = glue.plan_incremental(source, prev_docs, prev_ents)[0].count()
    return {
        "input": {"path": cfg.input.path, "rows": read, "to_tag": to_tag, "where": cfg.input.where},
        "partitions": layout.partitions,
        "spark": {"master": spark.sparkContext.master, "task_slots": layout.task_slots, "warning": layout.warning},
        "model": {**{k: model_info.get(k) for k in ("name", "path", "resolved_revision")},
                  "entity_labels": entity_labels(model_info["labels"], cfg.tagging.aggregation)},
        "tagging": {"aggregation": cfg.tagging.aggregation,
                    "balance": layout.balance,  # auto resolved
                    "precision": cfg.model.precision, "device": cfg.model.device, "backend": cfg.model.backend},
        "output": {"path": cfg.output.path, "mode": cfg.output.mode, "partition_by": list(cfg.output.partition_by),
                   **state},
    }


def planned_layout(spark, cfg: Config) -> glue.Layout:
    """:func:`spark.plan_layout`, its warning (if any) on stderr."""
    layout = glue.plan_layout(spark, cfg)
    if layout.warning:
        print(f"ner-tag: warning: {layout.warning}", file=sys.stderr, flush=True)
    return layout


def check_identity(previous: dict, identity: dict, path: str) -> None:
    """An incremental run extends an output only if the same model and settings wrote it."""
    old = previous.get("model_identity")
    if old is None:
        raise UserError(f"output.mode: incremental needs an output that records its model identity; {path!r} was "
                        "written by an older version: run once with --set output.mode=overwrite")
    changes = identity_changes(old, identity)
    if changes:
        raise UserError(f"output.mode: incremental: {path!r} was tagged by another model or settings "
                        f"({'; '.join(changes)}); to re-tag everything use --set output.mode=overwrite")


def check_errors(docs: dict, tagged, max_fraction: float, null_ids: int = 0) -> None:
    """Fail the run when more than ``max_fraction`` of the documents that reached the tagger (status
    ``ok`` or ``error`` in ``docs``; null and empty texts do not count) ended with ``error``. An
    incremental run leaves out the documents it retried: one that fails again does not make the
    output worse, and must not fail every later run. Rows with a null ``doc_id`` (``error``, never
    tagged: an input problem, counted in ``counts.input.null_ids``) do not count either."""
    errors = docs.get("error", 0) - null_ids
    considered = errors + docs.get("ok", 0)
    if errors > 0 and errors > max_fraction * considered:
        first = glue.first_error(tagged.where(F.col("doc_id").isNotNull()))
        where = f"doc_id {first[0]!r}: {one_line(first[1] or '')}" if first else "unknown"
        raise RunFailed(f"{errors} of {considered} documents failed (more than tagging.max_error_fraction="
                        f"{max_fraction:g}); first error, {where}")

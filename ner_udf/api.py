"""The DataFrame API: tag a DataFrame you already hold, on your own SparkSession.

    from ner_udf import tag_entities

    entities, documents = tag_entities(df, id_col="doc_id", text_col="text",
                                       config="conf/local.yaml", **{"tagging.aggregation": "simple"})

Both results are lazy and have the job's schemas (README "Output"), built by the same code as the
job's tables (:mod:`ner_udf.spark`). What the job adds around them (the output store's commit and
lock, incremental runs, the manifest, the failure threshold) belongs to writing an output, not to
tagging a DataFrame.
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from .config import Config, config_from
from .errors import UserError


def new_run_id(started: dt.datetime | None = None) -> str:
    """A run's id: its UTC start time and 8 random hex digits (sorts by time)."""
    started = started or dt.datetime.now(dt.timezone.utc)
    return started.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def tag_entities(df, *, id_col: str, text_col: str, config: str | Path | Mapping[str, Any] | Config | None = None,
                 **overrides: Any):
    """Tag the texts of ``df`` and return ``(entities, documents)``, two lazy DataFrames on
    ``df``'s SparkSession.

    - ``id_col`` / ``text_col``: the id and text columns (``input.id_col`` / ``input.text_col``);
      the tables call the id ``doc_id`` and keep its type.
    - ``config``: a YAML path, a mapping shaped like the YAML file, or a :class:`Config`; its
      ``input.path``/``output`` keys are not used. ``overrides``: dotted keys as ``--set`` takes
      them, e.g. ``**{"model.name": "/models/ner", "tagging.labels": ["PER"]}``.
    - ``input.passthrough_cols`` are copied into both tables, ``input.where`` filters the rows,
      ``spark.partitions`` (default: 4 per task slot) sets how many tasks tag.

    Checked at once (a :class:`UserError` naming the key): the config, the model (its files, head
    and labels, as the job's driver does), the columns. Nothing is tagged until an action (with
    ``tagging.balance: cost``, which the default ``auto`` is unless the session is a local master
    with one task slot, one small Spark job measures the texts' sizes at once, to plan the
    partitions; ``hash`` runs none). Every
    row of ``df`` comes out as one ``documents`` row (status ``ok``, ``empty``, ``null`` or
    ``error`` with its message); ``entities`` has one row per entity. Both frames come from one
    tagging: it is persisted (memory and disk) when first computed, so using both tags once;
    ``documents.sparkSession.catalog.clearCache()`` or the session's end frees it."""
    from . import spark as glue
    from .manifest import CountsParam
    from .preflight import check_model

    if not isinstance(id_col, str) or not isinstance(text_col, str):
        raise UserError("tag_entities: id_col and text_col name the id and text columns, e.g. id_col='doc_id'")
    cfg = config_from(config, {**overrides, "input.id_col": id_col, "input.text_col": text_col})
    spark = df.sparkSession
    check_model(cfg, glue.model_roots())
    glue.ship_package(spark)
    source = glue.prepare(df, cfg)
    acc = spark.sparkContext.accumulator({}, CountsParam())  # the workers' counters: read by no one here
    layout = glue.plan_layout(spark, cfg)
    if layout.warning:
        warnings.warn(f"tag_entities: {layout.warning}", stacklevel=2)
    tagging = tag_prepared(source, cfg, acc, layout, new_run_id())
    return tagging.entities, tagging.documents


class Tagging(NamedTuple):
    """What :func:`tag_prepared` returns."""

    tagged: Any  # the tagged rows (``spark.tagged_schema``), persisted: both tables come from one tagging
    entities: Any  # the entities table (``spark.entities_table``)
    documents: Any  # the documents table (``spark.documents_table``)
    rows: int | None  # rows to tag, counted by the cost balance's scan (None when the balance run is hash)


def tag_prepared(source, cfg: Config, acc, layout, run_id: str, report_to: tuple | None = None) -> Tagging:
    """The tagging under :func:`tag_entities` and the job, for a prepared frame (``spark.prepare``),
    spread as ``layout`` (``spark.plan_layout``) says; the workers report to ``acc`` and, if given,
    to ``report_to``."""
    from pyspark import StorageLevel

    from . import spark as glue

    tagged, rows = glue.tag(source, cfg, acc, layout, report_to)
    tagged = tagged.persist(StorageLevel.MEMORY_AND_DISK)
    passthrough = cfg.input.passthrough_cols
    return Tagging(tagged, glue.entities_table(tagged, passthrough, run_id),
                   glue.documents_table(tagged, passthrough, run_id), rows)

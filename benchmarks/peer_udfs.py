"""The two peers our job is compared with: the common recipes for a Hugging Face NER model in Spark.

* ``pipeline_row_udf``: a scalar pandas UDF around ``transformers.pipeline("token-classification")``,
  ``pipe(texts, batch_size=b)`` on each Arrow batch of rows (b = 1 is the classic one call per row),
  returning ``array<struct>`` like our entities;
* ``predict_batch_udf``: ``pyspark.ml.functions.predict_batch_udf`` around the same pipeline with
  ``batch_size=b``; it cannot return ``array<struct>``, so each row's entities come back as JSON.

Each is benchmarked at its best of the batch sizes {1, 8, 32} (``run.py``'s calibration) and at
fp32 and bf16 (the pipeline's ``dtype``, what any user can turn on). Both load the pipeline once per
Python worker process and keep it in a module-level cache (this module is imported by the workers,
via PYTHONPATH). Both use the same stride as our job, so long documents are tagged whole.

``run_peer`` is what ``run.py`` runs in a fresh process (fresh JVM and workers, as our job gets),
printing one ``BENCH_RESULT {json}`` line.
"""

import json
import os
import time

import pandas as pd  # at module level: pandas_udf resolves the type hints below

_PIPES: dict = {}
ENTITY_DDL = "array<struct<entity_group:string,score:float,word:string,start:int,end:int>>"


def get_pipe(model_dir: str, stride: int, precision: str = "fp32"):
    """The worker's pipeline, created on first use (torch threads = OMP_NUM_THREADS = spark.task.cpus)."""
    key = (model_dir, stride, precision)
    pipe = _PIPES.get(key)
    if pipe is None:
        import torch
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        pipe = pipeline("token-classification", model=model_dir, aggregation_strategy="simple",
                        device="cpu", stride=stride, dtype=dtype)
        _PIPES[key] = pipe
    return pipe


def _entity(e: dict) -> dict:
    return {"entity_group": e["entity_group"], "score": float(e["score"]), "word": e["word"],
            "start": int(e["start"]), "end": int(e["end"])}


def _tag(pipe, texts, batch_size: int) -> list[list[dict]]:
    texts = [str(t) if t else "" for t in texts]
    found = iter(pipe([t for t in texts if t], batch_size=batch_size) if any(texts) else [])
    return [[_entity(e) for e in next(found)] if t else [] for t in texts]


def row_udf(model_dir: str, stride: int, precision: str, batch_size: int):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(ENTITY_DDL)
    def tag_entities(texts: pd.Series) -> pd.Series:
        return pd.Series(_tag(get_pipe(model_dir, stride, precision), texts, batch_size))

    return tag_entities


def batch_udf(model_dir: str, stride: int, precision: str, batch_size: int):
    import numpy as np
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import StringType

    def make_predict_fn():
        pipe = get_pipe(model_dir, stride, precision)

        def predict(texts: np.ndarray) -> np.ndarray:
            return np.array([json.dumps(e) for e in _tag(pipe, texts, batch_size)], dtype=object)

        return predict

    return predict_batch_udf(make_predict_fn, return_type=StringType(), batch_size=batch_size)


def run_peer(variant: str, input_path: str, model_dir: str, stride: int, master: str, conf: dict,
             partitions: int, precision: str = "fp32", batch_sizes: list | None = None) -> dict:
    """Read the corpus and tag it with one peer at each batch size in turn, each forced with the
    ``noop`` writer; with several batch sizes a warm-up pass first loads the pipelines, so that
    they are compared warm."""
    from pyspark.sql import SparkSession

    batch_sizes = batch_sizes or [1]
    builder = SparkSession.builder.appName(f"bench-{variant}").master(master)
    for k, v in conf.items():
        builder = builder.config(k, str(v))
    spark = builder.getOrCreate()
    df = spark.read.parquet(input_path).repartition(partitions)  # as the job: round-robin partitions
    make = row_udf if variant == "pipeline_row_udf" else batch_udf

    def run(batch_size: int, frame) -> float:
        t = time.perf_counter()
        frame.select("doc_id", make(model_dir, stride, precision, batch_size)("text").alias("entities")) \
            .write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    if len(batch_sizes) > 1:
        run(batch_sizes[0], df.limit(2 * partitions).repartition(partitions))
    seconds = {str(b): round(run(b, df), 3) for b in batch_sizes}
    return {"variant": variant, "precision": precision, "seconds_by_batch_size": seconds, "partitions": partitions,
            "master": spark.sparkContext.master, "task_cpus": spark.conf.get("spark.task.cpus", "1")}

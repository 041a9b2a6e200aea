"""The two peers our job is compared with: the common recipes for a Hugging Face NER model in Spark.

* ``pipeline_row_udf``: a scalar pandas UDF calling ``transformers.pipeline("token-classification")``
  once per row (``[pipe(t) for t in texts]``), returning ``array<struct>`` like our entities;
* ``predict_batch_udf``: ``pyspark.ml.functions.predict_batch_udf`` around the same pipeline, called
  on lists of 32 texts with ``batch_size=32``; predict_batch_udf cannot return ``array<struct>``,
  so each row's entities come back as one JSON string.

Both load the pipeline once per Python worker process and keep it in a module-level cache (this
module is imported by the workers, via PYTHONPATH, so the cache survives between tasks). Both use
the same stride as our job, so documents longer than one window are tagged whole, never truncated.

``run_peer`` is what ``run.py`` runs in a fresh process per peer (fresh JVM and workers, exactly as
our job gets), printing one ``BENCH_RESULT {json}`` line.
"""

import json
import os
import time

import pandas as pd  # at module level: pandas_udf resolves the type hints below

_PIPES: dict = {}
ENTITY_DDL = "array<struct<entity_group:string,score:float,word:string,start:int,end:int>>"


def get_pipe(model_dir: str, stride: int):
    """The worker's pipeline, created on first use (torch threads = OMP_NUM_THREADS = spark.task.cpus)."""
    key = (model_dir, stride)
    pipe = _PIPES.get(key)
    if pipe is None:
        import torch
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
        pipe = pipeline("token-classification", model=model_dir, aggregation_strategy="simple",
                        device="cpu", stride=stride)
        _PIPES[key] = pipe
        loads_log = os.environ.get("BENCH_PIPELINE_LOADS")
        if loads_log:  # one line per pipeline load: proves the per-worker cache works
            with open(loads_log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
    return pipe


def _entity(e: dict) -> dict:
    return {"entity_group": e["entity_group"], "score": float(e["score"]), "word": e["word"],
            "start": int(e["start"]), "end": int(e["end"])}


def row_udf(model_dir: str, stride: int):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(ENTITY_DDL)
    def tag_entities(texts: pd.Series) -> pd.Series:
        pipe = get_pipe(model_dir, stride)
        return pd.Series([[_entity(e) for e in pipe(t)] if t else [] for t in texts])

    return tag_entities


def batch_udf(model_dir: str, stride: int, batch_size: int = 32):
    import numpy as np
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import StringType

    def make_predict_fn():
        pipe = get_pipe(model_dir, stride)

        def predict(texts: np.ndarray) -> np.ndarray:
            out = pipe([str(t) for t in texts], batch_size=batch_size)
            return np.array([json.dumps([_entity(e) for e in ents]) for ents in out], dtype=object)

        return predict

    return predict_batch_udf(make_predict_fn, return_type=StringType(), batch_size=batch_size)


def run_peer(variant: str, input_path: str, model_dir: str, stride: int, master: str, conf: dict,
             partitions: int, batch_size: int = 32) -> dict:
    """Read the corpus, tag it with one peer, force execution with the ``noop`` writer."""
    t0 = time.perf_counter()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(f"bench-{variant}").master(master)
    for k, v in conf.items():
        builder = builder.config(k, str(v))
    spark = builder.getOrCreate()
    t_session = time.perf_counter()
    df = spark.read.parquet(input_path).repartition(partitions)  # as the job: round-robin partitions
    udf = row_udf(model_dir, stride) if variant == "pipeline_row_udf" else batch_udf(model_dir, stride, batch_size)
    tagged = df.select("doc_id", udf("text").alias("entities"))
    t1 = time.perf_counter()
    tagged.write.format("noop").mode("overwrite").save()
    t2 = time.perf_counter()
    return {"variant": variant, "session_s": round(t_session - t0, 3), "action_s": round(t2 - t1, 3),
            "in_process_s": round(t2 - t0, 3), "partitions": partitions, "master": spark.sparkContext.master,
            "task_cpus": spark.conf.get("spark.task.cpus", "1")}

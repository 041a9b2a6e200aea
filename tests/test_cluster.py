"""Multi-executor layer: spark-submit's output on failure (one load per executor on
local-cluster[2,1,2048], two executor JVMs, is shown by test_faults.py's clean run)."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from submit import submit
from texts import corpus
from tiny_model import broken_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", ["model cannot load", "missing column", "session cannot start"])
def test_spark_submit_output_ends_with_the_one_line(tiny_model_dir, tmp_path, case):
    """spark-submit merges the driver's stderr into its stdout, after Spark's own log lines: a
    failure's one line must still be the last line of the combined output, with its exit code."""
    pq.write_table(pa.table({"doc_id": pa.array(range(20), pa.int64()), "text": corpus(20, seed=81)}),
                   tmp_path / "in.parquet")
    model = tmp_path / "model"
    extra, rc, line = [], 1, "ner-tag: run failed, nothing committed: model.name: "
    if case == "model cannot load":  # only the executors' load finds out
        broken_model(tiny_model_dir, model, "shapes")
    else:
        shutil.copytree(tiny_model_dir, model)
    if case == "missing column":
        extra, rc, line = ["--text-col", "body"], 2, "ner-tag: error: input: column(s) body not in "
    elif case == "session cannot start":  # the SparkContext fails in its constructor: Spark logs at INFO until then
        extra, rc, line = (["--set", "spark.conf={spark.task.cpus: '8'}"], 2,
                           "ner-tag: error: spark: cannot start a session: org.apache.spark.SparkException: ")
    r = submit("local[2]", ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
                            "--model", str(model), *extra])
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert r.returncode == rc, r.stdout[-3000:]
    assert lines[-1].startswith(line), "\n".join(lines[-40:])
    assert not (tmp_path / "out" / "entities").exists()

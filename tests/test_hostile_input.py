"""Inputs that used to give wrong output with exit 0, or a failure line naming a stack frame."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ner_udf.cli import main
from ner_udf.spark import NULL_ID_ERROR
from texts import corpus

pytestmark = pytest.mark.spark
SPARK = ["--set", "spark.master=local[2]", "--set", "spark.conf={spark.driver.host: 127.0.0.1, spark.ui.enabled: 'false', "
         "spark.ui.showConsoleProgress: 'false'}"]


def run(inp, out, model, *extra) -> int:
    return main(["--input", str(inp), "--output", str(out), "--model", str(model), *SPARK, *extra])


def test_null_doc_ids_get_an_error_row_and_no_entities(tiny_model_dir, tmp_path):
    """A null doc_id cannot be traced to a document: its row is kept (every input row has exactly one
    documents row) with status error and why, it is not tagged, it has no entity rows, it is counted,
    and it does not count against tagging.max_error_fraction (4 in 40 here, far above 1%)."""
    texts = corpus(40, seed=161)
    ids = [None if i % 13 == 0 else i for i in range(40)]  # rows 0, 13, 26, 39
    pq.write_table(pa.table({"doc_id": pa.array(ids, pa.int64()), "text": texts}), tmp_path / "in.parquet")
    for night in (1, 2):  # the second, incremental run must not keep the first run's null rows too
        assert run(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir, "--set", "output.mode=incremental") == 0
        docs = pq.read_table(tmp_path / "o" / "documents").to_pylist()
        assert len(docs) == 40
        nulls = [d for d in docs if d["doc_id"] is None]
        assert len(nulls) == 4 and all(d["status"] == "error" and d["error"] == NULL_ID_ERROR and d["n_tokens"] == 0
                                       for d in nulls), nulls
        assert {d["status"] for d in docs if d["doc_id"] is not None} == {"ok"}
        ents = pq.read_table(tmp_path / "o" / "entities").to_pylist()
        assert ents and all(e["doc_id"] is not None for e in ents)
        manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
        assert manifest["counts"]["input"]["null_ids"] == 4
        assert manifest["counts"]["input"]["skipped"] == (0 if night == 1 else 36)


def test_files_that_disagree_on_a_column_type_are_refused_before_any_work(tiny_model_dir, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    texts = corpus(20, seed=163)
    pq.write_table(pa.table({"doc_id": pa.array(range(10), pa.int64()), "text": texts[:10]}), inp / "part-a.parquet")
    pq.write_table(pa.table({"doc_id": [str(i) for i in range(10, 20)], "text": texts[10:]}), inp / "part-b.parquet")
    assert run(inp, tmp_path / "o", tiny_model_dir) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"ner-tag: error: input: the files of {str(inp)!r} disagree on column 'doc_id': "
                    f"int64 in {inp}/part-a.parquet; string in {inp}/part-b.parquet"), line
    assert not (tmp_path / "o").exists()


def test_a_pass_through_column_missing_from_some_files_is_refused_unless_merge_schema(tiny_model_dir, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    texts = corpus(20, seed=165)
    pq.write_table(pa.table({"doc_id": pa.array(range(10), pa.int64()), "text": texts[:10], "lang": ["en"] * 10}),
                   inp / "part-a.parquet")
    pq.write_table(pa.table({"doc_id": pa.array(range(10, 20), pa.int64()), "text": texts[10:]}), inp / "part-b.parquet")
    assert run(inp, tmp_path / "o", tiny_model_dir, "--set", "input.passthrough_cols=[lang]") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"ner-tag: error: input: column 'lang' is missing from 1 of 2 files of {str(inp)!r}, e.g. "
                    f"{inp}/part-b.parquet; set input.merge_schema: true to read it as null there"), line
    assert run(inp, tmp_path / "o", tiny_model_dir, "--set", "input.passthrough_cols=[lang]",
               "--set", "input.merge_schema=true") == 0
    docs = pq.read_table(tmp_path / "o" / "documents").select(["doc_id", "lang"]).to_pylist()
    assert sorted((d["doc_id"], d["lang"]) for d in docs) == [(i, "en" if i < 10 else None) for i in range(20)]


def test_spark_errors_are_named_by_their_error_class_not_a_stack_frame():
    """What a failed read on another file system ends with (there the footers are not checked)."""
    from ner_udf.errors import failure_reason

    msg = ("An error occurred while calling o123.parquet.\n: org.apache.spark.SparkException: Job aborted due to stage "
           "failure: Task 0 in stage 1.0 failed 1 times, most recent failure: Lost task 0.0 in stage 1.0 (TID 1) "
           "(127.0.0.1 executor driver): org.apache.spark.SparkException: [FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_"
           "MISMATCH] Error while reading file s3a://lake/part-b.parquet. Data type mismatches when reading Parquet "
           "column [doc_id].\n\tat org.apache.spark.util.SparkErrorUtils.tryWithSafeFinally$(SparkErrorUtils.scala:83)\n"
           "Caused by: org.apache.spark.sql.execution.datasources.SchemaColumnConvertNotSupportedException: column: "
           "[doc_id]\n\tat org.apache.parquet.X.y(X.java:1)\n")
    assert failure_reason(RuntimeError(msg)) == (
        "[FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] Error while reading file s3a://lake/part-b.parquet. "
        "Data type mismatches when reading Parquet column [doc_id].")


def test_require_ids_refuses_null_ids_before_any_work(tiny_model_dir, tmp_path, capsys):
    texts = corpus(12, seed=167)[:12]
    ids = [None if i in (3, 7) else i for i in range(12)]
    pq.write_table(pa.table({"doc_id": pa.array(ids, pa.int64()), "text": texts}), tmp_path / "in.parquet")
    assert run(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir, "--set", "input.require_ids=true") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"ner-tag: error: input.require_ids: 2 row(s) of {str(tmp_path / 'in.parquet')!r} have a null "
                    "'doc_id'; fix or filter them (input.where), or set input.require_ids: false to keep them as "
                    "status=error rows"), line
    assert not (tmp_path / "o").exists()
    # filtered out by input.where, they are no longer there
    assert run(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir, "--set", "input.require_ids=true",
               "--set", "input.where=doc_id IS NOT NULL") == 0
    assert pq.read_table(tmp_path / "o" / "documents").num_rows == 10


def test_footers_read_through_hadoop_find_the_same_conflicts(tmp_path):
    """The reader used for HDFS, S3 and every other non-local file system (Hadoop's, through the
    JVM), run here on local files: it sees the types and the missing columns the check refuses."""
    from pyspark.sql import SparkSession

    from ner_udf.config import InputConfig
    from ner_udf.errors import UserError
    from ner_udf.spark import check_input_files, footer_columns

    spark = (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())
    texts = corpus(20, seed=169)
    files = [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"]
    pq.write_table(pa.table({"doc_id": pa.array(range(5), pa.int64()), "text": texts[:5], "lang": ["en"] * 5}), files[0])
    pq.write_table(pa.table({"doc_id": [str(i) for i in range(5, 10)], "text": texts[5:10], "lang": ["de"] * 5}), files[1])
    pq.write_table(pa.table({"doc_id": pa.array(range(10, 15), pa.int64()), "text": pa.array(texts[10:15], pa.large_string())}),
                   files[2])
    uris = [f.as_uri() for f in files]
    cols = footer_columns(spark, uris, ["doc_id", "text", "lang"], via_hadoop=True)
    assert cols == [{"doc_id": "int64", "text": "binary (STRING)", "lang": "binary (STRING)"},
                    {"doc_id": "binary (STRING)", "text": "binary (STRING)", "lang": "binary (STRING)"},
                    {"doc_id": "int64", "text": "binary (STRING)"}], cols
    with pytest.raises(UserError, match=f"disagree on column 'doc_id': int64 in {files[0]}; binary \\(STRING\\) in {files[1]}"):
        check_input_files(uris, cols, InputConfig(path=str(tmp_path)))
    ok = [uris[0], uris[2]]
    check_input_files(ok, footer_columns(spark, ok, ["doc_id", "text"], via_hadoop=True), InputConfig(path=str(tmp_path)))
    with pytest.raises(UserError, match="column 'lang' is missing from 1 of 2 files"):
        check_input_files(ok, footer_columns(spark, ok, ["doc_id", "text", "lang"], via_hadoop=True),
                          InputConfig(path=str(tmp_path), passthrough_cols=("lang",)))

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


def test_files_that_disagree_on_a_column_type_fail_naming_the_file_and_column(tiny_model_dir, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    texts = corpus(20, seed=163)
    pq.write_table(pa.table({"doc_id": pa.array(range(10), pa.int64()), "text": texts[:10]}), inp / "part-a.parquet")
    pq.write_table(pa.table({"doc_id": [str(i) for i in range(10, 20)], "text": texts[10:]}), inp / "part-b.parquet")
    assert run(inp, tmp_path / "o", tiny_model_dir) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("ner-tag: run failed, nothing committed: [FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH]")
    assert "part-" in line and "column [doc_id]" in line, line
    assert not (tmp_path / "o" / "documents").exists()

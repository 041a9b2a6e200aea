"""The run report (OUTPUT/_report/): written by every committed run, for unpartitioned and
partitioned output and for an output without entities; ``ner-tag report OUTPUT`` rewrites it."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ner_udf.cli import main
from texts import corpus

pytestmark = pytest.mark.spark
SPARK = ["--set", "spark.master=local[2]", "--set", "spark.conf={spark.driver.host: 127.0.0.1, spark.ui.enabled: 'false', "
         "spark.ui.showConsoleProgress: 'false'}", "--quiet"]
CHARTS = {"entities_per_label.png", "documents_by_status.png", "scores_per_label.png", "run_history.png"}


def write(path, texts):
    pq.write_table(pa.table({"doc_id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string()),
                             "lang": [["en", "de", "fr"][i % 3] for i in range(len(texts))]}), path)


def report_files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "_report").iterdir()}


@pytest.mark.parametrize("partitioned", [False, True])
def test_every_committed_run_writes_a_report(tiny_model_dir, tmp_path, partitioned):
    write(tmp_path / "in.parquet", corpus(60, seed=201))
    out = tmp_path / "out"
    extra = ["--set", "output.partition_by=[lang]"] if partitioned else []
    for _ in range(2):  # two runs: the history chart has two points
        assert main(["--input", str(tmp_path / "in.parquet"), "--output", str(out), "--model", str(tiny_model_dir),
                     "--set", "input.passthrough_cols=[lang]", "--set", "output.mode=overwrite", *extra, *SPARK]) == 0
    files = report_files(out)
    assert set(files) == CHARTS | {"entities_per_label_and_by.png", "index.html"}, sorted(files)
    assert all(files[name].startswith(b"\x89PNG") for name in files if name.endswith(".png"))
    page = files["index.html"].decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert f"ner-tag run {manifest['run_id']}" in page and "Entities per label and lang" in page
    total = manifest["counts"]["entities"]["total"]
    assert total > 0 and f"{total} entities in the output" in page
    # the top entities table holds the most frequent entity of each label
    top = {}
    for row in pq.read_table(out / "entities").select(["label", "entity"]).to_pylist():
        top.setdefault(row["label"], {}).setdefault(row["entity"], 0)
        top[row["label"]][row["entity"]] += 1
    for label, counts in top.items():
        n = max(counts.values())
        best = min(e for e, c in counts.items() if c == n)
        assert re.search(rf"<td>{re.escape(label)}</td><td>{re.escape(best)}</td><td>{n}</td>", page), (label, best, n)
    # readers of the tables do not see it
    assert pq.read_table(out / "entities").num_rows == total


def test_an_output_without_entities_and_the_report_command(tiny_model_dir, tmp_path, capsys):
    write(tmp_path / "in.parquet", ["", "   ", None, "\t"] * 5)
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "in.parquet"), "--output", str(out), "--model", str(tiny_model_dir),
                 "--set", "input.passthrough_cols=[lang]", *SPARK]) == 0
    page = report_files(out)["index.html"].decode()
    assert "20 documents, 0 entities in the output" in page
    for p in (out / "_report").iterdir():
        p.unlink()
    (out / "_report").rmdir()
    capsys.readouterr()
    assert main(["report", str(out), "--by", "lang"]) == 0
    assert capsys.readouterr().out.strip() == f"ner-tag: report: {out / '_report' / 'index.html'}"
    assert CHARTS <= set(report_files(out))
    assert main(["report", str(out), "--by", "nope"]) == 2
    assert "--by: got 'nope', which is not a pass-through column of this output; valid: lang" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    assert main(["report", str(out), "--conf", "spark.sql.shuffle.partitions"]) == 2  # the run's own check
    assert "--conf: got 'spark.sql.shuffle.partitions'; expected KEY=VALUE" in capsys.readouterr().err

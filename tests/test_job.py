"""The Spark job end to end (local[2]): tables read back with DuckDB, compared with the tagger and
with the transformers pipeline; bad rows; user errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ner_udf
from conftest import ROOT
from ner_udf.cli import main
from ner_udf.config import ModelConfig, TaggingConfig
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from oracle import oracle
from tiny_model import broken_model
from texts import corpus, long_corpus

pytestmark = pytest.mark.spark
SPARK = ["--set", "spark.master=local[2]", "--set", "spark.conf={spark.driver.host: 127.0.0.1, spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false'}"]


def write_corpus(path, ids, texts, extra=None):
    cols = {"id": pa.array(ids, pa.int64()), "body": pa.array(texts, pa.string())}
    cols.update(extra or {})
    pq.write_table(pa.table(cols), path)


def run_job(inp, out, model, *args):
    return main(["--input", str(inp), "--output", str(out), "--model", str(model), "--id-col", "id",
                 "--text-col", "body", *SPARK, *args])


def read(out, table):
    return duckdb.sql(f"select * from read_parquet('{out}/{table}/**/*.parquet') order by all").fetchall()


@pytest.fixture(scope="module")
def job_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    texts = corpus(150, seed=11) + long_corpus(30, seed=12)
    ids = list(range(len(texts)))
    write_corpus(tmp / "in.parquet", ids, texts, {"day": pa.array(["2026-11-0%d" % (i % 3 + 1) for i in ids])})
    # a copy under a new path: Python workers that earlier tests left running have the original cached,
    # and this run's manifest must count its loads
    model = shutil.copytree(tiny_model_dir, tmp / "model")
    assert run_job(tmp / "in.parquet", tmp / "out", model, *JOB_RUN_ARGS) == 0
    return tmp / "out", ids, texts


JOB_RUN_ARGS = ("--aggregation", "first", "--max-length", "48", "--stride", "12", "--set", "input.passthrough_cols=[day]")


def rerun(job_run, tmp_path, *sets: str) -> Path:
    """job_run's input and settings again, into ``tmp_path/out``, with ``--set`` ``sets`` on top."""
    out, ids, texts = job_run
    write_corpus(tmp_path / "in.parquet", ids, texts, {"day": pa.array(["2026-11-0%d" % (i % 3 + 1) for i in ids])})
    sets = [a for s in sets for a in ("--set", s)]
    assert run_job(tmp_path / "in.parquet", tmp_path / "out", out.parent / "model", *JOB_RUN_ARGS, *sets) == 0
    return tmp_path / "out"


def test_entities_equal_tagger_and_pipeline(job_run, tiny_model_dir):
    out, ids, texts = job_run
    got = {}
    for doc_id, entity, label, start, end, score, run_id, day in read(out, "entities"):
        got.setdefault(doc_id, []).append((label, start, end, score))
        assert entity == texts[doc_id][start:end]
        assert day == "2026-11-0%d" % (doc_id % 3 + 1)
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1))
    ours = Tagger.from_loaded(loaded, TaggingConfig(aggregation="first", max_length=48, stride=12)).tag(texts)
    ref = oracle(str(tiny_model_dir), "first", 48, 12)
    n = 0
    for i, text in enumerate(texts):
        job = sorted(got.get(i, []), key=lambda e: (e[1], e[2]))
        tagger = [(e.label, e.start, e.end) for e in ours[i].entities]
        pipe = [(lab, s, e) for lab, s, e, _ in ref(text)]
        assert [(l, s, e) for l, s, e, _ in job] == tagger == pipe, text
        for (_, _, _, score), (_, _, _, want) in zip(job, ref(text)):
            assert abs(score - want) < 1e-4
        n += len(job)
    assert n > 300


def test_recheck_through_the_job_gives_fp32s_entities(job_run, tmp_path):
    """model.recheck_margin through spark-submit's path: int8 with margin 1.0 runs every window again
    at fp32 inside the executors, so the job's entities are job_run's fp32 ones, scores included."""
    out, ids, texts = job_run
    again = rerun(job_run, tmp_path, "model.precision=int8", "model.recheck_margin=1.0")
    fp32 = [e[:5] for e in read(out, "entities")]
    rechecked = [e[:5] for e in read(again, "entities")]
    assert len(fp32) > 300 and rechecked == fp32
    scores = {e[:5]: e[5] for e in read(out, "entities")}
    assert max(abs(e[5] - scores[e[:5]]) for e in read(again, "entities")) < 1e-5
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["model_identity"]["precision"] == "int8" and manifest["model_identity"]["recheck_margin"] == 1.0
    tagger = manifest["tagger"]
    assert tagger["windows"] > len(texts) and tagger["windows_rechecked"] == tagger["windows"]  # every window
    assert json.loads((out / "manifest.json").read_text())["tagger"]["windows_rechecked"] == 0  # fp32: none


def test_openvino_through_the_job_gives_torchs_entities(job_run, tmp_path):
    """model.backend openvino inside the executors' Python workers (the IR converted there, next to
    the model): the job's entities are job_run's eager-torch ones, scores within 1e-4."""
    pytest.importorskip("openvino")
    out = job_run[0]
    again = rerun(job_run, tmp_path, "model.backend=openvino", "model.device=cpu")
    torch_entities = {e[:5]: e[5] for e in read(out, "entities")}
    openvino_entities = {e[:5]: e[5] for e in read(again, "entities")}
    assert len(torch_entities) > 300 and openvino_entities.keys() == torch_entities.keys()
    assert max(abs(v - torch_entities[k]) for k, v in openvino_entities.items()) < 1e-4

    def documents(o):  # every column but run_id (the 10th)
        return [r[:9] + r[10:] for r in read(o, "documents")]

    assert documents(again) == documents(out)
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["model_identity"]["backend"] == "openvino"
    assert list((out.parent / "model").glob(".openvino/*/model.xml")), "no IR cached next to the model"


def test_documents_and_manifest(job_run):
    out, ids, texts = job_run
    docs = read(out, "documents")
    assert [d[0] for d in docs] == ids
    assert {d[1] for d in docs} == {"ok"}
    schema = pq.read_schema(next((out / "documents").glob("*.parquet")))
    assert [f.name for f in schema] == ["doc_id", "status", "n_chars", "n_tokens", "n_windows", "n_entities",
                                        "truncated", "error", "text_sha256", "run_id", "day"]
    escheme = pq.read_schema(next((out / "entities").glob("*.parquet")))
    assert [(f.name, str(f.type)) for f in escheme] == [
        ("doc_id", "int64"), ("entity", "string"), ("label", "string"), ("start", "int32"), ("end", "int32"),
        ("score", "float"), ("run_id", "string"), ("day", "string")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(d[8] == hashlib.sha256(texts[d[0]].encode()).hexdigest() for d in docs)  # text_sha256
    assert {d[9] for d in docs} == {e[6] for e in read(out, "entities")} == {manifest["run_id"]}  # run_id
    assert manifest["counts"]["input"] == {"read": len(ids), "skipped": 0, "tagged": len(ids), "retried": 0,
                                           "null_ids": 0}
    assert manifest["counts"]["documents"] == {"total": len(ids), "ok": len(ids)}
    assert manifest["counts"]["entities"]["total"] == len(read(out, "entities"))
    assert sum(manifest["model_loads"].values()) == 2  # local[2]: two Python workers, one load each
    peaks = manifest["worker_peak_rss_mb"]  # exact per-worker peaks: the load's, then tagging's
    assert set(peaks) == set(manifest["model_loads_per_worker"]), peaks
    assert all(p["load"] > 50 and p["tagging"] > 50 for p in peaks.values()), peaks
    workers = manifest["workers"]  # what each Python worker ran with
    assert set(workers) == set(manifest["model_loads_per_worker"]), workers
    model = out.parent / "model"  # job_run's copy of the model
    assert all(w == {"python": sys.executable, "model_path": str(model), "device": "cpu"}
               for w in workers.values()), workers
    assert manifest["model"]["path"] == str(model)
    assert manifest["config"]["tagging"]["stride"] == 12
    assert not list(out.glob("_tmp-*"))


def test_bad_rows_never_fail_the_job(tiny_model_dir, tmp_path):
    huge = ("Paris Berlin London Москва " * 40_000)[:1_000_000]
    texts = ["Paris", None, "", "  \t\n ", "Paris", "ctrl \x00\x01\x1b[31m Berlin\x7f", "\u200b\ufeff\u202e", huge, "ok"]
    ids = [1, 2, 3, 4, 1, 5, 6, 7, 8]  # id 1 twice
    raw = [t.encode() if t is not None else None for t in texts]
    bad = [b"bad \xed\xa0\x80 surrogate", b"\xff\xfe invalid"]  # an unpaired surrogate and invalid UTF-8 bytes
    table = pa.table({"id": pa.array(ids + [9, 10], pa.int64()), "body": pa.array(raw + bad, pa.binary())})
    pq.write_table(table, tmp_path / "in.parquet")
    assert run_job(tmp_path / "in.parquet", tmp_path / "out", tiny_model_dir, "--set", "spark.partitions=3",
                   "--set", "tagging.max_error_fraction=0.5") == 0
    docs = read(tmp_path / "out", "documents")
    status = [(d[0], d[1]) for d in docs]
    assert status == [(1, "ok"), (1, "ok"), (2, "null"), (3, "empty"), (4, "empty"), (5, "ok"), (6, "ok"),
                      (7, "ok"), (8, "ok"), (9, "error"), (10, "error")]
    by_id = {d[0]: d for d in docs}
    assert by_id[7][2] == 1_000_000 and by_id[7][4] > 300 and not by_id[7][6]  # whole text tagged
    assert "invalid UTF-8" in by_id[10][7]


def cli(*args, cwd=ROOT, env=None):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})}
    return subprocess.run([sys.executable, "jobs/tag_entities.py", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "tagging.agregation=first"], "tagging.agregation: unknown key"),
        (["--aggregation", "best"], "invalid choice: 'best'"),
        (["--max-length", "64", "--stride", "64"], "tagging.stride: got 64"),
        (["--set", "model.device=cpu", "--set", "model.precision=fp16"], "model.precision: got fp16"),
        (["--config", "/nonexistent.yaml"], "--config: file not found"),
        (["--conf", "spark.executor.memory"], "--conf: got 'spark.executor.memory'; expected KEY=VALUE"),
    ],
)
def test_cli_config_errors(args, needle, tmp_path):
    r = cli("--input", "x", "--output", str(tmp_path / "o"), *args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_help_shows_the_configs_values_and_version():
    built_in, from_config = cli("--help"), cli("--config", "conf/local.yaml", "--help")
    assert built_in.returncode == from_config.returncode == 0
    assert "(now: simple)" in " ".join(built_in.stdout.split())  # tagging.aggregation's default
    assert "(now: first)" in " ".join(from_config.stdout.split())  # what conf/local.yaml sets
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"ner-tag {ner_udf.__version__}"


def test_cli_runtime_user_errors(tiny_model_dir, tmp_path, capsys):
    write_corpus(tmp_path / "in.parquet", [1], ["Paris"])
    cases = [
        (["--input", str(tmp_path / "missing.parquet")], "input.path: cannot read Parquet"),
        (["--input", str(tmp_path / "in.parquet"), "--text-col", "nope"], "column(s) nope not in"),
        (["--input", str(tmp_path / "in.parquet"), "--model", str(tmp_path / "no-model")], "model.name:"),
        (["--input", str(tmp_path / "in.parquet"), "--model", str(tmp_path)], "has no config.json"),
        (["--output", str(tmp_path / "in.parquet")], "output.path: cannot write to "),  # a file
        (["--output", str(tmp_path / "in.parquet" / "o")], "output.path: cannot write to "),  # below a file
        (["--input", str(tmp_path / "in.parquet"), "--model", str(broken_model(tiny_model_dir, tmp_path / "m1", "garbage"))],
         "model.name: cannot read the weights of "),
        (["--input", str(tmp_path / "in.parquet"), "--model", str(broken_model(tiny_model_dir, tmp_path / "m2", "no head"))],
         "has no trained token-classification head (classifier.weight, classifier.bias not in its weights)"),
        (["--aggregation", "none", "--set", "tagging.labels=[PER]"], "tagging.labels: 'PER' matches no label; "
         "with tagging.aggregation=none this model's entities are labelled B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC"),
    ]
    for extra, needle in cases:
        args = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o"), "--model", str(tiny_model_dir),
                "--id-col", "id", "--text-col", "body", *SPARK]
        # later flags win; in this process (the script's own entry: test_cli_config_errors), which
        # saves a Python and JVM start per case; an exception that escaped main() would fail the test
        rc = main([*args, *extra])
        err = capsys.readouterr().err
        assert rc == 2, err[-2000:]
        assert needle in err.strip().splitlines()[-1], err[-2000:]
        assert "Traceback" not in err
        assert not (tmp_path / "o" / "entities").exists()


def test_a_run_leaves_nothing_in_the_temp_folder(tiny_model_dir, tmp_path):
    """Python's temp files (the package zip shipped to workers) and Spark's (block manager, shuffle,
    its files directory) all go under one temp folder here; after a committed run and after a
    failed one it is empty again."""
    write_corpus(tmp_path / "in.parquet", list(range(30)), corpus(30, seed=53))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    java_options = f"{os.environ.get('JAVA_TOOL_OPTIONS', '')} -Djava.io.tmpdir={tmp}".strip()  # conftest's too
    env = {"TMPDIR": str(tmp), "JAVA_TOOL_OPTIONS": java_options}
    bad = broken_model(tiny_model_dir, tmp_path / "bad", "vocab")
    for model, rc in ((tiny_model_dir, 0), (bad, 1)):
        r = cli("--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o"), "--model", str(model),
                "--id-col", "id", "--text-col", "body", "--set", "output.mode=overwrite", *SPARK, env=env)
        assert r.returncode == rc, r.stderr[-3000:]
        assert sorted(p.name for p in tmp.iterdir()) == [], r.stderr[-2000:]


def test_existing_output_is_refused_in_error_mode(tiny_model_dir, tmp_path):
    write_corpus(tmp_path / "in.parquet", [1], ["Paris"])
    assert run_job(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir) == 0
    before = read(tmp_path / "o", "documents")
    assert run_job(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir) == 2
    assert run_job(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir, "--set", "output.mode=overwrite") == 0
    after = read(tmp_path / "o", "documents")
    assert [d[:-1] for d in after] == [d[:-1] for d in before] and after[0][-1] != before[0][-1]  # a new run_id


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    write_corpus(tmp_path / "in.parquet", list(range(30)), corpus(30, seed=57))
    out = tmp_path / "o"
    incremental = ("--set", "output.mode=incremental", "--set", "spark.partitions=3")
    assert run_job(tmp_path / "in.parquet", out, tiny_model_dir, "--dry-run", *incremental) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not out.exists()
    assert plan["input"]["rows"] == plan["input"]["to_tag"] == 30 and plan["partitions"] == 3
    assert plan["model"]["entity_labels"] == ["PER", "ORG", "LOC"]
    assert plan["tagging"] == {"aggregation": "simple", "balance": "cost", "precision": "fp32", "device": "auto",
                               "backend": "torch"}
    assert plan["output"] == {"path": str(out), "mode": "incremental", "partition_by": [], "exists": False,
                              "committed": [], "last_run": None, "lock": None}
    assert run_job(tmp_path / "in.parquet", out, tiny_model_dir, *incremental) == 0
    run_id = json.loads((out / "manifest.json").read_text())["run_id"]
    capsys.readouterr()
    write_corpus(tmp_path / "in.parquet", list(range(34)), corpus(34, seed=57))  # 4 new documents
    before = sorted(p.name for p in out.iterdir())
    assert run_job(tmp_path / "in.parquet", out, tiny_model_dir, "--dry-run", *incremental) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["input"]["rows"], plan["input"]["to_tag"]) == (34, 4)
    assert plan["output"]["last_run"] == run_id and plan["output"]["committed"] == ["entities", "documents", "manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == before
    # what would stop the run stops the dry run
    assert run_job(tmp_path / "in.parquet", out, tiny_model_dir, "--dry-run") == 2  # output.mode=error
    assert "already holds" in capsys.readouterr().err


def test_progress_lines_while_a_run_goes(tiny_model_dir, tmp_path, capsys):
    from ner_udf import job
    from ner_udf.config import load_config

    texts = corpus(1500, seed=59, max_words=60)
    write_corpus(tmp_path / "in.parquet", list(range(len(texts))), texts)
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")  # a new path: every worker loads it
    sets = [SPARK[1], SPARK[3], "spark.partitions=6", "spark.arrow_batch_rows=50", "input.id_col=id",
            "input.text_col=body"]
    cfg = load_config(overrides={"input.path": str(tmp_path / "in.parquet"), "output.path": str(tmp_path / "o"),
                                 "model.name": str(model)}, sets=sets)
    capsys.readouterr()
    job.run(cfg, progress_every_s=0.25)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ner-tag: [")]
    loads = [ln for ln in lines if re.fullmatch(r"ner-tag: \[\d+m\d\ds\] model loaded by worker \S+/\d+ "
                                                r"\(executor \S+/\d+\) in \d+\.\d s", ln)]
    assert loads, lines
    tagging = [ln for ln in lines if re.match(r"ner-tag: \[\d+m\d\ds\] tagging and writing entities, tasks \d+/6, "
                                               r"model loaded by \d workers?, [\d,]+ of 1,500 documents, [\d,]+ tokens tagged "
                                               r"\([\d,]+ tokens/s\)", ln)]
    assert tagging, lines
    # incremental: the total is the documents the output lacks, counted by the cost balance's scan
    more = corpus(1500, seed=61, max_words=60)
    write_corpus(tmp_path / "in2.parquet", list(range(len(texts) + len(more))), texts + more)
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"path": str(tmp_path / "in2.parquet")}),
                                 "output": cfg.output.model_copy(update={"mode": "incremental"})})
    capsys.readouterr()
    assert job.run(cfg, progress_every_s=0.25).counts["input"]["tagged"] == 1500
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ner-tag: [")]
    assert [ln for ln in lines if re.search(r", [\d,]+ of 1,500 documents, ", ln)], lines
    # --quiet: none of them
    assert main(["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o2"), "--model", str(model),
                 "--id-col", "id", "--text-col", "body", *SPARK, "--quiet"]) == 0
    assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ner-tag: [")]


def test_identical_texts_are_tagged_once(tiny_model_dir, tmp_path):
    texts = corpus(20, seed=31) * 3
    write_corpus(tmp_path / "in.parquet", list(range(60)), texts)
    assert run_job(tmp_path / "in.parquet", tmp_path / "out", tiny_model_dir, "--set", "spark.partitions=4") == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tagger"]["unique_texts"] == 20  # copies share a bucket, so a partition (tagging.balance)
    docs = read(tmp_path / "out", "documents")
    assert len(docs) == 60
    ents = read(tmp_path / "out", "entities")
    per_doc = {}
    for row in ents:
        per_doc.setdefault(row[0], []).append(row[1:])
    for i in range(20):
        assert per_doc.get(i) == per_doc.get(i + 20) == per_doc.get(i + 40)


def test_hive_partitioned_directory_input(tiny_model_dir, tmp_path):
    texts = corpus(30, seed=41)
    table = pa.table({"id": pa.array(range(30), pa.int64()), "body": texts,
                      "date": ["2026-11-0%d" % (i % 3 + 1) for i in range(30)]})
    pq.write_to_dataset(table, tmp_path / "lake", partition_cols=["date"])
    assert run_job(tmp_path / "lake", tmp_path / "out", tiny_model_dir, "--set", "input.passthrough_cols=[date]",
                   "--set", "output.partition_by=[date]") == 0
    docs = duckdb.sql(f"select doc_id, date from read_parquet('{tmp_path}/out/documents/**/*.parquet', "
                      "hive_partitioning=true) order by doc_id").fetchall()
    assert [(i, str(d)) for i, d in docs] == [(i, "2026-11-0%d" % (i % 3 + 1)) for i in range(30)]  # Spark infers a date
    assert sorted(p.name for p in (tmp_path / "out" / "entities").glob("date=*")) == [
        "date=2026-11-01", "date=2026-11-02", "date=2026-11-03"]


def test_unwritable_output_stops_before_work(tiny_model_dir, tmp_path):
    write_corpus(tmp_path / "in.parquet", [1], ["Paris"])
    (tmp_path / "file").write_text("not a directory")
    r = cli("--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "file" / "out"), "--model",
            str(tiny_model_dir), "--id-col", "id", "--text-col", "body", *SPARK)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "output.path: cannot write" in r.stderr.strip().splitlines()[-1]


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "ner-tag")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--aggregation" in r.stdout


def test_accumulator_adds_counts_and_keeps_peaks():
    from ner_udf.manifest import CountsParam, worker_peaks

    acc = CountsParam()
    total = acc.zero(None)
    for part in ({"workers": {"h/1": 1}, "peak_tagging_rss_mb": {"h/1": 900}, "peak_load_rss_mb": {"h/1": 1500}},
                 {"workers": {"h/1": 1}, "peak_tagging_rss_mb": {"h/1": 700, "h/2": 950}}):
        total = acc.addInPlace(total, part)
    assert total["workers"] == {"h/1": 2}
    assert total["peak_tagging_rss_mb"] == {"h/1": 900, "h/2": 950}
    assert worker_peaks(total) == {"h/1": {"load": 1500, "tagging": 900}, "h/2": {"tagging": 950}}


@pytest.mark.parametrize("how,needle", [
    ("vocab", "30 of 30 documents failed (more than tagging.max_error_fraction=0.01); first error, doc_id "),
    ("shapes", "weights missing or of the wrong shape, which transformers would initialise at random: "
               "bert.embeddings.word_embeddings.weight"),
])
def test_a_failing_model_fails_the_run_and_keeps_the_previous_output(tiny_model_dir, tmp_path, how, needle, capsys):
    write_corpus(tmp_path / "in.parquet", list(range(30)), corpus(30, seed=51))
    assert run_job(tmp_path / "in.parquet", tmp_path / "o", tiny_model_dir) == 0
    before = {t: read(tmp_path / "o", t) for t in ("entities", "documents")}
    manifest = (tmp_path / "o" / "manifest.json").read_text()
    bad = broken_model(tiny_model_dir, tmp_path / "bad", how)
    capsys.readouterr()
    rc = run_job(tmp_path / "in.parquet", tmp_path / "o", bad, "--set", "output.mode=overwrite")
    err = capsys.readouterr().err
    assert rc == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("ner-tag: run failed, nothing committed: ") and needle in last, err[-3000:]
    if how == "vocab":
        assert "model failed: IndexError" in last, last
    assert {t: read(tmp_path / "o", t) for t in ("entities", "documents")} == before
    assert (tmp_path / "o" / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["_report", "_runs", "documents", "entities",
                                                                 "manifest.json"]
    assert len(list((tmp_path / "o" / "_runs").iterdir())) == 1  # the failed run left no record


def test_error_fraction_threshold(tiny_model_dir, tmp_path):
    """Invalid UTF-8 rows end as status=error: 1 in 150 (0.7%) passes the default 1%, 3 in 150 do not."""
    texts = [t.encode() for t in corpus(150, seed=61)]
    for n_bad, rc in ((1, 0), (3, 1)):
        raw = [b"\xff\xfe invalid" if i < n_bad else t for i, t in enumerate(texts)]
        pq.write_table(pa.table({"id": pa.array(range(150), pa.int64()), "body": pa.array(raw, pa.binary())}),
                       tmp_path / f"in{n_bad}.parquet")
        assert run_job(tmp_path / f"in{n_bad}.parquet", tmp_path / f"o{n_bad}", tiny_model_dir) == rc
        assert (tmp_path / f"o{n_bad}" / "documents").exists() == (rc == 0)
    assert run_job(tmp_path / "in3.parquet", tmp_path / "o3", tiny_model_dir,
                   "--set", "tagging.max_error_fraction=1.0") == 0  # 1.0 turns the check off

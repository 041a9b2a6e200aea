from __future__ import annotations

import os
import sys
import warnings
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
# JIT changes no result; users' runs and `make bench` keep the JVM's default. The class archive
# below is added to this variable too.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")


@pytest.fixture(scope="session", autouse=True)
def jvm_class_archive(request, tmp_path_factory) -> Path | None:
    """A class-data-sharing archive of the classes a job's JVM loads, for every JVM the suite starts
    afterwards (``-XX:SharedArchiveFile`` added to ``JAVA_TOOL_OPTIONS``): each one maps Spark's
    classes instead of loading and verifying them again. A 30-document tiny-model run through
    jobs/tag_entities.py on 2 cores took 29.6-32.6 s with it, against 38.5-39.1 s without (three
    alternating pairs); the whole suite here 2,334 -> 2,139 s, the archive's run included. The archive is
    dumped by the driver JVM of one such run (``-XX:ArchiveClassesAtExit``); a JVM whose class path
    does not match it (spark-submit's launcher) ignores it, ``-Xlog:cds*=off`` keeps that quiet.
    Only when the session has Spark tests, and not when ``JAVA_TOOL_OPTIONS`` already names an
    archive. Results do not depend on it; users' runs and ``make bench`` do not use it."""
    options = os.environ["JAVA_TOOL_OPTIONS"]
    if "SharedArchiveFile" in options or "Xshare" in options or not any(
            item.get_closest_marker("spark") or item.get_closest_marker("slow") for item in request.session.items):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    from submit import submit
    from texts import corpus

    tmp = tmp_path_factory.mktemp("jvm-classes")
    texts = corpus(30, seed=1)
    pq.write_table(pa.table({"doc_id": pa.array(range(len(texts)), pa.int64()), "text": texts}), tmp / "in.parquet")
    dumped, archive = tmp / "dumping.jsa", tmp / "spark.jsa"
    done = submit("local[2]", ["--input", str(tmp / "in.parquet"), "--output", str(tmp / "out"),
                               "--model", str(request.getfixturevalue("tiny_model_dir")), "--quiet"],
                  {"spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={dumped} -Xlog:cds*=off"})
    if done.returncode != 0 or not dumped.exists():  # the job's own tests say why; they run without it
        warnings.warn(f"no JVM class archive: the run that dumps it exited {done.returncode}:\n{done.stdout[-2000:]}")
        return None
    dumped.rename(archive)  # whole: the JVM wrote it before it exited
    os.environ["JAVA_TOOL_OPTIONS"] = f"{options} -XX:SharedArchiveFile={archive} -Xlog:cds*=off"
    return archive


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

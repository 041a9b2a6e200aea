"""The DataFrame API (``ner_udf.tag_entities``) on the caller's session: the same rows as the job's
tables, compared with pyspark's DataFrame equality."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.testing import assertDataFrameEqual

from ner_udf import Config, UserError, load_config, tag_entities
from ner_udf.cli import main
from texts import corpus

pytestmark = pytest.mark.spark
SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]")
    for k, v in SPARK_CONF.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "in.parquet"
    texts = corpus(80, seed=191)[:78] + [None, "   "]
    pq.write_table(pa.table({"id": pa.array(range(80), pa.int64()), "body": texts,
                             "lang": [["en", "de", "fr"][i % 3] for i in range(80)]}), path)
    return path


def test_tag_entities_equals_the_jobs_tables(spark, tiny_model_dir, corpus_file, tmp_path):
    out = tmp_path / "out"
    sets = ["tagging.aggregation=first", "input.passthrough_cols=[lang]", "spark.partitions=3"]
    assert main(["--input", str(corpus_file), "--output", str(out), "--model", str(tiny_model_dir), "--id-col", "id",
                 "--text-col", "body", "--quiet", "--set", "spark.master=local[2]",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    df = spark.read.parquet(str(corpus_file))
    entities, documents = tag_entities(df, id_col="id", text_col="body", config={"tagging": {"aggregation": "first"}},
                                       **{"model.name": str(tiny_model_dir), "input.passthrough_cols": ["lang"],
                                          "spark.partitions": 3})
    job_entities = spark.read.parquet(str(out / "entities"))
    job_documents = spark.read.parquet(str(out / "documents"))
    assert entities.columns == job_entities.columns and documents.columns == job_documents.columns
    # the same types (Parquet files read back make every column nullable)
    assert entities.schema.simpleString() == job_entities.schema.simpleString()
    assert documents.schema.simpleString() == job_documents.schema.simpleString()
    assert entities.count() > 20
    assertDataFrameEqual(entities.drop("run_id"), job_entities.drop("run_id"), atol=1e-4)
    assertDataFrameEqual(documents.drop("run_id"), job_documents.drop("run_id"))
    statuses = {r["doc_id"]: r["status"] for r in documents.select("doc_id", "status").collect()}
    assert len(statuses) == 80 and statuses[78] == "null" and statuses[79] == "empty"
    assert documents.select("run_id").distinct().count() == 1


def test_config_as_a_path_a_mapping_or_a_config(spark, tiny_model_dir, corpus_file, tmp_path):
    df = spark.read.parquet(str(corpus_file)).limit(20)
    (tmp_path / "c.yaml").write_text(f"model: {{name: {tiny_model_dir}}}\ntagging: {{aggregation: simple}}\n")
    found = []
    for config in (str(tmp_path / "c.yaml"), {"model": {"name": str(tiny_model_dir)}},
                   load_config(overrides={"model.name": str(tiny_model_dir)})):
        ents, _ = tag_entities(df, id_col="id", text_col="body", config=config)
        found.append(sorted(tuple(r) for r in ents.drop("run_id").collect()))
    assert found[0] == found[1] == found[2] and found[0]
    assert isinstance(load_config(), Config)


@pytest.mark.parametrize("kwargs,needle", [
    ({"id_col": "nope", "text_col": "body"}, "input: column(s) nope not in the DataFrame; available: id, body, lang"),
    ({"id_col": "id", "text_col": "lang", "tagging.agregation": "first"}, "tagging.agregation: unknown key"),
    ({"id_col": "id", "text_col": "body", "tagging.labels": ["PERSON"]}, "tagging.labels: 'PERSON' matches no label"),
])
def test_mistakes_are_user_errors_at_once(spark, tiny_model_dir, corpus_file, kwargs, needle):
    df = spark.read.parquet(str(corpus_file))
    with pytest.raises(UserError) as err:
        tag_entities(df, config={"model": {"name": str(tiny_model_dir)}}, **kwargs)
    assert needle in str(err.value)


def test_a_planning_warning_reaches_the_caller(spark, tiny_model_dir, corpus_file, monkeypatch):
    """What the job prints on stderr (spark.plan_layout's warning: dynamic allocation with no
    maxExecutors, which a local session cannot have) comes to a tag_entities caller as a warning."""
    import ner_udf.spark as glue

    monkeypatch.setattr(glue, "planned_slots", lambda registered, master, conf: (registered, "too few partitions"))
    df = spark.read.parquet(str(corpus_file)).limit(5)
    with pytest.warns(UserWarning, match="^tag_entities: too few partitions$"):
        tag_entities(df, id_col="id", text_col="body", config={"model": {"name": str(tiny_model_dir)}})

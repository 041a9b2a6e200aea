from __future__ import annotations

import pytest

from ner_udf.config import load_config
from ner_udf.errors import UserError


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("tagging:\n  aggregation: first\nmodel:\n  device: cpu\n")
    cfg = load_config(p, overrides={"input.path": "in", "tagging.max_length": None}, sets=["tagging.stride=32", "model.threads=2"])
    assert cfg.tagging.aggregation == "first" and cfg.tagging.stride == 32 and cfg.model.threads == 2
    assert cfg.input.path == "in" and cfg.tagging.max_length is None
    with pytest.raises(Exception):
        cfg.tagging.stride = 3  # frozen


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["tagging.agregation=first"], "tagging.agregation: unknown key; valid keys here: tagging.aggregation"),
        (["tagging.aggregation=best"], "tagging.aggregation: got 'best'"),
        (["tagging.max_length=abc"], "tagging.max_length: got 'abc'"),
        (["tagging.max_length=64", "tagging.stride=64"], "tagging.stride: got 64, must be < tagging.max_length (64)"),
        (["tagging.aggregation=none", "tagging.stride=16"], "tagging.stride: got 16 with tagging.aggregation=none"),
        (["model.device=cpu", "model.precision=fp16"], "model.precision: got fp16 with model.device=cpu"),
        (["model.precision=fp8"], "model.precision: got 'fp8'"),
        (["nosuch.key=1"], "nosuch: unknown key"),
        (["tagging"], "--set: got 'tagging'"),
        (["output.partition_by=[date]"], "output.partition_by: got 'date', which is not a pass-through column"),
    ],
)
def test_user_errors_are_one_line(sets, needle):
    with pytest.raises(UserError) as err:
        load_config(None, sets=sets)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_choices_are_named():
    with pytest.raises(UserError) as err:
        load_config(None, sets=["tagging.aggregation=best"])
    for s in ("none", "simple", "first", "average", "max"):
        assert s in str(err.value)


def test_missing_file():
    with pytest.raises(UserError, match="file not found"):
        load_config("/nonexistent.yaml")


@pytest.mark.parametrize("sets,needle", [
    (["tagging.label_map={PERSON: X}"], "tagging.label_map: 'PERSON' matches no label; with tagging.aggregation=simple "
     "this model's entities are labelled PER, ORG, LOC"),
    (["tagging.labels=[PERSON]"], "tagging.labels: 'PERSON' matches no label; with tagging.aggregation=simple this "
     "model's entities are labelled PER, ORG, LOC"),
    (["tagging.label_map={PER: PERSON}", "tagging.labels=[PER]"], "tagging.labels: 'PER' matches no label; with "
     "tagging.aggregation=simple this model's entities are labelled PER, ORG, LOC (after label_map: LOC, ORG, PERSON)"),
    (["tagging.aggregation=none", "tagging.labels=[PER]"], "tagging.labels: 'PER' matches no label; with "
     "tagging.aggregation=none this model's entities are labelled B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC"),
])
def test_label_settings_must_match_the_models_labels(tiny_model_dir, sets, needle):
    from ner_udf.preflight import check_model

    with pytest.raises(UserError) as err:
        check_model(load_config(overrides={"model.name": str(tiny_model_dir)}, sets=sets))
    assert str(err.value) == needle


def test_label_settings_that_match_pass(tiny_model_dir):
    from ner_udf.preflight import check_model

    for sets in (["tagging.label_map={PER: PERSON}", "tagging.labels=[PERSON, LOC]"],
                 ["tagging.aggregation=none", "tagging.labels=[B-PER, I-PER]"]):
        assert check_model(load_config(overrides={"model.name": str(tiny_model_dir)}, sets=sets))["labels"][0] == "O"


def test_paths_in_a_yaml_file_are_relative_to_it(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (tmp_path / "models" / "m").mkdir(parents=True)
    conf.mkdir()
    (conf / "job.yaml").write_text("input: {path: ../data/in.parquet, base_path: ../data}\noutput: {path: out}\n"
                                   "model: {name: ../models/m}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../conf/job.yaml")
    assert cfg.input.path == str(tmp_path / "data" / "in.parquet")
    assert cfg.input.base_path == str(tmp_path / "data")
    assert cfg.output.path == str(conf / "out")
    assert cfg.model.name == str(tmp_path / "models" / "m")
    # not a directory beside the file: a hub id or the name --archives unpacks on executors, as written
    (conf / "hub.yaml").write_text("model: {name: org/model}\ninput: {path: 's3a://lake/docs'}\n")
    cfg = load_config(conf / "hub.yaml", sets=["output.path=rel/out"])
    assert (cfg.model.name, cfg.input.path, cfg.output.path) == ("org/model", "s3a://lake/docs", "rel/out")


def test_spark_settings_from_the_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("spark: {conf: {spark.ui.enabled: 'false', spark.executor.memory: 2g}}\n")
    cfg = load_config(tmp_path / "c.yaml", spark_conf={"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "8"})
    assert cfg.spark.conf == {"spark.ui.enabled": "false", "spark.executor.memory": "4g",
                              "spark.sql.shuffle.partitions": "8"}

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

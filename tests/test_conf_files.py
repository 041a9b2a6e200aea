"""Every shipped config loads, every key is commented, and each value is what its line and its
comment say: the value YAML reads is the text before the comment, and a value documented with a
list of choices (``a | b | c``) is one of them."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import ROOT
from ner_udf.config import Config, load_config

CONFS = sorted((ROOT / "conf").glob("*.yaml"))
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<rest>.*)$")


def keyed_lines(path):
    """(dotted key, value text, comment) of every key line; sections give an empty value text."""
    stack: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        m = _KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), m["key"]])
        # YAML starts a comment at a '#' that follows whitespace; a '#' glued to a value is part of it
        hash_ = re.search(r"\s#", m["rest"])
        value, comment = (m["rest"][: hash_.start()], m["rest"][hash_.end():]) if hash_ else (m["rest"], "")
        value, comment = value.strip(), comment.strip()
        if not value:
            stack.append((indent, m["key"]))
        yield dotted, value, comment


def lookup(cfg: Config, dotted: str):
    node = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict):
            return node[".".join(parts[i:])]  # spark.conf keys hold dots
        node = getattr(node, part)
    return node


def normal(value):
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("path", CONFS, ids=[p.name for p in CONFS])
def test_shipped_config_values_are_what_their_lines_say(path):
    cfg = load_config(path)
    assert len(CONFS) >= 3
    checked = 0
    for dotted, value, comment in keyed_lines(path):
        if not value:
            continue
        in_spark_conf = dotted.startswith("spark.conf.")
        assert comment or in_spark_conf or dotted == "spark.app_name", f"{path.name}: {dotted} has no comment"
        got, said = lookup(cfg, dotted), yaml.safe_load(value)
        if isinstance(said, str) and said.startswith("../"):  # a relative path: relative to the config's folder
            said = str((path.parent / said).resolve())
        assert normal(got) == normal(said), f"{path.name}: {dotted}: loaded {got!r}, line says {value}"
        assert "#" not in str(got), f"{path.name}: {dotted} = {got!r}: a comment glued to the value"
        if "|" in comment:
            choices = [seg.split()[0].rstrip(":,") for seg in comment.split("|") if seg.split()]
            shown = "null" if got is None else str(got)
            assert shown in choices, f"{path.name}: {dotted} = {shown}, not one of the comment's {choices}"
        checked += 1
    assert checked >= 30, checked


def test_a_comment_glued_to_a_value_is_caught(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: org/model# hub id\n")
    lines = list(keyed_lines(bad))
    assert lines == [("model", "", ""), ("model.name", "org/model# hub id", "")]

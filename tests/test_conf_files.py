"""The shipped configs are valid and every key is commented."""

from __future__ import annotations

import pytest

from conftest import ROOT
from ner_udf.config import load_config


@pytest.mark.parametrize("name", ["local.yaml", "cluster-cpu.yaml", "cluster-gpu.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "conf" / name)
    assert cfg.tagging.aggregation in ("simple", "first")
    for line in (ROOT / "conf" / name).read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.endswith(":"):
            assert "#" in line or line.startswith("    spark.") or line.startswith("  app_name"), f"{name}: uncommented key: {line}"

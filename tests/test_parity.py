"""Our tagger vs. the transformers pipeline on a tiny random model: all strategies, many scripts."""

from __future__ import annotations

import pytest

from ner_udf.config import TaggingConfig
from ner_udf.model import load_model
from ner_udf.config import ModelConfig
from ner_udf.tagger import Tagger
from oracle import assert_matches_oracle, oracle
from texts import corpus, long_corpus

STRATEGIES = ["none", "simple", "first", "average", "max"]


def make_tagger(model_dir, **tagging):
    loaded = load_model(ModelConfig(name=str(model_dir), device="cpu", threads=1))
    return Tagger.from_loaded(loaded, TaggingConfig(**tagging))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_single_window_parity(tiny_model_dir, strategy):
    texts = corpus(220)
    ours = make_tagger(tiny_model_dir, aggregation=strategy).tag(texts)
    ref = oracle(str(tiny_model_dir), strategy)
    n_entities = 0
    for text, res in zip(texts, ours):
        assert res.status == "ok" and res.n_windows == 1 and not res.truncated
        assert_matches_oracle(res.entities, ref(text), text)
        n_entities += len(res.entities)
        for e in res.entities:
            assert 0 <= e.start < e.end <= len(text)
    assert n_entities > 200  # random logits: plenty of boundaries to compare


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
@pytest.mark.parametrize("max_length,stride", [(48, 8), (40, 16)])
def test_windowed_parity(tiny_model_dir, strategy, max_length, stride):
    texts = long_corpus(40)
    tagger = make_tagger(tiny_model_dir, aggregation=strategy, max_length=max_length, stride=stride)
    ours = tagger.tag(texts)
    ref = oracle(str(tiny_model_dir), strategy, max_length, stride)
    windows = [r.n_windows for r in ours]
    assert sum(w >= 2 for w in windows) >= 30 and sum(3 <= w <= 5 for w in windows) >= 10, windows
    for text, res in zip(texts, ours):
        assert_matches_oracle(res.entities, ref(text), text)


def test_none_never_truncates(tiny_model_dir):
    """The pipeline truncates long texts with aggregation none; we tag every token in windows that
    do not overlap, and the first window equals the pipeline's output."""
    texts = long_corpus(10)
    ours = make_tagger(tiny_model_dir, aggregation="none", max_length=48).tag(texts)
    ref = oracle(str(tiny_model_dir), "none", 48)
    for text, res in zip(texts, ours):
        theirs = ref(text)
        assert res.n_windows >= 2
        cut = max(e[2] for e in theirs) if theirs else 0
        assert_matches_oracle([e for e in res.entities if e.end <= cut], theirs, text)
        assert max(e.end for e in res.entities) > cut  # tokens beyond the first window were tagged

"""Tagger behaviour beyond parity: statuses, batch independence, windows, failures."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from ner_udf.config import ModelConfig, TaggingConfig
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from texts import corpus, long_corpus


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1))


def test_null_empty_whitespace(loaded):
    res = Tagger.from_loaded(loaded, TaggingConfig()).tag([None, "", "   \n\t", "Paris", float("nan")])
    assert [r.status for r in res] == ["null", "empty", "empty", "ok", "null"]
    assert [r.n_chars for r in res] == [None, 0, 5, 5, None]
    assert all(r.entities == [] for r in res[:3])
    assert res[3].n_tokens == 1 and res[3].n_windows == 1


def test_non_string_is_an_error_not_a_crash(loaded):
    res = Tagger.from_loaded(loaded, TaggingConfig()).tag([b"bytes", 3, "ok text"])
    assert [r.status for r in res] == ["error", "error", "ok"]
    assert "not a string" in res[0].error


def test_batch_composition_never_changes_results(loaded):
    texts = corpus(420, seed=3) + long_corpus(80, seed=4)
    cfg = TaggingConfig(aggregation="first", max_length=64, stride=16, batch_tokens=2048)
    together = Tagger.from_loaded(loaded, cfg).tag(texts)
    alone = [Tagger.from_loaded(loaded, cfg.model_copy(update={"batch_tokens": 64})).tag([t])[0] for t in texts]
    assert len(texts) == 500
    for t, a, b in zip(texts, together, alone):
        assert [(e.label, e.start, e.end) for e in a.entities] == [(e.label, e.start, e.end) for e in b.entities], t
        np.testing.assert_allclose([e.score for e in a.entities], [e.score for e in b.entities], atol=1e-5)
        assert (a.n_tokens, a.n_windows) == (b.n_tokens, b.n_windows)


def test_padding_lengths_to_a_multiple_changes_no_result(loaded):
    """What bf16 on CPU does by default (model.length_multiple): pad every batch to a multiple of
    16 tokens. Padding is masked, so entities and scores stay those of unpadded batches."""
    texts = corpus(200, seed=5) + long_corpus(20, seed=6)
    cfg = TaggingConfig(aggregation="first", max_length=64, stride=16, batch_tokens=1024)
    lengths = []

    def forward(ids, mask):
        lengths.append(ids.shape[1])
        return loaded.forward(ids, mask)

    plain_tagger = Tagger.from_loaded(loaded, cfg)
    plain = plain_tagger.tag(texts)
    tagger = Tagger(loaded.tokenizer, forward, loaded.id2label, cfg, loaded.max_positions, length_multiple=16)
    padded = tagger.tag(texts)
    assert lengths and all(n % 16 == 0 for n in lengths) and set(lengths) <= {16, 32, 48, 64}
    for t, a, b in zip(texts, plain, padded):
        assert [(e.label, e.start, e.end) for e in a.entities] == [(e.label, e.start, e.end) for e in b.entities], t
        np.testing.assert_allclose([e.score for e in a.entities], [e.score for e in b.entities], atol=1e-5)
        assert (a.n_tokens, a.n_windows) == (b.n_tokens, b.n_windows)
    assert tagger.stats.padded_tokens > plain_tagger.stats.padded_tokens  # the padding was really added


def test_n_tokens_counts_each_token_once(loaded):
    tok = loaded.tokenizer
    texts = long_corpus(20, seed=7)
    res = Tagger.from_loaded(loaded, TaggingConfig(max_length=32, stride=10)).tag(texts)
    for t, r in zip(texts, res):
        assert r.n_tokens == len(tok(t, add_special_tokens=False)["input_ids"])
        assert r.n_windows > 1


def test_duplicates_tagged_once(loaded):
    tagger = Tagger.from_loaded(loaded, TaggingConfig())
    res = tagger.tag(["Paris and Berlin"] * 50 + ["London"])
    assert tagger.stats.unique_texts == 2 and tagger.stats.windows == 2
    assert all(r.entities == res[0].entities for r in res[:50])
    res[0].entities.append("x")
    assert res[1].entities != res[0].entities  # results are independent objects


def test_tagger_keeps_no_text_after_a_call(loaded):
    """A worker's memory must not grow with the texts it has seen. The Rust tokenizer makes CPython
    cache a UTF-8 copy inside every str it reads, so a text kept alive after its batch would keep
    that copy too: once tag() has returned, no input text may be referenced by the tagger, the
    loaded model or anything they keep (results excepted: the caller drops them with its batch)."""
    tagger = Tagger.from_loaded(loaded, TaggingConfig(aggregation="simple", chunk_chars=1_000))
    texts = ["".join([t, " #", str(i)]) for i, t in enumerate(corpus(60) + long_corpus(8))]  # fresh objects
    texts += [texts[0], (texts[1] + "x")[:-1], texts[2].upper(), "".join([" "] * 3)]  # a duplicate, an equal copy
    texts.append("")  # tagged too; not compared below: the empty string is one object shared by the whole process
    before = [sys.getrefcount(t) for t in texts if t]
    results = tagger.tag(texts)
    assert tagger.stats.unique_texts < len(texts) and tagger.stats.batches > 2  # dedup and several chunks ran
    del results
    for _ in range(2):
        tagger.tag(texts[:3])
        tagger.tag(texts)
    gc.collect()
    assert [sys.getrefcount(t) for t in texts if t] == before


def test_max_windows_cap_marks_truncated(loaded):
    text = long_corpus(1, seed=9)[0]
    res = Tagger.from_loaded(loaded, TaggingConfig(max_length=32, stride=4, max_windows_per_doc=2)).tag([text])[0]
    assert res.truncated and res.n_windows == 2


def test_one_failing_window_marks_only_its_document(loaded):
    def forward(ids, mask):
        if (ids == loaded.tokenizer.convert_tokens_to_ids("Berlin")).any():
            raise RuntimeError("boom")
        return loaded.forward(ids, mask)

    tagger = Tagger(loaded.tokenizer, forward, loaded.id2label, TaggingConfig())
    res = tagger.tag(["Paris", "in Berlin", "London", "New York"])
    assert [r.status for r in res] == ["ok", "error", "ok", "ok"]
    assert "boom" in res[1].error


def test_label_map_filter_and_min_score(loaded):
    texts = corpus(60, seed=5)
    plain = Tagger.from_loaded(loaded, TaggingConfig()).tag(texts)
    cfg = TaggingConfig(label_map={"PER": "PERSON"}, labels=("PERSON", "LOC"), min_score=0.6)
    mapped = Tagger.from_loaded(loaded, cfg).tag(texts)
    for p, m in zip(plain, mapped):
        want = [("PERSON" if e.label == "PER" else e.label, e.start, e.end) for e in p.entities
                if e.label in ("PER", "LOC") and e.score >= 0.6]
        assert [(e.label, e.start, e.end) for e in m.entities] == want


def test_invalid_text_is_isolated(loaded):
    res = Tagger.from_loaded(loaded, TaggingConfig()).tag(["Paris", "bad \ud800 surrogate", "\x00\x01\x02", "Berlin"])
    assert res[0].status == "ok" and res[3].status == "ok"
    assert res[1].status in ("ok", "error")
    assert res[2].status == "ok" and res[2].entities == []


class _Later:
    def __init__(self, fn):
        self.fn = fn

    def result(self):
        return self.fn()


def test_deferred_results_as_on_gpu(loaded):
    """GPU forwards return handles resolved later; results equal the synchronous path, and a failure
    that surfaces only at synchronisation marks just the documents of that batch."""
    texts = corpus(80, seed=8) + long_corpus(10, seed=8)
    cfg = TaggingConfig(max_length=48, stride=8, chunk_chars=1000, batch_tokens=256)
    sync = Tagger.from_loaded(loaded, cfg).tag(texts)
    deferred = Tagger(loaded.tokenizer, lambda i, m: _Later(lambda: loaded.forward(i, m)), loaded.id2label, cfg).tag(texts)
    assert [r.entities for r in sync] == [r.entities for r in deferred]

    boom_id = loaded.tokenizer.convert_tokens_to_ids("Berlin")

    def forward(ids, mask):
        def later():
            if (ids == boom_id).any():
                raise RuntimeError("device-side failure")
            return loaded.forward(ids, mask)
        return _Later(later)

    long_berlin = "in Berlin " + " ".join(["Paris"] * 40)  # ~44 tokens: alone in a 64-token batch
    res = Tagger(loaded.tokenizer, forward, loaded.id2label, TaggingConfig(batch_tokens=64)).tag(["Paris", long_berlin, "London"])
    assert [r.status for r in res] == ["ok", "error", "ok"] and "device-side" in res[1].error


def test_deferred_failure_is_retried_in_halves(loaded):
    boom_id = loaded.tokenizer.convert_tokens_to_ids("Berlin")

    def forward(ids, mask):
        def later():
            if (ids == boom_id).any():
                raise RuntimeError("CUDA out of memory (simulated)")
            return loaded.forward(ids, mask)
        return _Later(later)

    texts = ["Paris", "in Berlin", "London", "New York"]
    res = Tagger(loaded.tokenizer, forward, loaded.id2label, TaggingConfig()).tag(texts)
    assert [r.status for r in res] == ["ok", "error", "ok", "ok"]  # one batch failed; halves isolate it
    assert "out of memory" in res[1].error

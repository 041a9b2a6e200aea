"""Fuzzing: Hypothesis-drawn corpora of hostile text through the tagger and through the job.

Texts mix every Unicode category (astral planes, controls, combining marks, bidi controls,
zero-width characters, unassigned code points and, for the tagger, lone surrogates), very long
texts, nulls, empty strings and duplicates. Whatever they hold: no crash, exactly one result per
input row, every entity inside its text and equal to ``text[start:end]``, and the same entities
whatever the batch composition (tagger) or the number of partitions (job). Derandomized or seeded,
so that CI sees the same corpora every run: about 10,000 documents through the tagger (Hypothesis)
and 2 x 1,540 through the job (a seeded generator).
"""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_udf.cli import main
from ner_udf.config import ModelConfig, TaggingConfig
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from conftest import assert_same_entities, entity_scores
from texts import corpus

FUZZ_BATCHES = int(os.environ.get("NER_FUZZ_BATCHES", "100"))  # x ~110 documents
SPECIALS = "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f" \
           "\u0301\u0308\u20dd\u0000\u0007\u001b\u0085\u2028\u2029\U0001f600\U0001f1eb\U0001f1f7\U00010348\U0010ffff"


def hostile_text(surrogates: bool) -> st.SearchStrategy[str]:
    chars = st.one_of(
        # any category, astral planes included; lone surrogates (Cs) only where a str can hold them
        st.characters(exclude_categories=()) if surrogates else st.characters(codec="utf-8"),
        st.sampled_from(SPECIALS),
        st.sampled_from(list("Paris Berlin Marie Curie Ана Москва 東京 محمد ")),  # some entity-shaped text
    )
    short = st.text(chars, max_size=60)
    words = st.lists(st.sampled_from(corpus(60, seed=171)), min_size=1, max_size=4).map(" ".join)
    long = st.tuples(words, st.integers(2, 12), short).map(lambda t: (t[0] + t[2]) * t[1])  # many windows
    return st.one_of(short, short, short, words.map(lambda w: w + "\u200b\u202e"), words, long)


def corpora(surrogates: bool, min_size: int, max_size: int):
    text = hostile_text(surrogates)
    docs = st.lists(st.one_of(st.none(), st.just(""), text, text, text), min_size=min_size, max_size=max_size)
    return docs.flatmap(lambda d: st.lists(st.sampled_from(d), max_size=len(d) // 5).map(lambda dup: d + dup)
                        if d else st.just(d))  # duplicates of earlier documents


def check_entities(text, result) -> None:
    if result.status != "ok":
        assert result.entities == []
        return
    for e in result.entities:
        assert 0 <= e.start < e.end <= len(text), (e, len(text))


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1))


@settings(max_examples=FUZZ_BATCHES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(corpora(surrogates=True, min_size=80, max_size=120))
def test_tagger_survives_hostile_text(loaded, texts):
    cfg = TaggingConfig(aggregation="simple", max_length=48, stride=12, batch_tokens=1024)
    together = Tagger.from_loaded(loaded, cfg).tag(texts)
    assert len(together) == len(texts)
    for text, res in zip(texts, together):
        if text is None:
            assert res.status == "null"
        elif not text.strip():
            assert res.status == "empty"
        check_entities(text, res)
    # batch composition: every 10th document alone gives what it gave among the others
    for i in range(0, len(texts), 10):
        alone = Tagger.from_loaded(loaded, cfg).tag([texts[i]])[0]
        assert alone.status == together[i].status
        assert [(e.label, e.start, e.end) for e in alone.entities] == [(e.label, e.start, e.end)
                                                                      for e in together[i].entities]


def hostile_corpus(n: int, seed: int) -> list[str | None]:
    """``n`` documents for the job, seeded (Hypothesis would start from its simplest example, all
    nulls and empty strings, and each example here costs two Spark runs): random code points from
    every plane (surrogates excepted: Parquet holds UTF-8), the special characters above, entity-shaped
    words, multi-window texts, nulls, empty strings and duplicates."""
    rnd = random.Random(seed)
    words = corpus(200, seed=seed)

    def char() -> str:
        while True:
            c = chr(rnd.choice([rnd.randrange(0x80), rnd.randrange(0x3000), rnd.randrange(0x110000)]))
            if not 0xD800 <= ord(c) <= 0xDFFF:
                return c

    def text() -> str | None:
        kind = rnd.random()
        if kind < 0.05:
            return None
        if kind < 0.1:
            return rnd.choice(["", " ", "\u200b", "\t\n"])
        parts = [rnd.choice(words) if rnd.random() < 0.6 else "".join(char() if rnd.random() < 0.7
                 else rnd.choice(SPECIALS) for _ in range(rnd.randint(1, 12))) for _ in range(rnd.randint(1, 8))]
        joined = rnd.choice([" ", "", "\u200b", "\u202e", "\n"]).join(parts)
        return joined * (rnd.randint(5, 15) if kind > 0.93 else 1)  # multi-window texts

    docs = [text() for _ in range(n)]
    return docs + [rnd.choice(docs) for _ in range(n // 10)]  # duplicates


@pytest.mark.spark
def test_job_survives_hostile_text(tiny_model_dir, tmp_path):
    texts = hostile_corpus(1400, seed=181)
    tmp = tmp_path
    n = len(texts)
    pq.write_table(pa.table({"doc_id": pa.array(range(n), pa.int64()), "text": pa.array(texts, pa.string())}),
                   tmp / "in.parquet")
    found = {}
    for partitions in (1, 7):
        out = tmp / f"out-{partitions}"
        assert main(["--input", str(tmp / "in.parquet"), "--output", str(out), "--model", str(tiny_model_dir),
                     "--set", "spark.master=local[2]", "--set", f"spark.partitions={partitions}",
                     "--set", "tagging.max_length=48", "--set", "tagging.stride=12",
                     "--set", "spark.conf={spark.driver.host: 127.0.0.1, spark.ui.enabled: 'false'}"]) == 0
        docs = pq.read_table(out / "documents").select(["doc_id", "status"]).to_pylist()
        assert sorted(d["doc_id"] for d in docs) == list(range(n))  # every row exactly once
        statuses = {d["doc_id"]: d["status"] for d in docs}
        assert all(statuses[i] == ("null" if t is None else "empty" if not t.strip() else "ok")
                   for i, t in enumerate(texts))
        found[partitions] = entity_scores(out)
        for doc_id, _, start, end, entity in found[partitions]:
            text = texts[doc_id]
            assert 0 <= start < end <= len(text) and entity == text[start:end], (doc_id, start, end, entity)
    assert found[1], "no entities at all"
    assert_same_entities(found[7], found[1])  # independent of the number of partitions

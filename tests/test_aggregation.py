"""Aggregation as a pure function, on hand-made arrays (no tokenizer, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from ner_udf.aggregation import Entity, LabelSet, Strategy, aggregate_window, merge_overlapping

LABELS = LabelSet.from_id2label(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
O, BP, IP, BL, IL = range(5)


def onehot(ids, p=0.9):
    s = np.full((len(ids), 5), (1 - p) / 4, dtype=np.float32)
    s[np.arange(len(ids)), ids] = p
    return s


# "[CLS] Jo ##hn Smith in Ber ##lin [SEP]" over the text "John Smith in Berlin"
OFFSETS = np.array([[0, 0], [0, 2], [2, 4], [5, 10], [11, 13], [14, 17], [17, 20], [0, 0]])
SPECIAL = np.array([1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
SUBWORD = np.array([0, 0, 1, 0, 0, 0, 1, 0], dtype=bool)


def run(tags, strategy, scores=None):
    s = onehot(tags) if scores is None else scores
    return aggregate_window(s, OFFSETS, SPECIAL, SUBWORD, LABELS, Strategy(strategy))


def test_none_returns_token_tags_without_o():
    got = run([O, BP, IP, IP, O, BL, IL, O], "none")
    assert [(e.label, e.start, e.end) for e in got] == [
        ("B-PER", 0, 2), ("I-PER", 2, 4), ("I-PER", 5, 10), ("B-LOC", 14, 17), ("I-LOC", 17, 20)
    ]
    assert all(e.score == pytest.approx(0.9) for e in got)


def test_simple_groups_adjacent_same_type():
    got = run([O, BP, IP, IP, O, BL, IL, O], "simple")
    assert [(e.label, e.start, e.end) for e in got] == [("PER", 0, 10), ("LOC", 14, 20)]


def test_b_tag_opens_a_new_group():
    got = run([O, BP, BP, IP, O, BL, BL, O], "simple")
    assert [(e.label, e.start, e.end) for e in got] == [("PER", 0, 2), ("PER", 2, 10), ("LOC", 14, 17), ("LOC", 17, 20)]


def test_first_takes_the_first_subword():
    # "Jo" says PER, "##hn" says LOC: first -> whole word PER
    got = run([O, BP, BL, O, O, BL, BP, O], "first")
    assert [(e.label, e.start, e.end) for e in got] == [("PER", 0, 4), ("LOC", 14, 20)]


def test_max_takes_the_most_confident_subword():
    s = onehot([O, BP, BL, O, O, O, O, O])
    s[2] = onehot([BL], p=0.99)[0]
    got = run(None, "max", s)
    assert [(e.label, e.start, e.end) for e in got] == [("LOC", 0, 4)]
    assert got[0].score == pytest.approx(0.99)


def test_average_averages_subword_scores():
    s = onehot([O, BP, BL, O, O, O, O, O])
    s[1] = [0.0, 0.6, 0.0, 0.4, 0.0]
    s[2] = [0.0, 0.0, 0.0, 0.5, 0.5]
    got = run(None, "average", s)
    assert [(e.label, e.start, e.end) for e in got] == [("LOC", 0, 4)]
    assert got[0].score == pytest.approx(0.45)


def test_subword_at_window_start_opens_a_word():
    sub = SUBWORD.copy()
    sub[1] = True  # a window starting inside a word
    got = aggregate_window(onehot([O, BP, IP, O, O, O, O, O]), OFFSETS, SPECIAL, sub, LABELS, Strategy.FIRST)
    assert [(e.label, e.start, e.end) for e in got] == [("PER", 0, 4)]


def test_only_special_tokens_gives_nothing():
    assert aggregate_window(onehot([O, O]), np.zeros((2, 2)), np.ones(2, bool), np.zeros(2, bool), LABELS, Strategy.SIMPLE) == []


def test_labels_without_prefix_continue():
    labels = LabelSet.from_id2label(["O", "PER", "LOC"])
    s = np.eye(3, dtype=np.float32)[[0, 1, 1, 2, 2, 1, 0, 0]]
    got = aggregate_window(s, OFFSETS, SPECIAL, SUBWORD, labels, Strategy.SIMPLE)
    assert [(e.label, e.start, e.end) for e in got] == [("PER", 0, 4), ("LOC", 5, 13), ("PER", 14, 17)]


def test_merge_keeps_longer_then_higher_score():
    a = Entity("PER", 0, 5, 0.9)
    b = Entity("PER", 0, 10, 0.5)  # longer, starts inside a: replaces it
    c = Entity("LOC", 12, 15, 0.6)
    d = Entity("LOC", 12, 15, 0.8)  # same length, higher score: replaces c
    e = Entity("ORG", 20, 25, 0.7)
    assert merge_overlapping([a, c, e, b, d]) == [b, d, e]
    assert merge_overlapping([]) == []

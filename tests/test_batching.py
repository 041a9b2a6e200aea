from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_udf.batching import pad, plan_batches, round_up


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 512), max_size=300), st.integers(64, 20000), st.floats(0.0, 1.0))
def test_batches_cover_every_window_once_within_budget(lengths, budget, slack):
    batches = list(plan_batches(lengths, budget, slack))
    seen = np.concatenate(batches) if batches else np.array([], dtype=int)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= budget
        assert len(b) == 1 or min(lengths[i] for i in b) >= (1 - slack) * longest - 1e-9


def test_padding_is_bounded():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 512, size=500)
    batches = list(plan_batches(lengths, 8192, 0.2))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.12


def test_pad():
    ids, mask = pad([np.array([1, 2, 3]), np.array([4])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 512), min_size=1, max_size=300), st.integers(64, 20000), st.sampled_from([1, 8, 16]))
def test_rounded_batches_keep_the_budget(lengths, budget, multiple):
    batches = list(plan_batches(lengths, budget, 0.1, multiple, 512))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:  # what is fed: pad()'s output, a multiple of `multiple` long, within the budget
        ids, _ = pad([np.ones(lengths[i], dtype=np.int64) for i in b], 0, multiple, 512)
        assert ids.shape[1] % multiple == 0 and ids.shape[1] >= max(lengths[i] for i in b)
        assert len(b) == 1 or ids.size <= budget


def test_round_up_and_pad_to_a_multiple():
    assert [round_up(n, 16) for n in (1, 16, 17, 500)] == [16, 16, 32, 512]
    assert round_up(500, 16, cap=510) == 510 and round_up(511, 16, cap=510) == 511  # the cap, never below
    assert round_up(17, 1) == 17
    ids, mask = pad([np.array([1, 2, 3]), np.array([4])], pad_id=0, multiple=4)
    assert ids.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]] and mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert pad([np.arange(1, 8)], pad_id=0, multiple=4, cap=6)[0].shape == (1, 7)

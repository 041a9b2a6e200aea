"""Pack windows of many documents into length-sorted batches bounded by a token budget."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def plan_batches(lengths: Sequence[int], token_budget: int) -> Iterator[np.ndarray]:
    """Yield index arrays of windows to run together, longest windows first.

    A batch of ``rows`` windows padded to its longest window costs ``rows * longest`` tokens; each
    batch stays within ``token_budget`` (a single window longer than the budget runs alone).
    Sorting by length keeps padding small without a fixed row count.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        rows = max(1, token_budget // max(longest, 1))
        yield order[start : start + rows]
        start += rows


def pad(rows: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64[b, L], attention_mask int64[b, L]) right-padded to the longest row."""
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask

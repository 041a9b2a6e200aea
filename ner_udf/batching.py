"""Pack windows of many documents into length-sorted batches bounded by a token budget."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def round_up(length: int, multiple: int = 1, cap: int | None = None) -> int:
    """``length`` rounded up to a multiple of ``multiple``, but never above ``max(length, cap)``."""
    padded = -(-length // multiple) * multiple if multiple > 1 else length
    return max(length, min(padded, cap)) if cap is not None else padded


def plan_batches(lengths: Sequence[int], token_budget: int, max_padding: float = 0.1,
                 multiple: int = 1, cap: int | None = None) -> Iterator[np.ndarray]:
    """Yield index arrays of windows to run together, longest windows first.

    A batch of ``rows`` windows padded to its longest window costs ``rows * longest`` tokens; each
    batch stays within ``token_budget`` (a single window longer than the budget runs alone), and
    takes only windows at least ``(1 - max_padding) * longest`` long, so no window is more than
    ``max_padding`` padding. Small batches are cheap on CPU; large corpora still fill GPU batches.
    With ``multiple`` > 1 the batch is padded further, to :func:`round_up` of its longest window
    (see :func:`pad`), and its rows are counted at that length, so the budget still holds.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    ordered = lengths[order]
    n = len(order)
    start = 0
    while start < n:
        longest = int(ordered[start])
        rows = max(1, token_budget // max(round_up(longest, multiple, cap), 1))
        floor = longest * (1.0 - max_padding)
        # first position (after start) whose length falls below the floor
        cut = start + int(np.searchsorted(-ordered[start:], -floor, side="right"))
        end = min(start + rows, max(cut, start + 1), n)
        yield order[start:end]
        start = end


def pad(rows: Sequence[np.ndarray], pad_id: int, multiple: int = 1,
        cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64[b, L], attention_mask int64[b, L]) right-padded to the longest row, rounded up to
    a multiple of ``multiple`` (but not beyond ``cap``, the longest window the model takes)."""
    longest = round_up(max(len(r) for r in rows), multiple, cap)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask

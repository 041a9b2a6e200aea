"""Turn per-token class probabilities into entities, exactly like the transformers pipeline.

Everything here is a pure function of numpy arrays: no tokenizer, no model. The steps mirror
``transformers.TokenClassificationPipeline.postprocess``:

1. drop special tokens (``[CLS]``, ``[SEP]``, padding);
2. for ``first`` / ``average`` / ``max``, fuse sub-word tokens into words (a word starts at every token
   that is not a sub-word, and at the first kept token of a window);
3. for every strategy but ``none``, group adjacent tokens/words of the same entity type into one entity
   (a ``B-`` tag always opens a new group), scored with the mean of its members;
4. drop the ``O`` label;
5. for a document tagged in several overlapping windows, merge the entities of all windows
   (:func:`merge_overlapping`).

Offsets are Python code-point indices into the document, ``end`` exclusive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence

import numpy as np

IGNORED_LABELS = frozenset({"O"})


class Strategy(str, enum.Enum):
    NONE = "none"
    SIMPLE = "simple"
    FIRST = "first"
    AVERAGE = "average"
    MAX = "max"

    @property
    def groups(self) -> bool:
        return self is not Strategy.NONE

    @property
    def fuses_words(self) -> bool:
        return self in (Strategy.FIRST, Strategy.AVERAGE, Strategy.MAX)


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity: ``text[start:end]`` carries ``label`` with probability ``score``."""

    label: str
    start: int
    end: int
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in the logits' dtype, as the pipeline computes it."""
    maxes = np.max(logits, axis=-1, keepdims=True)
    shifted = np.exp(logits - maxes)
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _split_tag(label: str) -> tuple[bool, str]:
    """(is_begin, type) with the pipeline's rule: no B-/I- prefix reads as a continuation."""
    if label.startswith("B-"):
        return True, label[2:]
    if label.startswith("I-"):
        return False, label[2:]
    return False, label


@dataclass(frozen=True)
class LabelSet:
    """id2label plus the per-label facts grouping needs, computed once per model."""

    names: tuple[str, ...]
    is_begin: np.ndarray  # bool[n_labels]
    type_id: np.ndarray  # int[n_labels], same value for B-X and I-X
    group_names: tuple[str, ...]  # name a group takes from its first member: "B-PER" -> "PER"
    ignored: np.ndarray  # bool[n_labels]: groups named like this are dropped ("O")

    @classmethod
    def from_id2label(cls, id2label: Sequence[str] | dict[int, str]) -> "LabelSet":
        if isinstance(id2label, dict):
            names = tuple(id2label[i] for i in range(len(id2label)))
        else:
            names = tuple(id2label)
        tags = [_split_tag(n) for n in names]
        types: dict[str, int] = {}
        type_id = np.array([types.setdefault(t, len(types)) for _, t in tags], dtype=np.int64)
        return cls(
            names=names,
            is_begin=np.array([b for b, _ in tags], dtype=bool),
            type_id=type_id,
            group_names=tuple(n.split("-", 1)[-1] for n in names),
            ignored=np.array([n.split("-", 1)[-1] in IGNORED_LABELS for n in names], dtype=bool),
        )


def entity_labels(names: Sequence[str], strategy: str) -> list[str]:
    """The labels this model's entities can carry under ``strategy``: its tags (``B-PER``) with
    ``none``, else the groups they form (``PER``); ``O`` never."""
    labels = LabelSet.from_id2label(names)
    out = labels.names if strategy == "none" else labels.group_names
    return [n for n in dict.fromkeys(out) if n.split("-", 1)[-1] not in IGNORED_LABELS]


def aggregate_window(
    scores: np.ndarray,
    offsets: np.ndarray,
    special_mask: np.ndarray,
    is_subword: np.ndarray,
    labels: LabelSet,
    strategy: Strategy,
) -> list[Entity]:
    """Entities of one window.

    Args:
        scores: float[n_tokens, n_labels] probabilities (softmax of the logits).
        offsets: int[n_tokens, 2] code-point (start, end) of each token in the document.
        special_mask: bool[n_tokens], true for special and padding tokens (skipped).
        is_subword: bool[n_tokens], true when a token continues the previous token's word (see
            :func:`ner_udf.windows.subword_flags` for the pipeline's definition).
        labels: the model's labels.
        strategy: aggregation strategy.
    """
    keep = ~np.asarray(special_mask, dtype=bool)
    s = np.asarray(scores)[keep]
    n = s.shape[0]
    if n == 0:
        return []
    off = np.asarray(offsets)[keep]
    starts = off[:, 0]
    ends = off[:, 1]

    if strategy.fuses_words:
        sub = np.asarray(is_subword, dtype=bool)[keep]
        opens = ~sub
        opens[0] = True
        bounds = np.flatnonzero(opens)
        last = np.append(bounds[1:], n) - 1
        if strategy is Strategy.FIRST:
            chosen = s[bounds]
        elif strategy is Strategy.MAX:
            token_max = s.max(axis=1)
            word_max = np.maximum.reduceat(token_max, bounds)
            lengths = np.diff(np.append(bounds, n))
            hits = np.where(token_max == np.repeat(word_max, lengths), np.arange(n), n)
            chosen = s[np.minimum.reduceat(hits, bounds)]
        else:  # AVERAGE
            lengths = np.diff(np.append(bounds, n))
            chosen = np.add.reduceat(s, bounds, axis=0) / lengths[:, None].astype(s.dtype)
        label_ids = chosen.argmax(axis=1)
        unit_scores = chosen[np.arange(len(bounds)), label_ids]
        unit_starts = starts[bounds]
        unit_ends = ends[last]
    else:
        label_ids = s.argmax(axis=1)
        unit_scores = s[np.arange(n), label_ids]
        unit_starts = starts
        unit_ends = ends

    if strategy is Strategy.NONE:
        return [
            Entity(labels.names[lab], int(a), int(b), float(sc))
            for lab, a, b, sc in zip(label_ids.tolist(), unit_starts, unit_ends, unit_scores)
            if labels.names[lab] not in IGNORED_LABELS
        ]
    return _group(label_ids, unit_scores, unit_starts, unit_ends, labels)


def _group(
    label_ids: np.ndarray,
    unit_scores: np.ndarray,
    unit_starts: np.ndarray,
    unit_ends: np.ndarray,
    labels: LabelSet,
) -> list[Entity]:
    """Group adjacent units (tokens or words) of one type; a B- tag always opens a group."""
    m = len(label_ids)
    types = labels.type_id[label_ids]
    opens = np.ones(m, dtype=bool)
    opens[1:] = labels.is_begin[label_ids[1:]] | (types[1:] != types[:-1])
    bounds = np.flatnonzero(opens)
    lengths = np.diff(np.append(bounds, m))
    means = np.add.reduceat(unit_scores.astype(np.float64), bounds) / lengths
    last = np.append(bounds[1:], m) - 1
    keep = ~labels.ignored[label_ids[bounds]]
    names = labels.group_names
    return [
        Entity(names[lab], a, b, score)
        for lab, a, b, score in zip(
            label_ids[bounds[keep]].tolist(),
            unit_starts[bounds[keep]].tolist(),
            unit_ends[last[keep]].tolist(),
            means[keep].tolist(),
        )
    ]


def merge_overlapping(entities: Sequence[Entity]) -> list[Entity]:
    """Merge the entities of overlapping windows of one document, as the pipeline does.

    Entities are sorted by start (stably, so window order breaks ties); an entity starting inside
    the one kept so far replaces it when it is longer, or as long with a higher score.
    """
    if not entities:
        return []
    ordered = sorted(entities, key=lambda e: e.start)
    merged: list[Entity] = []
    previous = ordered[0]
    for entity in ordered:
        if previous.start <= entity.start < previous.end:
            current_length = entity.end - entity.start
            previous_length = previous.end - previous.start
            if current_length > previous_length or (
                current_length == previous_length and entity.score > previous.score
            ):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged

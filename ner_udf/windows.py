"""Tokenize documents into model windows, the way the transformers pipeline does with ``stride``.

A document longer than ``max_length`` tokens (special tokens included) is cut into windows of
``max_length`` tokens; each window repeats the last ``stride`` tokens of the previous one. This is
exactly the fast tokenizer's ``return_overflowing_tokens=True, stride=stride`` behaviour, which the
pipeline uses, so we call it the same way. Offsets are code-point indices into the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Window:
    """One model input: token ids with, per token, offsets, special flag and sub-word flag."""

    doc: int  # index of the document in the tokenized list
    input_ids: np.ndarray  # int64[n]
    offsets: np.ndarray  # int64[n, 2]
    special: np.ndarray  # bool[n]
    is_subword: np.ndarray  # bool[n]

    def __len__(self) -> int:
        return len(self.input_ids)


class WindowMaker:
    """Holds the tokenizer-derived tables needed to cut texts into windows."""

    def __init__(self, tokenizer, max_length: int, stride: int):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) tokenizer is required for offsets and windows")
        if not 0 <= stride < max_length:
            raise ValueError(f"stride must be in [0, max_length), got stride={stride}, max_length={max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self._token_len = np.array([len(t) if t is not None else -1 for t in vocab], dtype=np.int64)
        self._unk_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else -1
        backend = getattr(tokenizer, "_tokenizer", None)
        self._word_aware = bool(backend is not None and getattr(backend.model, "continuing_subword_prefix", None))
        self.n_special = tokenizer.num_special_tokens_to_add(pair=False)

    def __call__(self, texts: list[str]) -> tuple[list[Window], np.ndarray]:
        """Windows of all texts (in document order) and the number of real tokens per text."""
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        mapping = enc["overflow_to_sample_mapping"]
        windows = []
        n_tokens = np.zeros(len(texts), dtype=np.int64)
        seen = np.zeros(len(texts), dtype=bool)
        for ids, offs, spec, doc in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], mapping):
            ids_a = np.asarray(ids, dtype=np.int64)
            offs_a = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
            spec_a = np.asarray(spec, dtype=bool)
            real = int((~spec_a).sum())
            n_tokens[doc] += real if not seen[doc] else real - self.stride
            seen[doc] = True
            windows.append(Window(doc, ids_a, offs_a, spec_a, self.subword_flags(ids_a, offs_a, texts[doc])))
        return windows, n_tokens

    def subword_flags(self, ids: np.ndarray, offsets: np.ndarray, text: str) -> np.ndarray:
        """The pipeline's definition of "this token continues a word".

        With a word-aware tokenizer (WordPiece ``##``): the token's vocabulary string is not as long
        as the text it covers. Otherwise the pipeline's fallback: the token does not follow a space.
        Unknown tokens never continue a word.
        """
        if self._word_aware:
            flags = self._token_len[ids] != (offsets[:, 1] - offsets[:, 0])
        else:
            flags = np.array(
                [s > 0 and " " not in text[s - 1 : s + 1] for s in offsets[:, 0].tolist()], dtype=bool
            )
        flags &= ids != self._unk_id
        return flags

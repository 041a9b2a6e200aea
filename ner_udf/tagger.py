"""``Tagger.tag(texts) -> list[DocResult]``: entities and per-document stats for many texts at once.

Texts are deduplicated, tokenized into overlapping windows, packed into length-sorted batches under
a token budget, run through the model and aggregated exactly like the transformers pipeline. Work is
done in chunks of at most ``tagging.chunk_chars`` characters so memory stays bounded whatever the
number or size of the texts. A failure on one document marks that document ``error`` and the others
go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from .aggregation import Entity, LabelSet, Strategy, aggregate_window, merge_overlapping
from .batching import pad, plan_batches
from .config import TaggingConfig
from .errors import UserError
from .windows import Window, WindowMaker

OK, EMPTY, NULL, ERROR = "ok", "empty", "null", "error"


@dataclass(slots=True)
class DocResult:
    """What tagging one document produced. ``entities`` is empty unless ``status == "ok"``."""

    status: str
    entities: list[Entity] = field(default_factory=list)
    n_chars: int | None = None
    n_tokens: int = 0
    n_windows: int = 0
    truncated: bool = False
    error: str | None = None


@dataclass
class TagStats:
    """Counters of one tagger, for the run manifest and benchmarks."""

    documents: int = 0
    unique_texts: int = 0
    windows: int = 0
    tokens: int = 0  # real tokens fed to the model (window overlap counted)
    padded_tokens: int = 0  # tokens fed including padding
    batches: int = 0
    windows_rechecked: int = 0  # windows the forward ran again at fp32 (model.recheck_margin)
    seconds_tokenize: float = 0.0
    seconds_model: float = 0.0  # forward calls plus waiting for their results
    seconds_aggregate: float = 0.0


class Tagger:
    """Tags texts with one loaded model (see :func:`ner_udf.model.load_model`).

    ``forward(ids, mask)`` returns probabilities float32[b, L, n_labels]; any callable with that
    signature works, which is how tests swap in fakes. A forward with a ``rechecked`` count (the
    windows it ran again at fp32, ``model.recheck_margin``) has it added to ``stats.windows_rechecked``.
    """

    def __init__(
        self,
        tokenizer,
        forward: Callable[[np.ndarray, np.ndarray], np.ndarray],
        id2label: dict[int, str] | Sequence[str],
        config: TaggingConfig,
        max_positions: int = 512,
        length_multiple: int = 1,
    ):
        self.config = config
        # every batch is padded up to a multiple of this, never beyond max_length (see
        # ModelConfig.length_multiple)
        self.length_multiple = max(1, int(length_multiple))
        self.forward = forward
        self.labels = LabelSet.from_id2label(id2label)
        self.strategy = Strategy(config.aggregation)
        tok_max = int(getattr(tokenizer, "model_max_length", max_positions) or max_positions)
        self.max_length = config.max_length or min(tok_max, max_positions)
        n_special = tokenizer.num_special_tokens_to_add(pair=False)
        if self.max_length <= n_special + 1:
            raise UserError(f"tagging.max_length: got {self.max_length}; must exceed {n_special + 1}")
        self.stride = config.resolved_stride(self.max_length, n_special)
        if self.stride >= self.max_length - n_special:
            raise UserError(
                f"tagging.stride: got {self.stride}; must be < max_length - special tokens "
                f"({self.max_length - n_special})"
            )
        self.windows = WindowMaker(tokenizer, self.max_length, self.stride)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats = TagStats()

    @classmethod
    def from_loaded(cls, loaded, config: TaggingConfig) -> "Tagger":
        # GPU batches are launched ahead (see _Pending in ner_udf.model) rather than run in a model
        # thread: on an H200 a thread made bf16 3x slower (kernel launches waited for the GIL).
        return cls(loaded.tokenizer, loaded.forward, loaded.id2label, config, loaded.max_positions,
                   loaded.length_multiple)

    # -- public -------------------------------------------------------------------------------
    def tag(self, texts: Sequence[str | None]) -> list[DocResult]:
        results: list[DocResult | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            if text is None or (isinstance(text, float) and np.isnan(text)):
                results[i] = DocResult(NULL)
            elif not isinstance(text, str):
                results[i] = DocResult(ERROR, error=f"text is {type(text).__name__}, not a string")
            elif not text.strip():
                results[i] = DocResult(EMPTY, n_chars=len(text))
            elif self.config.dedupe:
                todo.setdefault(text, []).append(i)
            else:
                todo[f"\0{i}"] = [i]  # unique key; the text itself is texts[i]
        self.stats.documents += len(texts)
        keys = list(todo)
        self.stats.unique_texts += len(keys)

        def emit(chunk_keys, done):
            for k, res in zip(chunk_keys, self._finish(done)):
                for i in todo[k]:
                    results[i] = res if i == todo[k][0] else _copy(res)

        previous = None  # one chunk in flight: chunk k+1 runs on the GPU while chunk k is aggregated
        for chunk in self._chunks(keys, texts, todo):
            state = self._prepare([texts[todo[k][0]] for k in chunk])
            if previous is not None:
                emit(*previous)
            previous = (chunk, state)
        if previous is not None:
            emit(*previous)
        return results  # type: ignore[return-value]

    # -- stages -------------------------------------------------------------------------------
    def _chunks(self, keys, texts, todo):
        chunk, size = [], 0
        for k in keys:
            n = len(texts[todo[k][0]])
            if chunk and size + n > self.config.chunk_chars:
                yield chunk
                chunk, size = [], 0
            chunk.append(k)
            size += n
        if chunk:
            yield chunk

    def _tokenize(self, texts: list[str]) -> tuple[list[list[Window]], np.ndarray, list[str | None]]:
        per_doc: list[list[Window]] = [[] for _ in texts]
        errors: list[str | None] = [None] * len(texts)
        try:
            windows, n_tokens = self.windows(texts)
        except Exception:  # isolate the culprit(s): tokenize one by one
            n_tokens = np.zeros(len(texts), dtype=np.int64)
            windows = []
            for i, t in enumerate(texts):
                try:
                    w, n = self.windows([t])
                except Exception as exc:  # noqa: BLE001 - reported per document
                    errors[i] = f"tokenization failed: {type(exc).__name__}: {exc}"
                    continue
                windows.extend(Window(i, x.input_ids, x.offsets, x.special, x.is_subword) for x in w)
                n_tokens[i] = n[0]
        for w in windows:
            per_doc[w.doc].append(w)
        return per_doc, n_tokens, errors

    def _prepare(self, texts: list[str]) -> "_Chunk":
        """Tokenize a chunk and submit its batches to the model (asynchronous on GPUs)."""
        t0 = time.perf_counter()
        per_doc, n_tokens, errors = self._tokenize(texts)
        self.stats.seconds_tokenize += time.perf_counter() - t0
        cap = self.config.max_windows_per_doc
        results = []
        flat: list[Window] = []
        for i, text in enumerate(texts):
            if errors[i] is not None:
                results.append(DocResult(ERROR, n_chars=len(text), error=errors[i]))
                continue
            wins = per_doc[i]
            truncated = bool(cap and len(wins) > cap)
            if truncated:
                wins = per_doc[i] = wins[:cap]
            if n_tokens[i] == 0:
                per_doc[i] = wins = []
            flat.extend(wins)
            results.append(
                DocResult(OK, n_chars=len(text), n_tokens=int(n_tokens[i]), n_windows=len(wins), truncated=truncated)
            )
        failures: dict[int, str] = {}
        pending = []
        for batch in self.batches(flat):
            pending.extend(self._submit(batch, failures))
        return _Chunk(per_doc, results, pending, failures)

    def _finish(self, chunk: "_Chunk") -> list[DocResult]:
        """Collect the model's output for a chunk and aggregate it into entities."""
        probs: dict[int, np.ndarray] = {}
        failures = chunk.failures
        t0 = time.perf_counter()
        queue = list(chunk.pending)
        while queue:
            batch, handle = queue.pop(0)
            try:
                out = _resolve(handle)
            except Exception as exc:  # noqa: BLE001 - a failure surfacing at synchronisation
                if len(batch) > 1:  # e.g. out of memory: run it again in halves
                    half = len(batch) // 2
                    queue[:0] = self._submit(batch[:half], failures) + self._submit(batch[half:], failures)
                    continue
                failures[id(batch[0])] = f"model failed: {type(exc).__name__}: {str(exc)[:500]}"
                continue
            for row, w in enumerate(batch):
                probs[id(w)] = out[row, : len(w)]
        t1 = time.perf_counter()
        self.stats.seconds_model += t1 - t0
        for i, res in enumerate(chunk.results):
            if res.status != OK:
                continue
            failed = [failures[id(w)] for w in chunk.per_doc[i] if id(w) in failures]
            if failed:
                res.status, res.error, res.n_windows = ERROR, failed[0], 0
                continue
            found: list[Entity] = []
            for w in chunk.per_doc[i]:
                found.extend(aggregate_window(probs[id(w)], w.offsets, w.special, w.is_subword, self.labels, self.strategy))
            if len(chunk.per_doc[i]) > 1 and self.strategy.groups:
                found = merge_overlapping(found)
            res.entities = self._post(found)
        self.stats.seconds_aggregate += time.perf_counter() - t1
        return chunk.results

    def batches(self, windows: list[Window]) -> Iterator[list[Window]]:
        """The windows the model runs together, longest first, within ``tagging.batch_tokens`` and
        ``tagging.max_padding`` (:func:`~ner_udf.batching.plan_batches`); :meth:`padded` makes the
        model's input of one. The benchmarks time the model through these two, as the job feeds it."""
        for idx in plan_batches([len(w) for w in windows], self.config.batch_tokens, self.config.max_padding,
                                self.length_multiple, self.max_length):
            yield [windows[j] for j in idx]

    def padded(self, batch: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask) of one batch, padded as the model is fed."""
        return pad([w.input_ids for w in batch], self.pad_id, self.length_multiple, self.max_length)

    def _submit(self, batch: list[Window], failures: dict) -> list[tuple[list[Window], object]]:
        """Run (or launch) one batch; on failure split it in halves, then blame single windows."""
        ids, mask = self.padded(batch)
        t0 = time.perf_counter()
        rechecked = getattr(self.forward, "rechecked", 0)
        try:
            handle = self.forward(ids, mask)
            self.stats.seconds_model += time.perf_counter() - t0
            self.stats.windows_rechecked += getattr(self.forward, "rechecked", 0) - rechecked
        except Exception as exc:  # noqa: BLE001
            if len(batch) > 1:
                half = len(batch) // 2
                return self._submit(batch[:half], failures) + self._submit(batch[half:], failures)
            failures[id(batch[0])] = f"model failed: {type(exc).__name__}: {str(exc)[:500]}"
            return []
        self.stats.batches += 1
        self.stats.padded_tokens += ids.size
        self.stats.windows += len(batch)
        self.stats.tokens += int(mask.sum())
        return [(batch, handle)]

    def _post(self, entities: list[Entity]) -> list[Entity]:
        cfg = self.config
        if not (cfg.label_map or cfg.labels or cfg.min_score):
            return entities
        out = []
        for e in entities:
            label = cfg.label_map.get(e.label, e.label)
            if cfg.labels and label not in cfg.labels:
                continue
            if e.score < cfg.min_score:
                continue
            out.append(Entity(label, e.start, e.end, e.score) if label != e.label else e)
        return out


@dataclass
class _Chunk:
    per_doc: list[list[Window]]
    results: list[DocResult]
    pending: list[tuple[list[Window], object]]
    failures: dict[int, str]


def _resolve(handle):
    """The probabilities behind a forward result: an array, or a handle whose ``result()`` gives them."""
    return handle.result() if hasattr(handle, "result") else handle


def _copy(res: DocResult) -> DocResult:
    return DocResult(res.status, list(res.entities), res.n_chars, res.n_tokens, res.n_windows, res.truncated, res.error)

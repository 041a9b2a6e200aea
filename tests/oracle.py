"""The reference: transformers' token-classification pipeline, as users would call it."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def oracle(model_dir: str, strategy: str, max_length: int | None = None, stride: int | None = None):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    if max_length is not None:
        tok.model_max_length = max_length
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    pipe = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy=strategy, device="cpu")

    def run(text: str) -> list[tuple[str, int, int, float]]:
        kwargs = {"stride": stride} if stride is not None else {}
        out = pipe(text, **kwargs)
        key = "entity" if strategy == "none" else "entity_group"
        return [(e[key], int(e["start"]), int(e["end"]), float(e["score"])) for e in out]

    return run


def assert_matches_oracle(ours, theirs, text: str, tol: float = 1e-4) -> None:
    """The tagger's entities (``Entity`` objects) for ``text`` are the pipeline's (``oracle()`` tuples):
    the same labels and offsets in the same order, scores within ``tol``."""
    got = [(e.label, e.start, e.end) for e in ours]
    want = [(lab, s, e) for lab, s, e, _ in theirs]
    assert got == want, f"entities differ for {text!r}:\n ours   {got}\n oracle {want}"
    for e, (_, _, _, score) in zip(ours, theirs):
        assert abs(e.score - score) <= tol, f"score {e.score} vs {score} for {e} in {text!r}"

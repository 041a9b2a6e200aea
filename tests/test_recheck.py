"""model.recheck_margin: a reduced precision whose close calls are run again at fp32. Windows with a
close call take fp32's probabilities, the others keep the reduced precision's; the setting is
refused where it cannot apply and is part of the model identity an incremental run must match."""

from __future__ import annotations

import numpy as np
import pytest

from ner_udf import manifest
from ner_udf import model as model_mod
from ner_udf.config import ModelConfig, TaggingConfig, load_config
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from texts import corpus, long_corpus

TAGGING = TaggingConfig(aggregation="simple", max_length=48, stride=8, batch_tokens=512)


def _load(path, precision, margin=0.0):
    return load_model(ModelConfig(name=str(path), device="cpu", threads=1, precision=precision,
                                  recheck_margin=margin))


def _batches(tagger, texts):
    """(ids, mask) of the batches the tagger feeds the model for ``texts``."""
    windows, _ = tagger.windows(texts)
    return [tagger.padded(b) for b in tagger.batches(windows)]


def _close_rows(probs, ids, mask, special, margin):
    top2 = np.sort(probs, axis=-1)[..., -2:]
    close = (top2[..., 1] - top2[..., 0] < margin) & (mask != 0) & ~np.isin(ids, special)
    return close.any(axis=1)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    model_mod.clear_cache()
    yield {p: _load(tiny_model_dir, p) for p in ("fp32", "bf16", "int8")}
    model_mod.clear_cache()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_close_windows_take_fp32_probabilities_and_the_others_keep_their_own(tiny_model_dir, loaded, precision):
    margin = 0.3  # the tiny random model hesitates often: some windows are close calls, some not
    checked = _load(tiny_model_dir, precision, margin)
    tok = checked.tokenizer
    special = np.array([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])  # [UNK] is checked
    tagger = Tagger.from_loaded(checked, TAGGING)
    n_close = n_clear = 0
    for ids, mask in _batches(tagger, corpus(120, seed=7) + long_corpus(20)):
        got = checked.forward(ids, mask)
        fast = loaded[precision].forward(ids, mask)
        exact = loaded["fp32"].forward(ids, mask)
        close = _close_rows(fast, ids, mask, special, margin)
        real = mask.astype(bool)
        assert np.abs(got[close][real[close]] - exact[close][real[close]]).max(initial=0) < 1e-5
        assert np.array_equal(got[~close], fast[~close])
        n_close += int(close.sum())
        n_clear += int((~close).sum())
    assert n_close > 20 and n_clear > 20, (n_close, n_clear)
    assert checked.forward.rechecked == n_close and checked.forward.windows == n_close + n_clear


def test_a_margin_of_one_gives_fp32s_entities(tiny_model_dir, loaded):
    texts = corpus(150, seed=3) + long_corpus(20, seed=4)
    want = Tagger.from_loaded(loaded["fp32"], TAGGING).tag(texts)
    plain = Tagger.from_loaded(loaded["bf16"], TAGGING).tag(texts)
    rechecking = Tagger.from_loaded(_load(tiny_model_dir, "bf16", 1.0), TAGGING)
    got = rechecking.tag(texts)
    assert rechecking.stats.windows > len(texts) and rechecking.stats.windows_rechecked == rechecking.stats.windows

    def key(results):
        return [[(e.label, e.start, e.end) for e in r.entities] for r in results]

    def scores(results):
        return np.array([e.score for r in results for e in r.entities])

    assert key(got) == key(want)
    assert np.abs(scores(got) - scores(want)).max() < 1e-5
    # bf16 alone does not: otherwise this test could not fail
    assert key(plain) != key(want) or np.abs(scores(plain) - scores(want)).max() > 1e-3


def test_the_tagger_counts_only_the_windows_run_again(tiny_model_dir, loaded):
    texts = corpus(120, seed=7) + long_corpus(20)
    plain = Tagger.from_loaded(loaded["int8"], TAGGING)
    plain.tag(texts)
    checked = _load(tiny_model_dir, "int8", 0.3)
    before = checked.forward.rechecked
    tagger = Tagger.from_loaded(checked, TAGGING)
    tagger.tag(texts)
    assert plain.stats.windows_rechecked == 0
    assert 0 < tagger.stats.windows_rechecked == checked.forward.rechecked - before < tagger.stats.windows


def test_margin_zero_is_the_reduced_precision_alone(tiny_model_dir, loaded):
    assert _load(tiny_model_dir, "bf16", 0.0) is loaded["bf16"]  # the default: one model, no fp32 copy
    assert not isinstance(loaded["bf16"].forward, model_mod._rechecked)


@pytest.mark.parametrize("sets, message", [
    ({"precision": "fp32", "recheck_margin": 0.02}, "model.recheck_margin: got 0.02 with model.precision=fp32"),
    ({"precision": "bf16", "backend": "openvino", "recheck_margin": 0.02},
     "model.recheck_margin: got 0.02 with model.backend=openvino"),
    ({"precision": "bf16", "recheck_margin": 1.5}, "recheck_margin"),
    ({"precision": "bf16", "recheck_margin": -0.1}, "recheck_margin"),
])
def test_settings_the_recheck_cannot_apply_to_are_refused(sets, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**sets)


def test_the_margin_is_part_of_the_model_identity(tmp_path):
    info = {"name": "m", "resolved_revision": None, "weights_sha256": "ab" * 32, "labels": ["O", "B-PER"]}

    def identity(*overrides):
        cfg = load_config(None, sets=["model.precision=bf16", *overrides])
        return manifest.model_identity(info, cfg)

    plain, checked, wider = identity(), identity("model.recheck_margin=0.02"), identity("model.recheck_margin=0.05")
    assert "recheck_margin" not in plain  # outputs written before the setting existed still match
    assert manifest.identity_changes(plain, plain) == []
    assert manifest.identity_changes(plain, checked) == ["model.recheck_margin: None -> 0.02"]
    assert manifest.identity_changes(checked, plain) == ["model.recheck_margin: 0.02 -> None"]
    assert manifest.identity_changes(checked, wider) == ["model.recheck_margin: 0.02 -> 0.05"]


def test_the_int8_scheme_and_the_backend_are_part_of_the_model_identity():
    info = {"name": "m", "resolved_revision": None, "weights_sha256": "ab" * 32, "labels": ["O", "B-PER"]}

    def identity(*sets):
        return manifest.model_identity(info, load_config(None, sets=list(sets)))

    fp32, int8, ov = identity(), identity("model.precision=int8"), identity("model.backend=openvino")
    assert "quantization" not in fp32 and "backend" not in fp32  # fp32 eager outputs written earlier still match
    assert int8["quantization"] == model_mod.INT8_SCHEME == "dynamic_per_channel"
    # an int8 output written before per-channel quantization (02ab1d4) records no scheme: refused
    per_tensor = {k: v for k, v in int8.items() if k != "quantization"}
    assert manifest.identity_changes(per_tensor, int8) == ["model.precision int8 scheme: None -> dynamic_per_channel"]
    assert manifest.identity_changes(int8, int8) == []
    assert manifest.identity_changes(fp32, ov) == ["model.backend: None -> openvino"]
    assert manifest.identity_changes(ov, fp32) == ["model.backend: openvino -> None"]

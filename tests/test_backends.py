"""model.backend: every backend other than torch gives the torch backend's probabilities and the
transformers pipeline's entities; OpenVINO's converted IR is cached on disk and reused."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from ner_udf import model as model_mod
from ner_udf.config import ModelConfig, TaggingConfig, load_config
from ner_udf.errors import UserError
from ner_udf.model import load_model
from ner_udf.tagger import Tagger
from oracle import assert_matches_oracle, oracle
from texts import corpus, long_corpus

BACKENDS = ["openvino"]  # every shipped backend but torch


def _need(backend):
    if backend == "openvino":
        pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """A private copy of the tiny model: the IR written next to it stays out of other tests' way."""
    dst = tmp_path_factory.mktemp("backends") / "tiny"
    shutil.copytree(tiny_model_dir, dst)
    return dst


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _cfg(path, backend):
    return ModelConfig(name=str(path), device="cpu", threads=1, backend=backend)


def _batches(tokenizer):
    """Token batches of several shapes, with and without padding."""
    rng = np.random.default_rng(0)
    out = []
    for rows, length, padded in ((1, 5, False), (3, 17, True), (4, 64, True), (2, 33, False)):
        ids = rng.integers(5, tokenizer.vocab_size, size=(rows, length))
        mask = np.ones((rows, length), dtype=np.int64)
        if padded:
            for r in range(1, rows):
                mask[r, length - 1 - r * 3:] = 0
        ids[:, 0] = tokenizer.cls_token_id
        ids[mask == 0] = tokenizer.pad_token_id
        out.append((ids.astype(np.int64), mask))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_probabilities_match_torch(model_dir, backend):
    _need(backend)
    ref = load_model(_cfg(model_dir, "torch"))
    other = load_model(_cfg(model_dir, backend))
    assert other is not ref
    for ids, mask in _batches(ref.tokenizer):
        a, b = ref.forward(ids, mask), other.forward(ids, mask)
        assert b.dtype == np.float32 and b.shape == a.shape
        real = mask.astype(bool)
        np.testing.assert_allclose(b[real], a[real], atol=1e-4)
        np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strategy,max_length,stride", [("simple", None, None), ("first", 48, 8)])
def test_entities_match_the_pipeline(model_dir, backend, strategy, max_length, stride):
    _need(backend)
    texts = corpus(120) if max_length is None else long_corpus(15)
    loaded = load_model(_cfg(model_dir, backend))
    cfg = TaggingConfig(aggregation=strategy, max_length=max_length, stride=stride)
    ours = Tagger.from_loaded(loaded, cfg).tag(texts)
    ref = oracle(str(model_dir), strategy, max_length, stride)
    assert sum(len(r.entities) for r in ours) > 50
    for text, res in zip(texts, ours):
        assert res.status == "ok"
        assert_matches_oracle(res.entities, ref(text), text)


def test_openvino_ir_is_converted_once_and_reused(model_dir):
    pytest.importorskip("openvino")
    model_mod.clear_cache()
    before = model_mod.OV_CONVERSIONS
    first = load_model(_cfg(model_dir, "openvino"))
    converted = model_mod.OV_CONVERSIONS
    assert converted - before <= 1  # converted here, or already by an earlier test of this module
    irs = list((model_dir / ".openvino").glob("*/model.xml"))
    assert len(irs) == 1 and irs[0].with_suffix(".bin").is_file()
    mtime = irs[0].stat().st_mtime_ns
    model_mod.clear_cache()  # a new worker: a fresh load, from the IR
    again = load_model(_cfg(model_dir, "openvino"))
    assert again is not first and model_mod.OV_CONVERSIONS == converted
    assert irs[0].stat().st_mtime_ns == mtime
    ids, mask = _batches(first.tokenizer)[1]
    np.testing.assert_array_equal(first.forward(ids, mask), again.forward(ids, mask))
    assert not list(model_dir.glob(".openvino/.*tmp*"))  # no temporary folder left behind


def test_openvino_read_only_model_dir_falls_back_to_the_cache_dir(model_dir, tmp_path):
    pytest.importorskip("openvino")
    ro = tmp_path / "ro-model"
    shutil.copytree(model_dir, ro, ignore=shutil.ignore_patterns(".openvino"))
    if os.geteuid() == 0:  # root writes through permissions: make the IR folder impossible instead
        (ro / ".openvino").write_text("not a folder")
    ro.chmod(0o555)
    try:
        model_mod.clear_cache()
        before = model_mod.OV_CONVERSIONS
        loaded = load_model(_cfg(ro, "openvino"))
        assert model_mod.OV_CONVERSIONS == before + 1
        cached = list((tmp_path / "xdg" / "ner_udf" / "openvino").glob("*/model.xml"))
        assert len(cached) == 1
        model_mod.clear_cache()
        again = load_model(_cfg(ro, "openvino"))
        assert model_mod.OV_CONVERSIONS == before + 1  # the cache dir's IR was read
        ids, mask = _batches(loaded.tokenizer)[2]
        np.testing.assert_array_equal(loaded.forward(ids, mask), again.forward(ids, mask))
    finally:
        ro.chmod(0o755)
        model_mod.clear_cache()


def test_openvino_refuses_what_it_cannot_run(model_dir, monkeypatch):
    with pytest.raises(UserError, match="model.backend: got openvino with model.device=cuda"):
        load_config(sets=["model.backend=openvino", "model.device=cuda"])
    with pytest.raises(UserError, match="model.backend: got openvino with model.precision=int8"):
        load_config(sets=["model.backend=openvino", "model.device=cpu", "model.precision=int8"])
    with pytest.raises(UserError, match="model.backend: got 'tensorrt'"):
        load_config(sets=["model.backend=tensorrt"])
    with pytest.raises(UserError, match="model.backend: openvino runs on CPU only"):
        model_mod._check_openvino("cuda:0")
    with pytest.raises(ValueError, match="model.backend: got openvino with model.precision=int8"):
        ModelConfig(name=str(model_dir), device="cpu", backend="openvino", precision="int8")  # the API's too
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(UserError, match=r"openvino is not installed.*ner-udf\[openvino\]"):
        load_model(_cfg(model_dir, "openvino").model_copy(update={"threads": 2}))  # not cached: a load

"""Model loading: process cache, safetensors-only policy, device and precision checks."""

from __future__ import annotations

import shutil

import pytest

from ner_udf import model as model_mod
from ner_udf.config import ModelConfig
from ner_udf.errors import UserError
from ner_udf.model import load_model
from tiny_model import broken_model


def test_second_request_in_a_process_is_free(tiny_model_dir):
    cfg = ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1)
    first = load_model(cfg)
    loads = model_mod.LOAD_COUNT
    assert load_model(cfg) is first and model_mod.LOAD_COUNT == loads
    other = load_model(cfg.model_copy(update={"precision": "bf16"}))  # another spec: another load
    assert other is not first and model_mod.LOAD_COUNT == loads + 1


def test_bf16_on_cpu_pads_lengths_to_a_multiple_of_16(tiny_model_dir):
    """PyTorch's CPU flash attention keeps kernels per distinct length at bf16 (never freed), so bf16
    on CPU pads batch lengths to a multiple of 16 unless model.length_multiple says otherwise."""
    cfg = ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1)
    assert load_model(cfg).length_multiple == 1
    assert load_model(cfg.model_copy(update={"precision": "bf16"})).length_multiple == 16
    assert load_model(cfg.model_copy(update={"precision": "int8"})).length_multiple == 1
    explicit = load_model(cfg.model_copy(update={"precision": "bf16", "length_multiple": 1}))
    assert explicit.length_multiple == 1  # its own cache entry, not the auto one
    assert load_model(cfg.model_copy(update={"length_multiple": 8})).length_multiple == 8


def test_pickle_checkpoints_need_explicit_permission(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").unlink()
    state = AutoModelForTokenClassification.from_pretrained(tiny_model_dir).state_dict()
    torch.save(state, pickled / "pytorch_model.bin")  # a legacy pickle checkpoint
    assert not list(pickled.glob("*.safetensors"))
    with pytest.raises(UserError, match="only safetensors"):
        load_model(ModelConfig(name=str(pickled), device="cpu", threads=1))
    loaded = load_model(ModelConfig(name=str(pickled), device="cpu", threads=1, allow_pickle=True))
    assert loaded.id2label[1] == "B-PER"


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="model.name: cannot load"):
        load_model(ModelConfig(name=str(tmp_path / "nope"), device="cpu", threads=1))


def test_fp16_needs_a_gpu(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        load_model(ModelConfig(name=str(tiny_model_dir), device="auto", precision="fp16", threads=1))
    with pytest.raises(UserError, match="no CUDA device"):
        load_model(ModelConfig(name=str(tiny_model_dir), device="cuda", threads=1))


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU (never in CI)")
def test_gpu_placement_and_precision(tiny_model_dir):
    import numpy as np

    for precision, device, task_gpu in (("fp32", "cuda", None), ("bf16", "cuda", "cuda:0"), ("fp16", "auto", None)):
        loaded = load_model(ModelConfig(name=str(tiny_model_dir), device=device, precision=precision), device=task_gpu)
        assert loaded.device.startswith("cuda") and loaded.length_multiple == 1
        probs = loaded.forward(np.array([[2, 10, 3]]), np.ones((1, 3), dtype=np.int64))
        probs = probs.result() if hasattr(probs, "result") else probs
        assert probs.shape == (1, 3, 7) and abs(float(probs.sum()) - 3.0) < 1e-3
    import torch

    assert not torch.backends.cuda.cudnn_sdp_enabled()  # model.cudnn_attention: false (per-shape graphs)


def test_memory_release_trims_only_after_growth(monkeypatch):
    rel = model_mod._MemoryReleaser(slack_mb=100)
    if rel.trim is None:
        pytest.skip("not glibc")
    calls = []
    rss = iter([500, 480, 550, 560, 700, 450]).__next__  # MB, read before and after each trim
    monkeypatch.setattr(rel, "rss", lambda: rss() * 2**20)
    monkeypatch.setattr(rel, "trim", lambda pad: calls.append(pad))
    rel()  # first call: trims and sets the floor (480)
    rel()  # 550 <= 480 + 100: nothing
    rel()  # 560: nothing
    rel()  # 700 > 580: trim, floor 450
    assert calls == [0, 0] and rel.trims == 2 and rel.floor == 450 * 2**20


def test_memory_release_keeps_results_identical(tiny_model_dir):
    import numpy as np

    ids = np.array([[2, 10, 11, 12, 3], [2, 13, 14, 3, 0]])
    mask = (ids != 0).astype(np.int64)
    outs = []
    for slack in (None, 0):
        model_mod.clear_cache()
        outs.append(load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", release_memory_mb=slack)).forward(ids, mask))
    model_mod.clear_cache()
    assert np.array_equal(outs[0], outs[1])


def test_cpu_shape_caches_are_capped(tiny_model_dir, monkeypatch):
    """oneDNN's primitive cache and ideep's computation cache keep one entry per batch shape (1,024
    by default): load_model caps both before the first forward pass reads them."""
    import os

    for var in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.delenv(var, raising=False)
    model_mod.clear_cache()
    load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1, onednn_cache_capacity=8))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert os.environ["LRU_CACHE_CAPACITY"] == "8"
    model_mod.clear_cache()


def test_load_reports_its_peak_then_resets_the_mark(tiny_model_dir):
    """load_model records the process's peak resident set during the load, then resets the kernel's
    high-water mark, so that a later reading is the tagging peak alone (what the manifest reports)."""
    import sys

    import numpy as np

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    model_mod.clear_cache()
    ballast = np.ones(200 * 2**20 // 8)  # 200 MB resident, then freed: part of the peak so far
    del ballast
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1))
    assert loaded.peak_reset and loaded.load_peak_rss_mb >= 200
    after, _ = model_mod.peak_rss_mb()
    assert after < loaded.load_peak_rss_mb - 150  # the ballast's pages no longer count
    grow = np.ones(100 * 2**20 // 8)
    assert model_mod.peak_rss_mb()[0] >= after + 90  # the mark follows new growth
    del grow
    model_mod.clear_cache()


@pytest.mark.parametrize("how, message", [
    ("no head", "has no trained token-classification head (classifier.weight, classifier.bias not in its weights)"),
    ("no labels", "has no labels (no id2label in its config.json)"),
    ("labels beyond the head", "its head's classifier.weight has shape [7, 32] but its config's 8 labels need [8, 32]"),
    ("label ids with a gap", "id2label in config.json must number its labels 0..6, got ids ['0', '2', '4', "),
])
def test_a_model_without_a_trained_head_or_with_inconsistent_labels_is_refused(tiny_model_dir, tmp_path, how, message):
    """transformers loads such models with a randomly initialised head and only warns: the driver
    refuses them before any work, from the config and the safetensors headers."""
    from ner_udf.config import Config
    from ner_udf.preflight import check_model

    bad = broken_model(tiny_model_dir, tmp_path / "bad", how)
    with pytest.raises(UserError) as err:
        check_model(Config(model={"name": str(bad)}))
    assert message in str(err.value) and str(err.value).startswith("model.name: ")
    assert check_model(Config(model={"name": str(tiny_model_dir)}))["labels"][1] == "B-PER"


def test_each_load_refuses_weights_transformers_would_invent(tiny_model_dir, tmp_path):
    """The executors' load checks too (a model the driver could not inspect: pickled weights, a hub
    id, a different copy on the executors): transformers' loading report, not its silenced warning."""
    bad = broken_model(tiny_model_dir, tmp_path / "bad", "no head")
    with pytest.raises(UserError, match=r"^model.name: '.*': weights missing or of the wrong shape, which transformers "
                                        r"would initialise at random: classifier.bias, classifier.weight$"):
        load_model(ModelConfig(name=str(bad), device="cpu", threads=1))
    bad = broken_model(tiny_model_dir, tmp_path / "bad2", "labels beyond the head")
    with pytest.raises(UserError, match=r"^model.name: '.*': weights missing or of the wrong shape, which transformers "
                                        r"would initialise at random: classifier.bias, classifier.weight$"):
        load_model(ModelConfig(name=str(bad), device="cpu", threads=1))


def test_a_tokenizer_that_is_not_fast_is_refused_at_the_driver(tiny_model_dir, monkeypatch):
    """Offsets need a fast tokenizer: a model whose tokenizer transformers builds in Python only is
    refused before any work (the slow tokenizer is injected: transformers 5 ships few of them)."""
    import transformers

    from ner_udf.config import load_config
    from ner_udf.errors import UserError
    from ner_udf.preflight import check_model

    cfg = load_config(overrides={"model.name": str(tiny_model_dir)})
    assert check_model(cfg)["labels"]  # the real tokenizer is fast

    class Slow:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Slow())
    with pytest.raises(UserError, match="has no fast tokenizer"):
        check_model(cfg)


def test_the_driver_preloads_the_model_checks_imports_in_the_background(tiny_model_dir, tmp_path):
    """``preflight.preload`` (started by the job before the JVM) imports torch, transformers and the
    model's modelling module in a thread, so that the model check after the session is quick; a
    name it cannot use (a hub id, a broken directory) is left for the check itself to report."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "config.json").write_text("{not json")
    code = (
        "import sys; from ner_udf.preflight import preload\n"
        "assert 'torch' not in sys.modules\n"
        f"for name in ('org/not-a-model', {str(tmp_path)!r}): preload(name).join()\n"
        "assert 'transformers.models.bert.modeling_bert' not in sys.modules\n"
        f"preload({str(tiny_model_dir)!r}).join()\n"
        "print('torch' in sys.modules, 'transformers.models.bert.modeling_bert' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"] and out.stderr == ""


def test_the_job_waits_for_the_preload_before_its_model_check(tiny_model_dir, tmp_path):
    """transformers 5's lazy top-level module is not thread-safe: a ``from transformers import
    AutoConfig`` in the main thread while the preload thread is still importing transformers fails
    with "cannot import name 'AutoConfig'" (seen in ``make demo`` when the JVM started before the
    imports finished). Here the session starts at once (Spark replaced by a stand-in), so the model
    check begins while the preload is mid-import; the job must wait for it and reach the read."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, types\n"
        "from ner_udf import job\n"
        "from ner_udf.config import Config\n"
        "assert 'transformers' not in sys.modules\n"
        "class Reached(Exception): pass\n"
        "def read_input(spark, cfg): raise Reached\n"
        "spark = types.SimpleNamespace(sparkContext=types.SimpleNamespace(setLogLevel=lambda level: None))\n"
        "job.glue = types.SimpleNamespace(get_session=lambda cfg: spark, ship_package=lambda s: None,\n"
        "                                 model_roots=lambda: [], read_input=read_input)\n"
        f"cfg = Config.model_validate({{'model': {{'name': {str(tiny_model_dir)!r}}}, 'input': {{'path': 'in'}},\n"
        f"                              'output': {{'path': {str(tmp_path / 'out')!r}}}}})\n"
        "try:\n"
        "    job.run(cfg, progress_every_s=None)\n"
        "except Reached:\n"
        "    print('reached the read')\n")
    for _ in range(3):  # without the wait this failed 15 times in 15
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0 and out.stdout.strip() == "reached the read", out.stderr[-2000:]


def test_int8_quantizes_each_linear_per_output_channel(tiny_model_dir):
    """int8 is dynamic quantization with one scale per output channel (per-tensor scales kept 53%
    of fp32's entities on the real model, per-channel 79%)."""
    import torch
    from transformers import AutoModelForTokenClassification

    cfg = ModelConfig(name=str(tiny_model_dir), device="cpu", threads=1, precision="int8")
    forward, _ = model_mod._torch_forward(cfg, "cpu", AutoModelForTokenClassification.from_pretrained(tiny_model_dir))
    captured = dict(zip(forward.__code__.co_freevars, (c.cell_contents for c in forward.__closure__)))
    quantized = [m for m in captured["model"].modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and {m.weight().qscheme() for m in quantized} == {torch.per_channel_affine}
    # the scheme's name, which an int8 output's model identity records (test_recheck.py), is the one
    # the weights were quantized with: a new qconfig without a new name fails here
    names = {torch.per_channel_affine: "dynamic_per_channel", torch.per_tensor_affine: "dynamic_per_tensor"}
    assert {names[m.weight().qscheme()] for m in quantized} == {model_mod.INT8_SCHEME}
    assert not [m for m in captured["model"].modules() if type(m) is torch.nn.Linear]  # none left at fp32

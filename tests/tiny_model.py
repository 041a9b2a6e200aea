"""Build a tiny random BertForTokenClassification with a cased multilingual WordPiece vocabulary.

Random weights with a sharpened classifier give many entity boundaries, a hard test of
aggregation parity. Deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]

# Characters of many scripts; each becomes a token and a "##" continuation piece.
ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèüöäßçñ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДМПРС",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשת",
    "devanagari": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह्ािीुूेैोौं",
    "bengali": "অআইঈউঊএঐওঔকখগঘঙচছজঝঞটঠডঢণতথদধনপফবভমযরলশষসহড়য়্াি ীুূেৈোৌংঃ",
    "cjk": "中国北京东京日本人大学公司上海的是在我们他们有和",
    "hangul": "한국서울대학교사람회사",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω",
    "digits": "0123456789",
}
PUNCT = ".,;:!?()-'\"/"
WORDS = [
    "Paris", "Berlin", "London", "Google", "Microsoft", "Angela", "Merkel", "Marvin", "University",
    "New", "York", "the", "and", "in", "of", "Москва", "Россия", "Путин", "القاهرة", "مصر", "दिल्ली",
    "भारत", "মারভিন", "দি", "মারসিয়ান", "東京", "北京", "서울", "Αθήνα", "ירושלים",
]


def build_vocab(seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen = set(vocab)

    def add(tok: str) -> None:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)

    for chars in ALPHABETS.values():
        for ch in chars.replace(" ", ""):
            add(ch)
            add("##" + ch)
    for ch in PUNCT:
        add(ch)
    for w in WORDS:
        add(w)
        if len(w) > 3:
            add(w[:3])
            add("##" + w[3:])
    latin = ALPHABETS["latin"][:26]
    for _ in range(150):  # random multi-letter pieces make WordPiece choose between splits
        piece = "".join(rnd.choice(latin) for _ in range(rnd.randint(2, 4)))
        add(piece)
        add("##" + piece)
    # Deliberately absent: emoji and other astral characters -> [UNK] tokens.
    return vocab


def build_tiny_model(out_dir: str | Path, seed: int = 0, max_positions: int = 512, model_max_length: int = 512) -> Path:
    """Write a tokenizer + random model loadable with ``from_pretrained(out_dir)``."""
    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(seed)
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=False, model_max_length=model_max_length,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max_positions, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )
    model = BertForTokenClassification(config)
    with torch.no_grad():  # sharpen: random logits far apart -> clear, frequent entity boundaries
        model.classifier.weight.normal_(0.0, 2.0)
        model.classifier.bias.normal_(0.0, 0.5)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


def broken_model(src: Path, dst: Path, how: str) -> Path:
    """A copy of the model ``src`` with one defect:
    - ``vocab``: loads, but fails on every batch (an embedding table of 8 rows, so every real token
      id is out of range);
    - ``shapes``: passes the driver's checks (config, labels, head) but not the load's (the word
      embeddings' width differs from the config's hidden size);
    - ``garbage``: its weights file is not safetensors;
    - ``no head``: a base model's weights without the token-classification head (and no
      ``architectures`` in its config);
    - ``no labels``: no ``id2label``/``label2id`` in its config;
    - ``labels beyond the head``: the config names one label more than the head has rows;
    - ``label ids with a gap``: ``id2label`` numbers its labels 0, 2, 4, ...
    Each is a defect a careless export or a wrong download gives."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    if how == "garbage":
        (dst / "model.safetensors").write_bytes(b"\0not safetensors" * 64)
        return dst
    tensors = load_file(src / "model.safetensors")
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    conf = json.loads((dst / "config.json").read_text())
    if how == "vocab":
        tensors[key] = tensors[key][:8].copy()
        conf["vocab_size"] = 8
    elif how == "shapes":
        tensors[key] = tensors[key][:, :-1].copy()
    elif how == "no head":
        tensors = {k: v for k, v in tensors.items() if not k.startswith("classifier.")}
        conf.pop("architectures", None)
    elif how == "no labels":
        conf.pop("id2label", None)
        conf.pop("label2id", None)
    elif how == "labels beyond the head":
        conf["id2label"] = {**conf["id2label"], str(len(conf["id2label"])): "B-EXTRA"}
        conf["label2id"] = {v: int(k) for k, v in conf["id2label"].items()}
    elif how == "label ids with a gap":
        conf["id2label"] = {str(int(k) * 2): v for k, v in conf["id2label"].items()}
    else:
        raise ValueError(how)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(conf))
    return dst

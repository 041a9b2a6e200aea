"""Deterministic multilingual test texts: real sentences plus random words in many scripts."""

from __future__ import annotations

import random

from tiny_model import ALPHABETS, WORDS

FIXED = [
    "মারভিন দি মারসিয়ান",  # the model card's example
    "Angela Merkel met Vladimir Putin in Berlin and Москва.",
    "Путин встретился с Меркель в Москве.",
    "زار الرئيس القاهرة ثم ذهب إلى مصر",  # right-to-left
    "ירושלים היא עיר בישראל",
    "नरेंद्र मोदी दिल्ली में भारत के प्रधानमंत्री हैं",
    "東京と北京は大都市です。我们在上海的公司",
    "서울대학교 사람 회사",
    "Η Αθήνα είναι πρωτεύουσα",
    "Emoji 😀 and astral 𝒜𝒷𝒸 characters 🇩🇪 in Paris",
    "Combining marks: e\u0301cole, n\u0303, a\u0308 and Zoe\u0308 in Berlin",
    "Tabs\tand\nnewlines  and   spaces in London",
    "Microsoft and Google opened offices in New York.",
    "x",
    "   leading and trailing spaces   ",
    "ÉCOLE Polytechnique in Paris-Saclay, 2024!",
]


def random_text(rnd: random.Random, n_words: int) -> str:
    scripts = list(ALPHABETS)
    script = rnd.choice(scripts)
    words = []
    for _ in range(n_words):
        r = rnd.random()
        if r < 0.15:
            words.append(rnd.choice(WORDS))
        elif r < 0.2:
            words.append(rnd.choice(".,;:!?()-"))
        else:
            if rnd.random() < 0.1:
                script = rnd.choice(scripts)
            chars = ALPHABETS[script].replace(" ", "")
            words.append("".join(rnd.choice(chars) for _ in range(rnd.randint(1, 9))))
        if rnd.random() < 0.02:
            words.append(rnd.choice(["😀", "𝒜", "e\u0301", "\u200f", "\u00a0"]))
    sep = " " if rnd.random() < 0.9 else ""
    return sep.join(words)


def corpus(n: int = 220, seed: int = 0, min_words: int = 1, max_words: int = 40) -> list[str]:
    rnd = random.Random(seed)
    texts = list(FIXED)
    while len(texts) < n:
        texts.append(random_text(rnd, rnd.randint(min_words, max_words)))
    return texts


def long_corpus(n: int = 40, seed: int = 1) -> list[str]:
    """Texts of 60-110 words: 3-5 windows at max_length=48, stride 8."""
    rnd = random.Random(seed)
    return [random_text(rnd, rnd.randint(25, 45)) for _ in range(n)]

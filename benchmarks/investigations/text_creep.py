"""Does a worker's memory grow with new texts or with work done? Tags the first ``--docs`` documents
of a corpus ``--passes`` times, in ``--rows``-row slices as a Spark worker would, and prints after
every two slices (``gc.collect`` and ``malloc_trim`` first): pass, documents done, resident set (MB),
``sys.getallocatedblocks()`` and ``len(gc.get_objects())``.

    .venv/bin/python benchmarks/investigations/text_creep.py --docs 28672              # new texts all the way
    .venv/bin/python benchmarks/investigations/text_creep.py --docs 8192 --passes 3    # the same texts again
    .venv/bin/python benchmarks/investigations/text_creep.py --docs 28672 --tokenize-only  # the tokenizer alone
    .venv/bin/python benchmarks/investigations/text_creep.py --docs 28672 --hold-texts     # every text kept alive

Each slice's Python strings are made from Arrow for that slice and dropped after it, as a Spark
worker gets them. ``--hold-texts`` keeps all of them alive for the whole run instead (as this script
and memory_trace.py did before 2026-11-27): the resident set then grows by about the UTF-8 size of
every new text, because CPython caches a str's UTF-8 copy inside the str once the Rust tokenizer has
read it, and keeps it as long as the str lives. Texts seen again add nothing.

Defaults: the 2-layer random model (the model's depth does not matter for this), bf16, the
30,000-document bench corpus (``benchlib.write_corpus(benchlib.corpus_docs(30000, 0), ...)``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from memory_trace import rss_kb  # noqa: E402  (benchmarks/ is on the path when run as a script)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(ROOT / ".cache" / "bench" / "corpus-30000-s0"))
    p.add_argument("--model", default=str(ROOT / ".cache" / "bench" / "mbert-random-L2"))
    p.add_argument("--precision", default="bf16")
    p.add_argument("--docs", type=int, default=20480)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokenize-only", action="store_true", help="only the model's tokenizer, with offsets")
    p.add_argument("--hold-texts", action="store_true",
                   help="keep every text alive for the whole run (default: strings made per slice and dropped)")
    a = p.parse_args(argv)

    import pyarrow.parquet as pq

    from ner_udf import model as model_mod
    from ner_udf.config import ModelConfig, TaggingConfig
    from ner_udf.tagger import Tagger

    column = pq.read_table(a.corpus, columns=["text"]).column("text").slice(0, a.docs)
    held = column.to_pylist() if a.hold_texts else None
    loaded = model_mod.load_model(ModelConfig(name=a.model, precision=a.precision, threads=a.threads))
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    t0 = time.time()
    for n_pass in range(a.passes):
        for i in range(0, len(column), a.rows):
            texts = held[i: i + a.rows] if held is not None else column.slice(i, a.rows).to_pylist()
            if a.tokenize_only:
                loaded.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            else:
                Tagger.from_loaded(loaded, TaggingConfig(aggregation="simple")).tag(texts)
            del texts
            if (i // a.rows) % 2 == 1:
                gc.collect()
                trim(0)
                rss = rss_kb() // 1024
                print(n_pass, i + a.rows, rss, sys.getallocatedblocks(), len(gc.get_objects()),
                      f"{time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

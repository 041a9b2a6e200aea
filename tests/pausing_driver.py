"""Runs the job (``ner_udf.cli.main``) in this process and stops it cold at a chosen moment, so that
a test can ``kill -9`` it there:

    python tests/pausing_driver.py READY_FILE MOMENT -- <ner-tag arguments>

MOMENT is ``before:<call>:<name>[:<nth>]`` or ``after:...``: the nth call (default 1st) of the
output store's file-system method ``<call>`` on a path whose last part is ``<name>``; or
``staging:<table>``: when the job asks where to write ``<table>`` (the tables before it are
written); or ``none``, never. At that moment the script writes its pid to READY_FILE and sleeps until killed.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ner_udf import cli, store  # noqa: E402
from ner_udf.fs import LocalFS  # noqa: E402


def pause(ready: str) -> None:
    Path(ready + ".tmp").write_text(str(os.getpid()))
    os.replace(ready + ".tmp", ready)
    while True:
        time.sleep(3600)


def main() -> int:
    ready, moment = sys.argv[1], sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1:]
    kind, *rest = moment.split(":")
    if kind == "none":
        pass
    elif kind == "staging":
        original = store.OutputStore.staging

        def staging(self, table):
            if table == rest[0]:
                pause(ready)
            return original(self, table)

        store.OutputStore.staging = staging
    else:
        call, name = rest[0], rest[1]
        nth = int(rest[2]) if len(rest) > 2 else 1
        seen = [0]
        original = getattr(LocalFS, call)

        @functools.wraps(original)
        def wrapped(self, *a):
            hit = os.path.basename(str(a[0]).rstrip("/")) == name
            if hit:
                seen[0] += 1
            if hit and seen[0] == nth and kind == "before":
                pause(ready)
            out = original(self, *a)
            if hit and seen[0] == nth and kind == "after":
                pause(ready)
            return out

        setattr(LocalFS, call, wrapped)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())

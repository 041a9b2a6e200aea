"""The one error type for users' mistakes, and the one-line messages shown for any failure.

A :class:`UserError` is something the user can fix (a config key, a path, a model that cannot be
used, an output another run is writing); the CLI prints its message as one line and exits 2. A
:class:`RunFailed` (or any other exception) fails the run: exit 1, nothing committed.
:func:`one_line` and :func:`failure_reason` turn any exception into that one line.
"""

from __future__ import annotations

import re

_SPARK_ERROR_CLASS = re.compile(r"\[[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*\] ")


class UserError(ValueError):
    """A mistake the user can fix; its message is one line naming the key, the bad value and what
    would be valid."""


class RunFailed(RuntimeError):
    """The run did its work but must not be committed (e.g. too many documents failed); its
    message is the one line shown."""


def one_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


def failure_reason(exc: BaseException) -> str:
    """One line for a failed run. For a failure raised in a Python worker (which Spark wraps in a
    long Java stack trace), the worker's own exception line."""
    if isinstance(exc, (UserError, RunFailed)):
        return one_line(exc)
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("at ", "File ", "..."))]  # stack frames
    marker = f"{UserError.__name__}: "  # a user error raised in a worker: its message is the line
    for ln in reversed(lines):
        if marker in ln:
            return ln.split(marker, 1)[1]
    # Spark's own errors name their class first, e.g. [FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH]
    # Error while reading file ...part-b.parquet. Data type mismatches ... column [doc_id] ...
    classed = [ln for ln in lines if _SPARK_ERROR_CLASS.search(ln)]
    if classed:  # from the class on: what failed, not which task's attempt
        return classed[0][_SPARK_ERROR_CLASS.search(classed[0]).start():]
    culprits = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln]
    if not culprits:
        return f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return culprits[-1].lstrip(": ")  # py4j puts the Java exception after ": "

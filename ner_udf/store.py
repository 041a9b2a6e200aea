"""The output store: where a run's tables are staged, and how they are committed.

Owns the layout of ``OUTPUT/`` (``entities/``, ``documents/``, ``manifest.json``) and the commit.
"""

from __future__ import annotations

from .errors import UserError, one_line
from .manifest import Manifest

TABLES = ("entities", "documents")


class OutputStore:
    """Output directory on any Hadoop file system; results are written under a temporary
    directory and moved into place only when everything succeeded."""

    def __init__(self, spark, path: str, mode: str, run_id: str):
        jvm = spark._jvm
        self.Path = jvm.org.apache.hadoop.fs.Path
        self.root = self.Path(path)
        self.fs = self.root.getFileSystem(spark._jsc.hadoopConfiguration())
        self.mode = mode
        self.tmp = self.Path(self.root, f"_tmp-{run_id}")
        self.path = path

    def prepare(self) -> None:
        existing = [t for t in (*TABLES, "manifest.json") if self.fs.exists(self.Path(self.root, t))]
        if existing and self.mode == "error":
            raise UserError(
                f"output.path: {self.path!r} already holds {', '.join(existing)}; use a new path or "
                "--set output.mode=overwrite"
            )
        try:
            ok = self.fs.mkdirs(self.tmp)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"output.path: cannot write to {self.path!r}: {one_line(exc)}") from None
        if not ok:
            raise UserError(f"output.path: cannot write to {self.path!r}")

    def staging(self, table: str) -> str:
        return self.Path(self.tmp, table).toString()

    def commit(self, manifest: Manifest) -> None:
        for name in (*TABLES, "manifest.json"):
            old = self.Path(self.root, name)
            if self.fs.exists(old):
                self.fs.delete(old, True)
        for t in TABLES:
            if not self.fs.rename(self.Path(self.tmp, t), self.Path(self.root, t)):
                raise RuntimeError(f"could not move {t} into {self.path}")
        stream = self.fs.create(self.Path(self.root, "manifest.json"), True)
        try:
            stream.write(bytearray(manifest.to_json().encode("utf-8")))
        finally:
            stream.close()
        self.fs.delete(self.tmp, True)

    def abort(self) -> None:
        try:
            self.fs.delete(self.tmp, True)
        except Exception:  # noqa: BLE001 - best effort
            pass

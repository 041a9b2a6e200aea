"""The file-system operations the output store needs, on local disks and on Hadoop file systems.

Two implementations of one small interface (paths are strings):

- :class:`LocalFS` (a ``file:`` output): POSIX calls. ``rename`` never replaces, and ``exchange``
  swaps two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``), so a table directory is never
  absent while it is replaced.
- :class:`HadoopFS` (HDFS, S3A, ABFS, ... through the driver's JVM): ``exchange`` is not offered; the
  store moves the old table aside and the new one into place instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import time
import uuid
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


class LocalFS:
    """A local directory tree."""

    def __init__(self):
        self._renameat2 = _renameat2()

    @staticmethod
    def join(*parts: str) -> str:
        return os.path.join(*parts)

    @staticmethod
    def uri(path: str) -> str:
        return Path(path).absolute().as_uri()

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def mkdirs(self, path: str) -> None:
        if os.path.lexists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"{path} is a file, not a directory")
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def _rename2(self, src: str, dst: str, flags: int) -> bool:
        """renameat2; False where the kernel or the file system does not offer ``flags``."""
        if self._renameat2 is None:
            return False
        if self._renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(err, os.strerror(err), src, None, dst)

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``; fails if ``dst`` exists."""
        if not self._rename2(src, dst, _RENAME_NOREPLACE):
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "destination exists", dst)
            os.rename(src, dst)

    def exchange(self, a: str, b: str) -> bool:
        """Swap ``a`` and ``b`` atomically; False where not supported (nothing was done)."""
        return self._rename2(a, b, _RENAME_EXCHANGE)

    def delete(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def put_dir(self, local: str, path: str) -> None:
        """Copy the local directory ``local`` to ``path`` (which must not exist)."""
        shutil.copytree(local, path)

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_new(self, path: str, text: str) -> None:
        """Create ``path`` with ``text``, all at once (readers never see it partly written); fails
        if it exists."""
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces
        finally:
            os.unlink(tmp)

    def touch(self, path: str) -> None:
        os.utime(path)

    def mtime(self, path: str) -> float | None:
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return None


class HadoopFS:
    """A Hadoop file system (``org.apache.hadoop.fs.FileSystem``) reached through the driver's JVM."""

    def __init__(self, spark, path: str):
        self._jvm = spark._jvm
        self._Path = self._jvm.org.apache.hadoop.fs.Path
        self.fs = self._Path(path).getFileSystem(spark._jsc.hadoopConfiguration())

    @staticmethod
    def join(*parts: str) -> str:
        return "/".join([parts[0].rstrip("/"), *parts[1:]])

    def uri(self, path: str) -> str:
        return self.fs.makeQualified(self._Path(path)).toString()

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._Path(path)))

    def mkdirs(self, path: str) -> None:
        p = self._Path(path)
        if self.fs.exists(p) and self.fs.getFileStatus(p).isFile():
            raise NotADirectoryError(f"{path} is a file, not a directory")
        if not self.fs.mkdirs(p):
            raise OSError(f"cannot create directory {path}")

    def listdir(self, path: str) -> list[str]:
        p = self._Path(path)
        if not self.fs.exists(p):
            return []
        return sorted(s.getPath().getName() for s in self.fs.listStatus(p))

    def rename(self, src: str, dst: str) -> None:
        # Hadoop moves src *into* dst when dst is a directory: refuse an existing dst instead
        if self.fs.exists(self._Path(dst)):
            raise FileExistsError(errno.EEXIST, "destination exists", dst)
        if not self.fs.rename(self._Path(src), self._Path(dst)):
            if self.fs.exists(self._Path(dst)):  # created meanwhile (HDFS refuses to replace a file)
                raise FileExistsError(errno.EEXIST, "destination exists", dst)
            raise OSError(f"cannot rename {src} to {dst}")

    def exchange(self, a: str, b: str) -> bool:
        return False

    def delete(self, path: str) -> None:
        self.fs.delete(self._Path(path), True)

    def put_dir(self, local: str, path: str) -> None:
        """Copy the local directory ``local`` to ``path`` (which must not exist)."""
        self.fs.copyFromLocalFile(False, False, self._Path(local), self._Path(path))

    def read_text(self, path: str) -> str | None:
        p = self._Path(path)
        if not self.fs.exists(p):
            return None
        stream = self.fs.open(p)
        try:
            scanner = self._jvm.java.util.Scanner(stream, "UTF-8").useDelimiter("\\A")
            return scanner.next() if scanner.hasNext() else ""
        finally:
            stream.close()

    def write_new(self, path: str, text: str) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        stream = self.fs.create(self._Path(tmp), False)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        try:
            self.rename(tmp, path)
        except BaseException:
            self.delete(tmp)
            raise

    def touch(self, path: str) -> None:
        self.fs.setTimes(self._Path(path), int(time.time() * 1000), -1)

    def mtime(self, path: str) -> float | None:
        p = self._Path(path)
        if not self.fs.exists(p):
            return None
        return self.fs.getFileStatus(p).getModificationTime() / 1000.0


def open_fs(spark, path: str) -> tuple[LocalFS | HadoopFS, str]:
    """The file system holding ``path`` and the path as that file system names it."""
    jvm = spark._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hfs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())
    if hfs.getScheme() == "file":
        return LocalFS(), str(hfs.makeQualified(hpath).toUri().getPath())
    return HadoopFS(spark, path), str(hfs.makeQualified(hpath).toString())

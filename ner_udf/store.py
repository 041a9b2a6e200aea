"""The output store: the layout of ``OUTPUT/``, the lock, the recovery and the commit.

Layout (``_``-prefixed names are skipped by Spark, pyarrow and ``entities/**/*.parquet`` globs)::

    OUTPUT/entities/  documents/  manifest.json   the committed run (each table holds _run.json)
    OUTPUT/_lock.json                           the live run's lock; its mtime is the heartbeat
    OUTPUT/_staging/<run_id>/                   a run's tables and manifest while it writes them
    OUTPUT/_journal.json                        present only while a commit swaps the tables
    OUTPUT/_runs/<run_id>.json                  every committed run's manifest (the run history)

Commit: the staged tables are complete, then ``_journal.json`` names the run, then each item is
swapped into place (an atomic exchange on local disks; on other file systems the old item is moved
aside and the new one moved in), then the journal is deleted: that deletion is the commit point.
A failure before it puts the previous items back at once; a crash before it is undone by the next
run (``recover``), which also removes what failed or crashed runs left in ``_staging/``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from .errors import UserError, one_line

TABLES = ("entities", "documents")
MANIFEST = "manifest.json"
ITEMS = ("documents", "entities", MANIFEST)  # swapped in this order
LOCK, JOURNAL, STAGING, MARKER, RUNS = "_lock.json", "_journal.json", "_staging", "_run.json", "_runs"
PREVIOUS = "_previous"  # under a run's staging dir: items moved aside (file systems without exchange)
_LIVE: set[str] = set()  # run ids holding a lock in this process


def _warn(message: str) -> None:
    print(f"ner-tag: warning: {message}", file=sys.stderr, flush=True)


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputStore:
    """One run's handle on ``OUTPUT/``: holds its lock from :meth:`open` to :meth:`close`."""

    def __init__(self, fs, root: str, run_id: str, started_at: str, *, mode: str, lock_timeout_s: float,
                 warn=_warn):
        self.fs, self.root, self.run_id, self.started_at = fs, root, run_id, started_at
        self.mode, self.lock_timeout_s, self.warn = mode, float(lock_timeout_s), warn
        self.stage = fs.join(root, STAGING, run_id)
        self._locked = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @classmethod
    def for_output(cls, spark, output, run_id: str, started_at: str) -> "OutputStore":
        """The store of ``output`` (an ``OutputConfig``) on whatever file system holds it."""
        from .fs import open_fs

        try:
            fs, root = open_fs(spark, output.path)
        except Exception as exc:  # noqa: BLE001 - unknown scheme, bad URI
            raise UserError(f"output.path: cannot use {output.path!r}: {one_line(exc)}") from None
        return cls(fs, root, run_id, started_at, mode=output.mode, lock_timeout_s=output.lock_timeout_s)

    def _p(self, *parts: str) -> str:
        return self.fs.join(self.root, *parts)

    # -- open: lock, repair, check, stage ---------------------------------------------------
    def open(self) -> "OutputStore":
        try:
            self.fs.mkdirs(self.root)
        except Exception as exc:  # noqa: BLE001 - a file in the way, no permission, ...
            raise UserError(f"output.path: cannot write to {self.root!r}: {one_line(exc)}") from None
        self._acquire()
        try:
            self.recover()
            existing = [i for i in (*TABLES, MANIFEST) if self.fs.exists(self._p(i))]
            if existing and self.mode == "error":
                raise UserError(f"output.path: {self.root!r} already holds {', '.join(existing)}; use a new path "
                                "or --set output.mode=overwrite")
            self.fs.mkdirs(self.stage)
        except BaseException:
            self.close()
            raise
        return self

    def _lock_record(self) -> dict:
        return {"run_id": self.run_id, "started_at": self.started_at, "host": socket.gethostname(),
                "boot_id": _boot_id(), "pid": os.getpid()}

    def _acquire(self) -> None:
        lock = self._p(LOCK)
        for _ in range(5):
            try:
                self.fs.write_new(lock, json.dumps(self._lock_record()))
            except FileExistsError:
                pass
            else:
                self._locked = True
                _LIVE.add(self.run_id)
                self._heartbeat = threading.Thread(target=self._beat, name="ner-tag-lock-heartbeat", daemon=True)
                self._heartbeat.start()
                return
            text, mtime = self.fs.read_text(lock), self.fs.mtime(lock)
            if text is None or mtime is None:
                continue  # released meanwhile: try again
            try:
                other = json.loads(text)
            except ValueError:
                other = {}
            why = self._stale(other, mtime)
            if why is None:
                raise UserError(
                    f"output.path: run {other.get('run_id', '?')} (started {other.get('started_at', '?')} on "
                    f"{other.get('host', '?')}, pid {other.get('pid', '?')}) is writing {self.root!r}; wait for it "
                    f"to finish (a lock whose heartbeat stopped is taken over after {self.lock_timeout_s:g} s, "
                    "output.lock_timeout_s)")
            self._take_over(lock, other, why)
        raise UserError(f"output.path: could not take the lock {lock!r}; other runs keep starting against it")

    def _stale(self, other: dict, mtime: float) -> str | None:
        """Why the lock ``other`` is stale, or None while its run may be alive."""
        age = time.time() - mtime
        if age > self.lock_timeout_s:
            return f"its heartbeat stopped {age:.0f} s ago"
        same_machine = other.get("host") == socket.gethostname() and other.get("boot_id") == _boot_id()
        if same_machine and isinstance(other.get("pid"), int):
            if not _pid_alive(other["pid"]):
                return f"its process {other['pid']} is gone"
            if other["pid"] == os.getpid() and other.get("run_id") not in _LIVE:
                return "it ended in this process without releasing it"
        return None

    def _take_over(self, lock: str, other: dict, why: str) -> None:
        aside = self._p(f"_lock.stale-{self.run_id}.json")
        try:
            self.fs.rename(lock, aside)
        except OSError:
            return  # another run moved it first: try again
        moved = self.fs.read_text(aside)
        try:
            moved_id = json.loads(moved or "{}").get("run_id")
        except ValueError:
            moved_id = None
        if moved_id != other.get("run_id"):  # we moved a fresher lock than the one judged stale
            try:
                self.fs.rename(aside, lock)
            except Exception:  # noqa: BLE001 - its run finds out when it checks its lock before committing
                pass
            return
        self.fs.delete(aside)
        self.warn(f"took over the lock of run {other.get('run_id')} (started {other.get('started_at')} on "
                  f"{other.get('host')}, pid {other.get('pid')}): {why}")

    def _beat(self) -> None:
        interval = max(1.0, self.lock_timeout_s / 6)
        while not self._stop.wait(interval):
            try:
                self.fs.touch(self._p(LOCK))
            except Exception:  # noqa: BLE001 - a missed beat; the commit checks the lock anyway
                pass

    def holds_lock(self) -> bool:
        try:
            return json.loads(self.fs.read_text(self._p(LOCK)) or "{}").get("run_id") == self.run_id
        except ValueError:
            return False

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        """Undo a commit that a crash interrupted and remove what failed or crashed runs left."""
        text = self.fs.read_text(self._p(JOURNAL))
        if text is not None:
            try:
                crashed = json.loads(text)["run_id"]
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"{self._p(JOURNAL)} is unreadable; inspect {self.root!r} by hand") from None
            self._rollback(crashed)
            self.fs.delete(self._p(JOURNAL))
            self.warn(f"undid the interrupted commit of run {crashed}; {self.root!r} holds the run before it")
        for name in self.fs.listdir(self._p(STAGING)):
            if name != self.run_id:
                self.fs.delete(self._p(STAGING, name))
                self.warn(f"removed the staged output of run {name}, which failed or crashed")
        for name in self.fs.listdir(self.root):
            if name.startswith("_tmp-") or name.startswith("_lock.stale-"):  # older versions' staging; lost takeovers
                self.fs.delete(self._p(name))

    def _marker(self, path: str) -> str | None:
        """The run id that ``path`` (a table directory or a manifest) belongs to."""
        text = self.fs.read_text(path if path.endswith(".json") else self.fs.join(path, MARKER))
        try:
            return json.loads(text).get("run_id") if text else None
        except (ValueError, AttributeError):
            return None

    def _rollback(self, run_id: str) -> None:
        """Put back every item that run ``run_id`` had swapped into place, and drop its run record."""
        stage = self._p(STAGING, run_id)
        if self.fs.exists(self._p(RUNS, f"{run_id}.json")):
            self.fs.delete(self._p(RUNS, f"{run_id}.json"))
        for item in reversed(ITEMS):
            cur, aside, prev = self._p(item), self.fs.join(stage, item), self.fs.join(stage, PREVIOUS, item)
            if self.fs.exists(cur) and self._marker(cur) == run_id:
                if self.fs.exists(aside):  # swapped by exchange: the previous item is in staging
                    if not self.fs.exchange(aside, cur):
                        raise RuntimeError(f"cannot swap {aside} back into {cur}")
                else:
                    self.fs.rename(cur, aside)
            if not self.fs.exists(cur) and self.fs.exists(prev):
                self.fs.rename(prev, cur)

    # -- a look without touching (--dry-run) -------------------------------------------------
    def inspect(self) -> dict:
        """What a run would find here, read only: the committed tables and run, and a lock another
        run holds. Raises the :class:`UserError` that :meth:`open` would raise for an existing
        output in mode ``error`` or a live lock."""
        existing = [i for i in (*TABLES, MANIFEST) if self.fs.exists(self._p(i))]
        if existing and self.mode == "error":
            raise UserError(f"output.path: {self.root!r} already holds {', '.join(existing)}; use a new path "
                            "or --set output.mode=overwrite")
        lock = self._p(LOCK)
        text, mtime = self.fs.read_text(lock), self.fs.mtime(lock)
        locked_by = None
        if text is not None and mtime is not None:
            try:
                other = json.loads(text)
            except ValueError:
                other = {}
            if self._stale(other, mtime) is None:
                raise UserError(f"output.path: run {other.get('run_id', '?')} (started {other.get('started_at', '?')}) "
                                f"is writing {self.root!r}")
            locked_by = f"stale lock of run {other.get('run_id', '?')}: a run would take it over"
        previous = self.previous_manifest()
        return {"exists": self.fs.exists(self.root), "committed": existing,
                "last_run": previous.get("run_id") if previous else None, "lock": locked_by}

    # -- reading the committed run ----------------------------------------------------------
    def previous_manifest(self) -> dict | None:
        """The committed run's manifest, or None when the output holds no run."""
        text = self.fs.read_text(self._p(MANIFEST))
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise UserError(f"output.path: {self._p(MANIFEST)} is not valid JSON; use a new path or "
                            "--set output.mode=overwrite") from None

    def table(self, name: str) -> str:
        """The committed ``name`` table (a URI), for an incremental run to read."""
        return self.fs.uri(self._p(name))

    # -- writing and committing -------------------------------------------------------------
    def staging(self, table: str) -> str:
        """Where Spark writes ``table`` for this run (a URI)."""
        return self.fs.uri(self.fs.join(self.stage, table))

    def commit(self, manifest_json: str) -> None:
        """Make the staged tables and ``manifest_json`` the output, all or nothing."""
        for table in TABLES:
            self.fs.write_new(self.fs.join(self.stage, table, MARKER), json.dumps({"run_id": self.run_id}))
        self.fs.write_new(self.fs.join(self.stage, MANIFEST), manifest_json)
        if not self.holds_lock():
            raise RuntimeError(f"lost the lock on {self.root!r} (another run took it over); nothing committed")
        self.fs.write_new(self._p(JOURNAL), json.dumps({"run_id": self.run_id, "items": list(ITEMS)}))
        try:
            for item in ITEMS:
                self._swap_in(item)
            self.fs.mkdirs(self._p(RUNS))
            self.fs.write_new(self._p(RUNS, f"{self.run_id}.json"), manifest_json)
            self.fs.delete(self._p(JOURNAL))  # the commit point
        except BaseException:
            self._rollback(self.run_id)
            self.fs.delete(self._p(JOURNAL))
            raise
        try:
            self.fs.delete(self.stage)  # the previous run's items; the next run removes them if this fails
        except Exception as exc:  # noqa: BLE001
            self.warn(f"committed, but could not remove {self.stage}: {one_line(exc)}")

    def _swap_in(self, item: str) -> None:
        cur, new = self._p(item), self.fs.join(self.stage, item)
        if not self.fs.exists(cur):
            self.fs.rename(new, cur)
        elif not self.fs.exchange(new, cur):
            self.fs.mkdirs(self.fs.join(self.stage, PREVIOUS))
            self.fs.rename(cur, self.fs.join(self.stage, PREVIOUS, item))
            self.fs.rename(new, cur)

    # -- close ------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove this run's staging (if the commit did not) and release the lock."""
        try:
            if self.fs.exists(self.stage) and not self.fs.exists(self._p(JOURNAL)):
                self.fs.delete(self.stage)
            if self._locked and not self.fs.listdir(self._p(STAGING)):
                self.fs.delete(self._p(STAGING))
        except Exception as exc:  # noqa: BLE001 - the next run removes it
            self.warn(f"could not remove {self.stage}: {one_line(exc)}")
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self._locked:
            try:
                if self.holds_lock():
                    self.fs.delete(self._p(LOCK))
            except Exception as exc:  # noqa: BLE001 - a lock left behind is taken over as stale
                self.warn(f"could not release the lock {self._p(LOCK)}: {one_line(exc)}")
            self._locked = False
            _LIVE.discard(self.run_id)

    def __enter__(self) -> "OutputStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_history(path: str) -> list[dict]:
    """The manifests of the runs committed to ``path`` (a local path or a URI pyarrow can open),
    oldest first."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(path)
    except (ValueError, TypeError):
        fs, root = pafs.LocalFileSystem(), os.path.abspath(path)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise UserError(f"OUTPUT: {path!r} does not exist")
    infos = fs.get_file_info(pafs.FileSelector(f"{root.rstrip('/')}/{RUNS}", allow_not_found=True))
    runs = []
    for info in infos:
        if info.is_file and info.base_name.endswith(".json"):
            with fs.open_input_stream(info.path) as fh:
                runs.append(json.loads(fh.read().decode("utf-8")))
    return sorted(runs, key=lambda m: (m.get("started_at", ""), m.get("run_id", "")))

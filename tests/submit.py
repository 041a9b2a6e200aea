"""The job through spark-submit, as users start it: the one command line, environment and clean-up
(a process group, killed on timeout) that the spark-submit tests share (test_cluster, test_faults,
test_dynamic_allocation, and test_standalone's local reference run and README-recipe run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from conftest import ROOT

JOB = ROOT / "jobs" / "tag_entities.py"
# this machine's host name resolves oddly; no UI port to collide with, no progress bar in the output
BASE_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}


def spark_submit() -> str:
    """This pyspark's spark-submit (beside the tests' Python), else the one on PATH."""
    exe = Path(sys.executable).parent / "spark-submit"
    return str(exe) if exe.exists() else shutil.which("spark-submit")


def submit(master: str, args: list[str], conf: dict[str, str] | None = None, *, merged: bool = True,
           timeout: float = 600, on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    """``spark-submit --master MASTER --conf K=V ... jobs/tag_entities.py ARGS``, the driver and the
    executors on the tests' Python, run by :func:`run_in_group`.

    ``merged``: Spark's own stderr goes into stdout, as a terminal shows them (spark-submit already
    writes the Python driver's stderr to its stdout); else it comes back apart as ``stderr``."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [spark_submit(), "--master", master,
           *[a for k, v in {**BASE_CONF, **(conf or {})}.items() for a in ("--conf", f"{k}={v}")], str(JOB), *args]
    return run_in_group(cmd, env, merged=merged, timeout=timeout, on_line=on_line)


def run_in_group(cmd: list[str], env: dict[str, str], cwd: Path | None = None, *, merged: bool = True,
                 timeout: float = 600, on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    """``cmd`` with no standard input, in a process group of its own (spark-submit's JVM, the
    Python driver, a local-cluster's executors): if it runs past ``timeout`` seconds, or anything
    here fails, the whole group is killed and waited for. ``merged``: stderr into stdout.
    ``on_line`` (merged only) sees each line of the output as it comes."""
    if on_line is not None and not merged:
        raise ValueError("on_line reads the merged output")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        if on_line is None:
            out, err = proc.communicate()
        else:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                on_line(line.rstrip("\n"))
            proc.wait()
            out, err = "".join(lines), None
    finally:
        timer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if expired.is_set():
        raise AssertionError(f"{Path(cmd[0]).name} ran past {timeout} s and was killed:\n{(out + (err or ''))[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

"""The driver's view of a run while it goes and after: the workers' reports (:mod:`ner_udf.events`),
a progress line on stderr, and the faults Spark saw (failed task attempts, lost executors).

The run's Spark jobs carry the run id as their job group, so the progress line and the faults
count this run's jobs only, also in a session that runs other work.
"""

from __future__ import annotations

import sys
import threading
import time

from pyspark.sql import SparkSession

from . import events
from .errors import one_line

MAX_FAILURES_LISTED = 20


class RunMonitor:
    """Use as a context manager around a run's Spark work::

        with RunMonitor(spark, run_id, progress_every_s=10) as monitor:
            ... api.tag_prepared(df, cfg, acc, layout, run_id, monitor.address) ...
            monitor.phase("committing")
            faults = monitor.faults()
    """

    def __init__(self, spark: SparkSession, run_id: str, progress_every_s: float | None = 10.0, stream=None):
        self.spark, self.sc, self.run_id = spark, spark.sparkContext, run_id
        self.every = progress_every_s
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.time()
        self._phase = "starting"
        self._stop = threading.Event()
        self._thread = None
        self._loaded: set[str] = set()
        self._docs = self._tokens = 0
        self.documents_total: int | None = None  # rows to tag, where known before tagging
        self._first_batch: float | None = None
        self._lock = threading.Lock()
        conf = self.sc.getConf()
        host = conf.get("spark.driver.host", "127.0.0.1")
        try:
            self.receiver = events.Receiver(conf.get("spark.driver.bindAddress", host), host, self._on_record)
        except OSError as exc:  # best effort: the run goes on without the workers' reports
            print(f"ner-tag: warning: no progress reports from the workers (cannot listen on {host}: {one_line(exc)})",
                  file=self.stream, flush=True)
            self.receiver = None

    @property
    def address(self) -> tuple | None:
        """What the workers need to report to this run (``events.send``'s first argument)."""
        return None if self.receiver is None else self.receiver.address

    _GROUP_KEYS = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")

    def __enter__(self) -> RunMonitor:
        self._group_before = {k: self.sc.getLocalProperty(k) for k in self._GROUP_KEYS}  # the caller's, restored
        self.sc.setJobGroup(self.run_id, f"ner-tag run {self.run_id}")
        if self.every:
            self._thread = threading.Thread(target=self._report, name="ner-udf-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.receiver is not None:
            self.receiver.close()
        for key, value in self._group_before.items():
            self.sc.setLocalProperty(key, value)

    def phase(self, text: str) -> None:
        """What the run is doing now, for the progress line."""
        self._phase = text

    def records(self) -> list[dict]:
        return [] if self.receiver is None else self.receiver.snapshot()

    def _on_record(self, r: dict) -> None:
        with self._lock:
            if r.get("e") == events.LOAD:
                self._loaded.add(r.get("worker", "?"))
                if self.every:  # as it happens: the load is the long silence at the start of a run
                    print(f"ner-tag: [{_duration(time.time() - self.started)}] model loaded by worker "
                          f"{r.get('worker')} (executor {r.get('executor')}) in {r.get('ms', 0) / 1000:.1f} s",
                          file=self.stream, flush=True)
            elif r.get("e") == events.BATCH:
                self._first_batch = self._first_batch or time.time()
                self._docs += int(r.get("docs", 0))
                self._tokens += int(r.get("tokens", 0))

    # progress ---------------------------------------------------------------------------------

    def line(self) -> str:
        """One progress line: elapsed time, phase, the running stage's tasks, documents (of
        :attr:`documents_total` when set) and tokens tagged (counted by the workers as they go,
        retried attempts included), tokens/s, ETA."""
        now = time.time()
        parts = [f"ner-tag: [{_duration(now - self.started)}] {self._phase}"]
        done, total = self._tasks()
        if total:
            parts.append(f"tasks {done}/{total}")
        with self._lock:
            docs, tokens, first, loaded = self._docs, self._tokens, self._first_batch, len(self._loaded)
        if loaded:
            parts.append(f"model loaded by {loaded} worker{'s' if loaded != 1 else ''}")
        of = self.documents_total
        if docs:
            rate = tokens / max(now - first, 1e-3) if first else 0.0
            parts.append(f"{docs:,}{f' of {of:,}' if of else ''} documents, {tokens:,} tokens tagged "
                         f"({rate:,.0f} tokens/s)")
        if first and of and 0 < docs < of:  # by documents when their total is known, else by tasks
            parts.append(f"ETA {_duration((now - first) * (of - docs) / docs)}")
        elif first and total and 0 < done < total:
            parts.append(f"ETA {_duration((now - first) * (total - done) / done)}")
        return ", ".join(parts)

    def _tasks(self) -> tuple[int, int]:
        """Tasks done and in all, over the active stages of this run's running jobs."""
        try:
            tracker = self.sc.statusTracker()
            done = total = 0
            for job_id in tracker.getJobIdsForGroup(self.run_id):
                job = tracker.getJobInfo(job_id)
                if job is None or job.status != "RUNNING":
                    continue
                for sid in job.stageIds:
                    stage = tracker.getStageInfo(sid)
                    if stage is not None and stage.numActiveTasks + stage.numCompletedTasks > 0 \
                            and stage.numCompletedTasks < stage.numTasks:
                        done, total = done + stage.numCompletedTasks, total + stage.numTasks
            return done, total
        except Exception:  # noqa: BLE001 - the context is stopping: no progress to show
            return 0, 0

    def _report(self) -> None:
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)

    # faults -----------------------------------------------------------------------------------

    def faults(self) -> dict:
        """Failed and killed task attempts of this run's stages (with the first reasons), stages
        run more than once, and executors lost since the run started, from Spark's status store
        (``{"unavailable": why}`` if it cannot be read: the run is not failed for its record)."""
        try:
            return self._faults()
        except Exception as exc:  # noqa: BLE001 - e.g. another Spark version's status store API
            return {"unavailable": one_line(exc)}

    def _faults(self) -> dict:
        jsc = self.sc._jsc.sc()
        try:
            jsc.listenerBus().waitUntilEmpty(10_000)  # the store is fed asynchronously
        except Exception:  # noqa: BLE001 - best effort; the store is then a moment behind
            pass
        store, tracker = jsc.statusStore(), self.sc.statusTracker()
        failed = killed = retried_stages = 0
        failures = []
        no_quantiles = self.sc._gateway.new_array(self.sc._jvm.double, 0)
        stages = sorted({s for j in tracker.getJobIdsForGroup(self.run_id)
                         if (info := tracker.getJobInfo(j)) is not None for s in info.stageIds})
        for sid in stages:
            try:
                attempts = store.stageData(sid, False, None, False, no_quantiles)
            except Exception:  # noqa: BLE001 - a stage that never ran (skipped) is not in the store
                continue
            retried_stages += attempts.size() > 1
            for i in range(attempts.size()):
                stage = attempts.apply(i)
                failed += stage.numFailedTasks()
                killed += stage.numKilledTasks()
                if stage.numFailedTasks() == 0 or len(failures) >= MAX_FAILURES_LISTED:
                    continue
                tasks = store.taskList(sid, stage.attemptId(), 1_000_000)
                for k in range(tasks.size()):
                    t = tasks.apply(k)
                    if t.status() == "FAILED" and len(failures) < MAX_FAILURES_LISTED:
                        msg = t.errorMessage()
                        failures.append({"stage": sid, "stage_attempt": stage.attemptId(), "partition": t.index(),
                                         "attempt": t.attempt(), "executor": t.executorId(), "host": t.host(),
                                         "reason": one_line(msg.get()) if msg.isDefined() else None})
        lost = []
        executors = store.executorList(False)
        for i in range(executors.size()):
            e = executors.apply(i)
            removed = e.removeTime()
            if not e.isActive() and removed.isDefined() and removed.get().getTime() >= self.started * 1000:
                reason = e.removeReason()
                lost.append({"id": e.id(), "host": e.hostPort(), "reason": reason.get() if reason.isDefined() else None})
        return {"failed_task_attempts": failed, "killed_task_attempts": killed, "stages_retried": retried_stages,
                "failures": failures, "executors_lost": lost}


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

"""What a run records: the counters Python workers add to, and the manifest built from them.

This module owns both contracts: the accumulator's key names (workers write them through
:class:`WorkerMetrics`, the driver reads them with :func:`worker_sections`) and the manifest's
shape (:class:`Manifest`). No Spark import: the accumulator's merge rule is a plain object that
Spark's ``SparkContext.accumulator(value, param)`` accepts.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any

from . import events
from .model import INT8_SCHEME  # model.py quantizes int8, so it names the scheme

# accumulator keys: {key: {subkey: int}}
_LOADS_PER_EXECUTOR = "executors"        # executor (host/daemon pid) -> model loads
_LOADS_PER_WORKER = "workers"            # Python worker (host/pid) -> model loads
_TASKS_PER_WORKER = "tasks_per_worker"   # host/daemon pid/worker pid -> tasks run
_TAGGER = "tagger"                       # tagger counters and milliseconds, summed over tasks
_PEAK_LOAD = "peak_load_rss_mb"          # worker -> peak resident MB during the model load
_PEAK_TAGGING = "peak_tagging_rss_mb"    # worker -> peak resident MB after it (mark reset at load)
_PEAK = "peak_rss_mb"                    # worker -> peak resident MB, where the mark cannot be reset
_WORKER_INFO = "worker_info"             # worker -> {python, model_path, device}: strings, first report kept


class CountsParam:
    """Merge rule of the run's accumulator (``pyspark.AccumulatorParam``'s interface): values add
    up, except under keys starting with ``peak_``, which keep the maximum, and under
    ``worker_info``, whose records (strings) are kept as first reported."""

    def zero(self, value):
        return {}

    def addInPlace(self, a, b):
        for key, sub in b.items():
            into = a.setdefault(key, {})
            if key == _WORKER_INFO:
                for k, v in sub.items():
                    into.setdefault(k, v)
                continue
            peak = key.startswith("peak_")
            for k, v in sub.items():
                into[k] = max(into.get(k, v), v) if peak else into.get(k, 0) + v
        return a


class WorkerMetrics:
    """What a Python worker reports, through the run's accumulator (anything with ``add``)."""

    def __init__(self, acc):
        self.acc = acc

    def model_loaded(self, executor: str, worker: str, ms: int, load_peak_mb: int | None) -> None:
        self.acc.add({_TAGGER: {"ms_model_load": ms}})
        self.acc.add({_LOADS_PER_EXECUTOR: {executor: 1}, _LOADS_PER_WORKER: {worker: 1}})
        if load_peak_mb is not None:
            self.acc.add({_PEAK_LOAD: {worker: load_peak_mb}})

    def worker_info(self, worker: str, **info: str | None) -> None:
        """What a worker ran with: its Python executable, the model directory it loaded, its device."""
        self.acc.add({_WORKER_INFO: {worker: info}})

    def task_done(self, executor: str, worker: str, worker_pid: int, peak_mb: int | None, peak_reset: bool,
                  stats, ms_task: int) -> None:
        self.acc.add({_TASKS_PER_WORKER: {f"{executor}/{worker_pid}": 1}})
        if peak_mb is not None:
            self.acc.add({_PEAK_TAGGING if peak_reset else _PEAK: {worker: peak_mb}})
        self.acc.add({_TAGGER: {
            "windows": stats.windows, "tokens_fed": stats.tokens, "padded_tokens": stats.padded_tokens,
            "batches": stats.batches, "unique_texts": stats.unique_texts, "windows_rechecked": stats.windows_rechecked,
            "ms_tokenize": int(stats.seconds_tokenize * 1000), "ms_model": int(stats.seconds_model * 1000),
            "ms_aggregate": int(stats.seconds_aggregate * 1000), "ms_task": ms_task}})


def worker_peaks(acc: dict) -> dict:
    """Peak resident memory (MB) per Python worker (``host/pid``): ``load`` while the model was
    loaded, ``tagging`` after it (or ``peak``, both together, where the kernel mark cannot be reset)."""
    out: dict[str, dict[str, int]] = {}
    for key, name in ((_PEAK_LOAD, "load"), (_PEAK_TAGGING, "tagging"), (_PEAK, "peak")):
        for worker, mb in acc.get(key, {}).items():
            out.setdefault(worker, {})[name] = mb
    return dict(sorted(out.items()))


def worker_sections(acc: dict, records: list[dict] = ()) -> dict[str, Any]:
    """The manifest's per-worker sections, from the accumulator's final value and the workers'
    reports (:mod:`ner_udf.events`). The accumulator holds successful task attempts only; the
    reports also hold attempts that failed (a worker killed after it loaded the model), so model
    loads and peaks take, per executor or worker, the larger of the two (a worker that could not
    reach the driver is then still counted through the accumulator)."""
    acc = {k: dict(v) for k, v in acc.items()}
    reported: dict[str, dict] = {}
    for r in records:
        if r.get("e") == events.LOAD:
            for key, sub in ((_LOADS_PER_EXECUTOR, r["executor"]), (_LOADS_PER_WORKER, r["worker"])):
                reported.setdefault(key, {})[sub] = reported.get(key, {}).get(sub, 0) + 1
            if r.get("peak_mb") is not None:
                _keep_max(reported, _PEAK_LOAD, r["worker"], r["peak_mb"])
            acc.setdefault(_WORKER_INFO, {}).setdefault(
                r["worker"], {k: r.get(k) for k in ("python", "model_path", "device")})
        elif r.get("e") == events.TASK and r.get("peak_mb") is not None:
            _keep_max(reported, _PEAK_TAGGING if r.get("peak_reset") else _PEAK, r["worker"], r["peak_mb"])
    for key, sub in reported.items():
        for k, v in sub.items():
            _keep_max(acc, key, k, v)
    return {
        "model_loads": dict(sorted(acc.get(_LOADS_PER_EXECUTOR, {}).items())),
        "model_loads_per_worker": dict(sorted(acc.get(_LOADS_PER_WORKER, {}).items())),
        "tasks_per_worker": acc.get(_TASKS_PER_WORKER, {}),
        "tagger": acc.get(_TAGGER, {}),
        "worker_peak_rss_mb": worker_peaks(acc),
        "workers": dict(sorted(acc.get(_WORKER_INFO, {}).items())),
    }


def throughput(seconds: float, phases: dict, counts: dict, acc: dict, records: list[dict] = ()) -> dict:
    """The manifest's ``throughput``. ``seconds``: from the start of tagging to the end of counting;
    ``model_load_s``: the longest model load of the run (workers load in parallel, at the start of
    their first task; from the workers' reports, else the accumulator's mean); ``tagging_s``: the
    first write (it reads, tags and writes entities/) less ``model_load_s``; ``writing_s``: the
    later writes and the counting. ``tokens_per_s`` and ``documents_per_s`` are tagging's:
    over ``tagging_s``, without the model load. ``tasks``: the tagging tasks' times (:func:`task_times`)."""
    loads = [r["ms"] for r in records if r.get("e") == events.LOAD and r.get("ms") is not None]
    if not loads and acc.get(_LOADS_PER_WORKER):
        loads = [acc.get(_TAGGER, {}).get("ms_model_load", 0) / sum(acc[_LOADS_PER_WORKER].values())]
    load_s = max(loads, default=0) / 1000
    first = phases.get("tag_and_write_entities", 0.0)
    tagging_s = max(first - load_s, 1e-3)
    return {
        "seconds": round(seconds, 3),
        "model_load_s": round(load_s, 3),
        "tagging_s": round(tagging_s, 3),
        "writing_s": round(sum(v for k, v in phases.items() if k not in ("tag_and_write_entities", "before_tagging")), 3),
        "documents_per_s": round(counts["documents"]["total"] / tagging_s, 2),
        "tokens_per_s": round(counts["tokens"] / tagging_s, 1),
        "phases": phases,
        "tasks": task_times(records),
    }


def task_times(records: list[dict]) -> dict:
    """The tagging tasks' times, from the workers' ``task`` reports: one per partition (the last
    attempt's, where a task ran again), model loads excluded. ``max_over_median`` near 1 means no
    straggler. ``count`` is the partitions reported: a partition with no rows does not report,
    nor does a worker that cannot reach the driver. ``seconds`` in partition order."""
    by_partition: dict[int, dict] = {}
    unplaced = []  # reported outside a Spark task
    for r in records:
        if r.get("e") != events.TASK or r.get("ms") is None:
            continue
        p = r.get("partition")
        if p is None:
            unplaced.append(r)
        elif p not in by_partition or (r.get("attempt") or 0) >= (by_partition[p].get("attempt") or 0):
            by_partition[p] = r
    reports = [by_partition[p] for p in sorted(by_partition)] + unplaced
    seconds = [round(r["ms"] / 1000, 3) for r in reports]
    if not seconds:
        return {"count": 0, "median_s": None, "max_s": None, "max_over_median": None, "seconds": []}
    median = statistics.median(seconds)
    return {"count": len(seconds), "median_s": round(median, 3), "max_s": max(seconds),
            "max_over_median": round(max(seconds) / median, 2) if median > 0 else None, "seconds": seconds}


def _keep_max(d: dict, key: str, sub: str, value: int) -> None:
    into = d.setdefault(key, {})
    into[sub] = max(into.get(sub, value), value)


def model_identity(model_info: dict, cfg) -> dict:
    """What decides which entities a run produces: the model (name, resolved revision, weights
    sha256, labels) and the settings that change its output. An incremental run must match the
    identity recorded in the output it extends."""
    t, m = cfg.tagging, cfg.model
    identity = {
        "name": model_info.get("name"),
        "resolved_revision": model_info.get("resolved_revision"),
        "weights_sha256": None if model_info.get("weights_sha256") is None else str(model_info["weights_sha256"]),
        "labels": model_info.get("labels"),
        "precision": m.precision,
        "aggregation": t.aggregation,
        "max_length": t.max_length,
        "stride": t.stride,
        "label_map": dict(sorted(t.label_map.items())),
        "labels_kept": list(t.labels),
        "min_score": t.min_score,
        "max_windows_per_doc": t.max_windows_per_doc,
    }
    if m.recheck_margin:  # only when set, so that outputs written before the setting existed still match
        identity["recheck_margin"] = m.recheck_margin
    if m.precision == "int8":
        # int8 has been quantized per output channel since 02ab1d4 (per tensor before: 53% of fp32's
        # entities kept against 79%); int8 outputs written before carry no scheme and do not match
        identity["quantization"] = INT8_SCHEME
    if m.backend != "torch":  # another runtime's numerics (OpenVINO at bf16 is not torch at bf16)
        identity["backend"] = m.backend
    return identity


_IDENTITY_KEYS = {"precision": "model.precision", "aggregation": "tagging.aggregation",
                  "max_length": "tagging.max_length", "stride": "tagging.stride", "label_map": "tagging.label_map",
                  "labels_kept": "tagging.labels", "min_score": "tagging.min_score",
                  "max_windows_per_doc": "tagging.max_windows_per_doc", "recheck_margin": "model.recheck_margin",
                  "quantization": "model.precision int8 scheme", "backend": "model.backend"}


def identity_changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for each difference. The model's name (a path, for a local directory)
    does not count when both sides name the same weights by their sha256."""
    same_weights = old.get("weights_sha256") is not None and old.get("weights_sha256") == new.get("weights_sha256")
    out = []
    for key in list(new) + [k for k in old if k not in new and k in _IDENTITY_KEYS]:
        if key == "name" and same_weights:
            continue
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if key == "weights_sha256":
                a, b = (str(a)[:12] + "…" if a else a), (str(b)[:12] + "…" if b else b)
            out.append(f"{_IDENTITY_KEYS.get(key, 'model.' + key)}: {a} -> {b}")
    return out


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The record of one committed run (``OUTPUT/manifest.json``)."""

    run_id: str
    started_at: str
    finished_at: str
    model: dict          # name, revision, resolved_revision, weights_sha256, labels
    model_identity: dict  # what an incremental run must match (model_identity())
    config: dict         # the effective configuration
    counts: dict         # this run's documents by status, entities by label, tokens, windows; input
                         # (read, skipped, tagged, retried); table (rows in the committed tables)
    model_loads: dict    # executor (host/pid of its Python daemon) -> model loads, failed attempts included
    model_loads_per_worker: dict
    tasks_per_worker: dict  # successful task attempts per Python worker
    tagger: dict         # tagger counters and milliseconds, summed over successful task attempts
    worker_peak_rss_mb: dict  # failed attempts included, where their worker reported before it died
    workers: dict        # Python worker (host/pid) -> python, model_path, device
    throughput: dict     # seconds, model_load_s, tagging_s, writing_s, documents_per_s, tokens_per_s, phases (throughput())
    spark: dict          # version, master, app_id, task_slots (as planned), partitions, balance (tagging.balance
                         # as run: auto resolved), warning (spark.Layout's, or None), conf (the config's
                         # spark.conf keys, as in effect)
    faults: dict         # failed/killed task attempts (first reasons), stages retried, executors lost (RunMonitor)
    output: dict         # path, mode, tables

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

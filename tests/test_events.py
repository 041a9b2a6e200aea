"""Workers' reports to the driver (ner_udf.events) and how the manifest merges them with the
accumulator (pure: no Spark)."""

from __future__ import annotations

import socket
import time

from ner_udf import events
from ner_udf.manifest import CountsParam, WorkerMetrics, worker_sections


def wait_for(receiver, n: int) -> list[dict]:
    deadline = time.time() + 10
    while len(receiver.snapshot()) < n and time.time() < deadline:
        time.sleep(0.01)
    return receiver.snapshot()


def test_records_reach_the_receiver_in_order_and_strangers_are_ignored():
    seen = []
    with events.Receiver("127.0.0.1", "127.0.0.1", seen.append) as receiver:
        for i in range(3):
            assert events.send(receiver.address, e=events.BATCH, worker="h/1", docs=i, tokens=10 * i)
        host, port, _ = receiver.address
        with socket.create_connection((host, port)) as stranger:  # wrong token: nothing it says is kept
            stranger.sendall(b"not-the-token\n" + b'{"e": "batch", "worker": "x", "docs": 99}\n')
        assert events.send(receiver.address, e=events.LOAD, executor="h/0", worker="h/1", ms=5, peak_mb=300)
        records = wait_for(receiver, 4)
    assert [r["e"] for r in records] == ["batch"] * 3 + ["load"]
    assert [r.get("docs") for r in records[:3]] == [0, 1, 2] and seen == records


def test_an_unreachable_driver_costs_one_attempt():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = ("127.0.0.1", s.getsockname()[1], "token")
    t = time.perf_counter()
    assert not events.send(address, e=events.BATCH, worker="h/1", docs=1, tokens=1)
    assert not events.send(address, e=events.BATCH, worker="h/1", docs=1, tokens=1)  # given up: no new attempt
    assert time.perf_counter() - t < 5
    assert not events.send(None, e=events.BATCH)


def test_the_manifest_counts_loads_of_failed_attempts_from_reports():
    """Worker h/11 loaded the model and was killed (only its report knows); h/12 replaced it; h/21
    could not reach the driver (only the accumulator knows). Every load is counted once."""
    param = CountsParam()
    acc = param.zero({})

    class Acc:
        def add(self, v):
            param.addInPlace(acc, v)

    m = WorkerMetrics(Acc())
    m.model_loaded("h/10", "h/12", 900, 400)  # successful attempts: the accumulator
    m.model_loaded("h/20", "h/21", 800, 410)
    reports = [
        {"e": events.LOAD, "executor": "h/10", "worker": "h/11", "ms": 950, "peak_mb": 420, "python": "p",
         "model_path": "m", "device": "cpu"},
        {"e": events.LOAD, "executor": "h/10", "worker": "h/12", "ms": 900, "peak_mb": 400, "python": "p",
         "model_path": "m", "device": "cpu"},
        {"e": events.TASK, "executor": "h/10", "worker": "h/12", "peak_mb": 700, "peak_reset": True},
    ]
    sections = worker_sections(acc, reports)
    assert sections["model_loads"] == {"h/10": 2, "h/20": 1}
    assert sections["model_loads_per_worker"] == {"h/11": 1, "h/12": 1, "h/21": 1}
    assert sections["worker_peak_rss_mb"] == {"h/11": {"load": 420}, "h/12": {"load": 400, "tagging": 700},
                                              "h/21": {"load": 410}}
    assert sections["workers"]["h/11"] == {"python": "p", "model_path": "m", "device": "cpu"}
    assert worker_sections(acc)["model_loads"] == {"h/10": 1, "h/20": 1}  # without reports: the accumulator's


def test_close_ends_open_connections():
    receiver = events.Receiver("127.0.0.1", "127.0.0.1")
    conn = socket.create_connection(receiver.address[:2])
    conn.sendall(receiver.address[2].encode() + b"\n")
    deadline = time.time() + 5
    while not receiver._open and time.time() < deadline:
        time.sleep(0.01)
    receiver.close()
    conn.settimeout(5)
    assert conn.recv(1) == b""  # the driver's side is gone: the worker's next send fails
    conn.close()

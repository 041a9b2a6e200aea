"""Reports from Python workers that reach the driver as they happen, failed attempts included.

Spark's accumulators carry a task's updates only when the task succeeds: a Python worker killed
after it loaded the model leaves no trace in them. So each worker also sends small JSON records
(``load`` when it loaded the model, ``batch`` after each batch it tagged, ``task`` when a task
ends) over TCP to a :class:`Receiver` on the driver. The driver uses them for the manifest's
model loads and memory peaks (which then count every attempt) and for the progress line.

Best effort by design: a worker that cannot reach the driver (a firewall between executors and
the driver) gives up on the first failure and the run goes on, its figures then from the
accumulator alone. No Spark import: the driver passes :attr:`Receiver.address` to the workers.
"""

from __future__ import annotations

import json
import secrets
import socket
import socketserver
import threading
from typing import Callable

# record kinds (field "e") and the fields each carries
LOAD = "load"    # executor, worker, ms, peak_mb, python, model_path, device
BATCH = "batch"  # worker, docs, tokens
TASK = "task"    # executor, worker, peak_mb, peak_reset, ms (tagging, model load excluded), partition, attempt

_CONNECT_TIMEOUT_S = 2.0


class Receiver:
    """A TCP server on the driver collecting the workers' records (one JSON object per line, after
    the run's token) in :attr:`records`; ``on_record`` is called for each, in the server's threads."""

    def __init__(self, bind_host: str, advertise_host: str, on_record: Callable[[dict], None] | None = None):
        self.token = secrets.token_hex(16)
        self.records: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        self._open: set[socket.socket] = set()

        class Handler(socketserver.StreamRequestHandler):
            def setup(self):
                super().setup()
                with receiver._lock:
                    receiver._open.add(self.connection)

            def finish(self):
                with receiver._lock:
                    receiver._open.discard(self.connection)
                super().finish()

            def handle(self):
                if self.rfile.readline().strip().decode("ascii", "replace") != receiver.token:
                    return  # not one of this run's workers
                for line in self.rfile:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    with receiver._lock:
                        receiver.records.append(record)
                    if on_record is not None:
                        on_record(record)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((bind_host, 0), Handler)
        self.address = (advertise_host, self._server.server_address[1], self.token)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ner-udf-receiver", daemon=True)
        self._thread.start()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.records)

    def close(self) -> None:
        """Stop listening and end the workers' open connections (a reused worker keeps its own
        until it reports to another run)."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_connections: dict[tuple, socket.socket | None] = {}  # per worker process: driver address -> open socket (None: gave up)


def send(address: tuple | None, **record) -> bool:
    """Send one record to the driver at ``address`` (``Receiver.address``); False when it cannot be
    reached (this process then stops trying that address)."""
    if address is None:
        return False
    key = tuple(address)
    conn = _connections.get(key, False)
    if conn is None:
        return False
    try:
        if conn is False:
            for old in [k for k, c in _connections.items() if c is not None]:  # an earlier run's driver
                _connections.pop(old).close()
            host, port, token = key
            conn = socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S)
            conn.sendall(token.encode("ascii") + b"\n")
            _connections[key] = conn
        conn.sendall(json.dumps(record).encode() + b"\n")
        return True
    except OSError:
        _connections[key] = None
        return False

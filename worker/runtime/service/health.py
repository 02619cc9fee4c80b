"""Health: /metrics, /healthz and /readyz on TRIAGE_METRICS_PORT, and the readiness probes.

`/metrics` is the Prometheus text format, `/healthz` answers 200 while the process runs (also during
a long model load) unless its main loop has stopped turning: once the loop has started, a poll
that has not come round for TRIAGE_HEALTH_STALL_S makes it answer 503 (a wedged worker is
restarted by its liveness probe, not left doing nothing), and `/readyz` answers 200 only when
every readiness check passes (database reachable and at the migrations' head, broker reachable,
model loaded), 503 with the failing checks otherwise.

The server is small and defensive: it listens on TRIAGE_METRICS_HOST, queues up to LISTEN_BACKLOG
connections (a burst of probes and scrapes is answered, not dropped by the kernel), serves at most
MAX_CONNECTIONS at once (a connection beyond that is closed at once rather than given a thread),
and drops a connection that sends nothing for REQUEST_TIMEOUT_S, so idle or slow clients cannot
pile up threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadyCheck = Callable[[], Mapping[str, bool]]
Liveness = Callable[[], Mapping[str, Any] | None]  # None: alive; else why not, for the response body
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 5.0
# Connections the kernel queues before the server accepts them. socketserver's default of 5 drops a
# burst of probes and scrapes (200 connects took 33 s, each dropped SYN retried after 1, 3, 7 s ...).
LISTEN_BACKLOG = 256


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: the client tries again, no thread is spent on it
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class HealthServer:
    """`/metrics`, `/healthz` and `/readyz` on one port, in a daemon thread."""

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        ready: ReadyCheck,
        host: str = "0.0.0.0",
        liveness: Liveness = lambda: None,
        reasons: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S  # the socket's: a client that sends nothing is dropped

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    problem = liveness()
                    body = json.dumps(problem or {"status": "alive"}).encode() + b"\n"
                    self._send(503 if problem else 200, body, "application/json")
                elif path == "/readyz":
                    checks = dict(ready())
                    status = 200 if all(checks.values()) else 503
                    answer: dict[str, Any] = {"ready": status == 200, "checks": checks}
                    if why := dict(reasons()):
                        answer["reasons"] = why
                    body = json.dumps(answer).encode() + b"\n"
                    self._send(status, body, "application/json")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes stay out of the logs
                pass

        self.server = BoundedHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CachedCheck:
    """Run a readiness probe at most once per `ttl_s`, so frequent probes cost nothing."""

    def __init__(self, probe: ReadyCheck, ttl_s: float = 2.0) -> None:
        self.probe, self.ttl_s = probe, ttl_s
        self._at = 0.0
        self._value: Mapping[str, bool] = {}
        self._lock = threading.Lock()

    def __call__(self) -> Mapping[str, bool]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._value, self._at = self.probe(), time.monotonic()
            return self._value

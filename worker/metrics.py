"""Metrics: Prometheus metrics, and /healthz and /readyz, served on TRIAGE_METRICS_PORT.

The worker reports each committed batch (`observe_batch`), each relay round and the consumer
lag; this module turns them into counters and histograms. `/metrics` is the Prometheus text
format, `/healthz` answers while the process runs, and `/readyz` answers 200 only when the
database and the broker are reachable and the model is loaded (503 with the failing checks
otherwise). Every metric the Grafana dashboard queries is listed in `EXPORTED` and tested.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

if TYPE_CHECKING:
    from worker.app import Batch

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
EVENT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = tuple(2**n for n in range(8, 20))  # 256 .. 524,288 padded tokens


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("triage_events_consumed", "Events read from the input topic and committed", registry=r)
        self.classified = Counter("triage_events_classified", "Events the model classified", registry=r)
        self.stored = Counter("triage_events_stored", "New result rows stored (replays excluded)", registry=r)
        self.escalated = Counter("triage_events_escalated", "Stored results that were escalated", registry=r)
        self.dead_lettered = Counter(
            "triage_events_dead_lettered", "Events sent to the dead-letter topic", ["reason"], registry=r
        )
        self.duplicates = Counter("triage_events_duplicate", "Events whose event_id was already stored", registry=r)
        self.published = Counter(
            "triage_escalations_published", "Escalations published to the escalation topic", registry=r
        )
        self.batch_events = Histogram(
            "triage_batch_events", "Events per micro-batch", buckets=EVENT_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "triage_batch_padded_tokens", "Padded tokens per micro-batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "triage_queue_wait_seconds",
            "From a batch leaving the batcher to the model starting on it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "triage_inference_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.store = Histogram(
            "triage_store_seconds",
            "Store transaction (and dead letters) per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "triage_end_to_end_seconds",
            "From the Kafka record timestamp to its offset being committed, per event",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "triage_consumer_lag", "Records behind the partition's high watermark", ["topic", "partition"], registry=r
        )
        self.in_flight = Gauge("triage_pipeline_batches_in_flight", "Batches between poll and commit", registry=r)
        self.model = Info("triage_model", "The model being served", registry=r)

    def describe_model(self, description: Mapping[str, Any]) -> None:
        self.model.info({k: str(v) for k, v in description.items() if k in ("model", "device", "dtype", "max_length")})

    def observe_batch(self, batch: Batch, committed_at_ms: float) -> None:
        self.consumed.inc(len(batch.records))
        self.classified.inc(len(batch.classified))
        self.stored.inc(batch.outcome.inserted)
        self.escalated.inc(batch.outcome.escalations)
        self.duplicates.inc(len(batch.outcome.duplicates))
        for rejection in batch.rejections:
            self.dead_lettered.labels(rejection.error_class).inc()
        self.batch_events.observe(len(batch.records))
        self.batch_tokens.observe(batch.padded_tokens)
        if batch.queue_wait_s is not None:
            self.queue_wait.observe(batch.queue_wait_s)
        self.inference.observe(batch.stage_s.get("inference", 0.0))
        self.store.observe(batch.stage_s.get("store", 0.0))
        for record in batch.records:
            if record.timestamp_ms is not None and record.timestamp_ms >= 0:
                self.end_to_end.observe(max(committed_at_ms - record.timestamp_ms, 0.0) / 1000)

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        self.lag.clear()  # partitions that moved to another worker disappear
        for (topic, partition), behind in lag.items():
            self.lag.labels(topic, str(partition)).set(behind)

    def exported_names(self) -> set[str]:
        """Every sample name a scrape can contain (e.g. triage_events_stored_total, *_bucket)."""
        return {sample.name for family in self.registry.collect() for sample in family.samples} | {
            family.name + suffix
            for family in self.registry.collect()
            for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}.get(
                family.type, ("",)
            )
        }


ReadyCheck = Callable[[], Mapping[str, bool]]


class HealthServer:
    """`/metrics`, `/healthz` and `/readyz` on one port, in a daemon thread."""

    def __init__(self, port: int, metrics: Metrics, ready: ReadyCheck, host: str = "0.0.0.0") -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b'{"status": "alive"}\n', "application/json")
                elif path == "/readyz":
                    checks = dict(ready())
                    status = 200 if all(checks.values()) else 503
                    body = json.dumps({"ready": status == 200, "checks": checks}).encode() + b"\n"
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

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
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
        self._at, self._value = 0.0, {}
        self._lock = threading.Lock()

    def __call__(self) -> Mapping[str, bool]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._value, self._at = self.probe(), time.monotonic()
            return self._value

"""Metrics: what a batch adds, the HTTP endpoints, and the Grafana dashboard against what is exported."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from worker.contracts.errors import ErrorClass
from worker.contracts.values import RawRecord, Rejection, StoreOutcome
from worker.runtime.batches import BatchReport, Inferred, Polled, StageName, Stored
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.service.health import HealthServer
from worker.runtime.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "worker/ops/observability/grafana/dashboards/feedback-triage.json").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def record(offset: int, timestamp_ms: int | None = 1_000) -> RawRecord:
    return RawRecord("feedback.events", 0, offset, None, b"{}", timestamp_ms, ())


def scrape(metrics: Metrics) -> dict[str, float]:
    from prometheus_client import generate_latest

    samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_a_committed_batch_updates_counters_and_histograms() -> None:
    metrics = Metrics()
    polled = Polled(tuple(record(i) for i in range(5)), generation=0)
    inferred = Inferred(
        polled,
        classified=(),
        rejections=(Rejection(polled.records[4], ErrorClass.INVALID_JSON, "value is not JSON"),),
        padded_tokens=640,
        queue_wait_s=0.02,
        timings=((StageName.INFER, 0.1),),
    )
    stored = Stored(inferred, StoreOutcome(inserted=3, escalations=2, duplicates=("x",)), inferred.timings)
    report = BatchReport.of(stored, committed={"feedback.events:0": 5}, commit_s=0.01)
    metrics.observe(dataclasses.replace(report, finished_at_ms=3_000))
    got = scrape(metrics)
    assert got["triage_events_consumed_total"] == 5
    assert got["triage_events_stored_total"] == 3 and got["triage_events_escalated_total"] == 2
    assert got["triage_events_duplicate_total"] == 1
    assert got["triage_events_dead_lettered_total{reason=invalid_json}"] == 1
    assert got["triage_batch_padded_tokens_sum"] == 640 and got["triage_batch_events_count"] == 1
    assert got["triage_end_to_end_seconds_count"] == 5 and got["triage_end_to_end_seconds_sum"] == 10.0
    assert got["triage_stage_seconds_sum{stage=infer}"] == 0.1 and got["triage_stage_seconds_count{stage=commit}"] == 1
    assert got["triage_stage_busy_seconds_total{stage=infer}"] == 0.1
    metrics.set_lag({("feedback.events", 0): 7, ("feedback.events", 1): 0})
    metrics.set_lag({("feedback.events", 1): 2})  # partition 0 moved away: its series goes
    got = scrape(metrics)
    assert got["triage_consumer_lag{partition=1,topic=feedback.events}"] == 2
    assert "triage_consumer_lag{partition=0,topic=feedback.events}" not in got


def test_endpoints() -> None:
    checks = {"database": True, "broker": False, "model": True}
    metrics = Metrics()
    metrics.describe_model({"model": "m", "device": "cpu", "dtype": "float32", "max_length": 512})
    server = HealthServer(0, metrics.registry, lambda: checks, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        try:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
            raise AssertionError("expected 503 while the broker is unreachable")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and json.loads(exc.read())["checks"]["broker"] is False
        checks["broker"] = True
        assert json.loads(urllib.request.urlopen(f"{base}/readyz", timeout=5).read())["ready"] is True
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'device="cpu"' in body and "triage_model_info{" in body and "triage_events_consumed_total" in body
    finally:
        server.stop()


def test_idle_connections_cannot_pile_up_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 clients that connect and say nothing once held 200 threads for good."""
    import socket
    import threading

    from worker.runtime.service import health

    monkeypatch.setattr(health, "REQUEST_TIMEOUT_S", 0.3)
    server = HealthServer(0, Metrics().registry, lambda: {"model": True}, host="127.0.0.1").start()
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    try:
        time.sleep(0.1)
        assert threading.active_count() - before <= health.MAX_CONNECTIONS
        # The idle ones are dropped after the timeout, so a probe gets through again.
        deadline = time.monotonic() + 5
        while True:
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "no probe answered after the idle connections timed out"
                time.sleep(0.05)
    finally:
        for connection in idle:
            connection.close()
        server.stop()


def test_a_burst_of_200_connects_is_queued_not_dropped() -> None:
    """With socketserver's listen backlog of 5, most of a burst of connects was dropped by the kernel
    and retried by the client after 1 s, 3 s, 7 s ... (200 took 33 s): probes timed out. A connect the
    backlog holds completes at once, so none of these needs the 1 s a retried one would."""
    import socket

    server = HealthServer(0, Metrics().registry, lambda: {"model": True}, host="127.0.0.1").start()
    connections = []
    try:
        for _ in range(200):
            connections.append(socket.create_connection(("127.0.0.1", server.port), timeout=0.9))
        for connection in connections[:5]:  # and the queued ones are then served in turn
            connection.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            connection.settimeout(5)
            assert connection.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        for connection in connections:
            connection.close()
        server.stop()


def prometheus_exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"] if t["datasource"]["type"] == "prometheus"]


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = Metrics().exported_names()
    queried = {name for expr in prometheus_exprs() for name in re.findall(r"\btriage_[a-z_]+\b", expr)}
    assert len(queried) >= 16
    assert queried <= exported, sorted(queried - exported)


def test_dashboard_sql_reads_views_the_migrations_create() -> None:
    migrations = "".join(p.read_text() for p in (ROOT / "migrations/versions").glob("*.py"))
    sql = [t["rawSql"] for p in DASHBOARD["panels"] for t in p["targets"] if "rawSql" in t]
    relations = {name for query in sql for name in re.findall(r"\bfrom (\w+)", query)}
    assert relations == {"sentiment_daily", "sentiment_weekly", "escalation_backlog"}
    for name in relations:
        assert f"create view {name}" in migrations or f'name="{name}"' in migrations


def test_observability_profile_is_wired() -> None:
    services = COMPOSE["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    scrape_config = yaml.safe_load((ROOT / "worker/ops/observability/prometheus.yml").read_text())["scrape_configs"][0]
    port = int(services["worker"]["environment"]["TRIAGE_METRICS_PORT"])
    assert scrape_config["dns_sd_configs"][0]["port"] == port
    assert set(scrape_config["dns_sd_configs"][0]["names"]) == {"worker", "worker-gpu"}
    # The dashboard names no data source of its own: its variables pick one of each provisioned type.
    sources = (ROOT / "worker/ops/observability/grafana/provisioning/datasources/datasources.yml").read_text()
    types = {d["type"] for d in yaml.safe_load(sources)["datasources"]}
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    for target in (t for p in DASHBOARD["panels"] for t in p["targets"]):
        variable = variables[target["datasource"]["uid"].strip("${}")]
        assert variable["type"] == "datasource" and variable["query"] == target["datasource"]["type"] in types


def test_healthz_fails_when_the_main_loop_stops_turning() -> None:
    now = [100.0]
    heartbeat = Heartbeat(clock=lambda: now[0])
    server = HealthServer(
        0, Metrics().registry, lambda: {"model": True}, host="127.0.0.1", liveness=lambda: heartbeat.stalled(60)
    ).start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        now[0] += 3600  # a model loading for an hour: the loop has not started, so nothing is wrong yet
        assert urllib.request.urlopen(url, timeout=5).status == 200
        heartbeat.beat()
        now[0] += 59
        assert urllib.request.urlopen(url, timeout=5).status == 200
        now[0] += 2
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        assert json.loads(refused.value.read()) == {"status": "stalled", "main_loop_idle_s": 61.0}
        heartbeat.beat()
        assert urllib.request.urlopen(url, timeout=5).status == 200
    finally:
        server.stop()


def test_the_runner_beats_on_every_poll() -> None:
    from tests.unit.fakes import MemoryDeadLetters, MemorySource, MemoryStore, build_runner

    source = MemorySource({0: [b'{"text": "fine"}'] * 3})
    runner = build_runner(source, MemoryStore(), MemoryDeadLetters())
    assert runner.heartbeat.last is None
    runner.run(until=lambda totals: totals.stored == 3)
    assert runner.heartbeat.last is not None


def test_escalation_delivery_latency_is_a_histogram_of_escalations_only() -> None:
    metrics = Metrics()
    metrics.observe_delivery("escalation", 2.5)
    metrics.observe_delivery("result", 9.0)  # results are not what a human waits for
    value = metrics.registry.get_sample_value
    assert value("triage_escalation_acknowledged_seconds_count") == 1
    assert value("triage_escalation_acknowledged_seconds_sum") == 2.5

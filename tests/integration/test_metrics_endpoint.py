"""A running worker serves /metrics, /healthz and /readyz with the counts of what it processed."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker, free_port

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def test_metrics_health_and_readiness(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    events: list[tuple[bytes | None, bytes]] = [
        (None, json.dumps({"event_id": f"m-{i}", "text": f"review {i}", "product": "p"}).encode()) for i in range(30)
    ]
    events.append((None, b"not json"))
    produce(broker.bootstrap_servers, events)
    port = free_port()
    # A shadow candidate that cannot be loaded once stopped the served model at start-up (exit 2).
    worker = start_worker(TRIAGE_METRICS_PORT=str(port), TRIAGE_SHADOW_MODEL="/no/such/candidate")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/healthz")[0] == 200, 60, "/healthz")
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 30, 120, "rows stored")

    def sample(name: str, **labels: str) -> float:
        body = get(f"{base}/metrics")[1].decode()
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return -1.0

    wait_until(lambda: sample("triage_events_consumed_total") == 31, 30, "the last batch counted")
    assert sample("triage_events_stored_total") == 30
    assert sample("triage_events_dead_lettered_total", reason="invalid_json") == 1
    assert sample("triage_end_to_end_seconds_count") == 31
    assert sample("triage_model_info", device="cpu") == 1
    status, body = get(f"{base}/readyz")
    checks = {"database": True, "schema": True, "broker": True, "model": True, "dead_letter_guard": True}
    assert status == 200 and json.loads(body)["checks"] == checks
    assert json.loads(body)["reasons"]["shadow"].startswith(
        "off: ModelLoadError: cannot load model '/no/such/candidate'"
    )
    assert sample("triage_shadow_model_loaded") == 0
    assert sample("triage_main_loop_last_poll_timestamp_seconds") > 0 and sample("triage_model_loaded") == 1
    assert worker.stop() == 0
    assert '"shadow_disabled"' in worker.logs()
    assert '"metrics_listening"' in worker.logs()

"""The dead-letter guard in a running worker against the real broker: a healthy stream with 1% bad
events goes through; a producer that starts sending garbage stops the worker at the trip point,
with nothing committed past it and /readyz saying why."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.checkpoints import CORPUS
from tests.services import WorkerProcess, committed_offsets, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker

pytestmark = pytest.mark.integration


def good(i: int) -> tuple[bytes, bytes]:
    return f"g-{i}".encode(), json.dumps({"event_id": f"g-{i}", "text": f"{CORPUS[i % len(CORPUS)]} {i}"}).encode()


def readyz(worker: WorkerProcess) -> tuple[int, dict[str, object]]:
    port = int(re.findall(r'"port": (\d+), "paths"', worker.logs())[0])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_a_healthy_stream_with_one_percent_bad_goes_through(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    values = [(None, b"not json") if i % 100 == 50 else good(i) for i in range(1_500)]
    produce(broker.bootstrap_servers, values)
    worker = start_worker()
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 1_485, 180, "all stored")
    assert readyz(worker)[0] == 200
    assert worker.stop() == 0
    assert "dead_letter_guard_tripped" not in worker.logs()
    assert sum(o or 0 for o in committed_offsets(broker.bootstrap_servers).values()) == 1_500


def test_a_producer_sending_garbage_trips_the_guard_at_the_trip_point(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    values = [good(i) for i in range(200)] + [(None, b'{"wrong": "schema"}')] * 400
    placed = produce(broker.bootstrap_servers, values)
    worker = start_worker()
    wait_until(lambda: "dead_letter_guard_tripped" in worker.logs(), 120, "the guard to trip")
    wait_until(lambda: readyz(worker)[0] == 503, 30, "/readyz to say so")
    status, answer = readyz(worker)
    assert answer["checks"]["dead_letter_guard"] is False  # type: ignore[index]
    assert "100 consecutive events dead-lettered" in answer["reasons"]["dead_letter_guard"]  # type: ignore[index]
    assert worker.stop() == 0
    assert 0 < scalar(database_url, "select count(*) from feedback_results") <= 200  # the good ones polled before it
    # Committed: never past the trip point (the 100th bad event of each partition's run, at most).
    bad_per_partition: dict[int, list[int]] = {}
    for (partition, offset), (_, value) in zip(placed, values, strict=True):
        if value.startswith(b'{"wrong"'):
            bad_per_partition.setdefault(partition, []).append(offset)
    for partition, offset in committed_offsets(broker.bootstrap_servers).items():
        bad = sorted(bad_per_partition.get(partition, []))
        assert offset is None or not bad or offset <= bad[min(99, len(bad) - 1)], (partition, offset)
    assert sum(o or 0 for o in committed_offsets(broker.bootstrap_servers).values()) < 600

"""Fault 5: hostile input. The worker routes every payload of a hostile stream correctly (the decoder
alone, on the same payloads and on generated ones, is tested in tests/unit/test_hostile_payloads.py)."""

from __future__ import annotations

from collections.abc import Callable

from tests.faults.conftest import FAST_BATCHES, GUARD_OFF
from tests.faults.harness import Expectation, drain_and_stop, verify
from tests.faults.hostile import hostile_stream
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker


def test_hostile_stream_through_the_worker(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    stream = hostile_stream(10_000 if long_run else 1_500, seed=11)
    placed = produce(broker.bootstrap_servers, stream, max_request_size=32 * 1024 * 1024)
    expected = Expectation.of(stream, placed)
    assert len(expected.ids) and sum(expected.dead.values())

    worker = start_worker(**FAST_BATCHES, **GUARD_OFF)
    wait_until(
        lambda: scalar(database_url, "select count(*) from feedback_results") >= len(expected.ids) // 2,
        240,
        "half the valid payloads stored",
    )
    assert worker.process.poll() is None, "the worker stopped on input"
    drain_and_stop(worker, database_url, expected, 240, "every valid payload stored")
    assert '"duplicate_events_skipped"' in worker.logs()
    verify(
        "hostile_input",
        broker.bootstrap_servers,
        database_url,
        expected,
        payloads=len(stream),
        largest_payload_bytes=max(len(v) for _, v in stream),
    )

"""Fault 7: SIGTERM during a busy stream drains, commits only stored work, exits 0 within the grace time."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, assert_committed_only_handled, drain_and_stop, make_stream, verify
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker


def test_sigterm_mid_stream_drains_and_exits_zero(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    n = 10_000 if long_run else 3_000
    stream = make_stream(n, 30)
    placed = produce(broker.bootstrap_servers, stream)
    expected = Expectation.of(stream, placed)
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731

    grace = 20
    worker = start_worker(TRIAGE_SHUTDOWN_GRACE_S=str(grace), **FAST_BATCHES)
    wait_until(lambda: rows() >= 300, 120, "a busy stream")
    asked = time.monotonic()
    code = worker.stop(timeout_s=grace + 10)
    took = time.monotonic() - asked
    assert code == 0, worker.logs()[-2000:]
    assert took < grace, took
    stopped_at = rows()
    assert stopped_at < len(expected.ids), "the stream was not busy when SIGTERM came"

    assert_committed_only_handled(broker.bootstrap_servers, database_url, expected)

    worker = start_worker(**FAST_BATCHES)
    drain_and_stop(worker, database_url, expected, 300, "the rest after restart")
    verify(
        "sigterm", broker.bootstrap_servers, database_url, expected, drain_s=round(took, 2), rows_at_sigterm=stopped_at
    )

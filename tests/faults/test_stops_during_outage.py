"""Faults 8 and 9: a SIGTERM, and a rebalance, while PostgreSQL is down.

Both used to wait without a deadline: the store retried forever, a SIGTERM drain relied on SIGALRM
raising into whatever ran, and a revoke drained on kafka-python's network thread for as long as
the outage lasted. Now a stop abandons at `TRIAGE_SHUTDOWN_GRACE_S` and a revoke at
`TRIAGE_REVOKE_DRAIN_S`, committing nothing that is not stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, assert_committed_only_handled, drain_and_stop, make_stream, verify
from tests.faults.test_outages import set_database_reachable
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker

OUTAGE_SETTINGS = {"TRIAGE_RETRY_MAX_BACKOFF_S": "1", **FAST_BATCHES}


@contextmanager
def outage_under_way(database_url: str, server_url: str, worker: WorkerProcess) -> Iterator[None]:
    """Once the worker has made progress, take the database away until the block ends."""
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") >= 300, 120, "progress")
    set_database_reachable(server_url, database_url, False)
    try:
        wait_until(lambda: "store_retry" in worker.logs(), 30, "the store waiting out the outage")
        yield
    finally:
        set_database_reachable(server_url, database_url, True)


def test_sigterm_during_a_postgres_outage_abandons_within_the_grace_time(
    broker: LocalBroker,
    database_url: str,
    postgres_server_url: str,
    start_worker: Callable[..., WorkerProcess],
    long_run: bool,
) -> None:
    stream = make_stream(6_000 if long_run else 2_000, 20)
    expected = Expectation.of(stream, produce(broker.bootstrap_servers, stream))
    grace = 5
    worker = start_worker(TRIAGE_SHUTDOWN_GRACE_S=str(grace), **OUTAGE_SETTINGS)
    with outage_under_way(database_url, postgres_server_url, worker):
        asked = time.monotonic()
        code = worker.stop(timeout_s=grace + 20)
        took = time.monotonic() - asked
    assert code == 1, worker.logs()[-2000:]  # abandoned: the batches in hand could not be stored
    assert took < grace + 10, took
    assert "shutdown_abandoning" in worker.logs()
    assert_committed_only_handled(broker.bootstrap_servers, database_url, expected)

    worker = start_worker(**FAST_BATCHES)
    drain_and_stop(worker, database_url, expected, 300, "the rest after restart")
    verify("sigterm_during_outage", broker.bootstrap_servers, database_url, expected, exit_s=round(took, 2))


def test_a_rebalance_during_a_postgres_outage_completes_and_loses_nothing(
    broker: LocalBroker,
    database_url: str,
    postgres_server_url: str,
    start_worker: Callable[..., WorkerProcess],
    long_run: bool,
) -> None:
    """Two workers share the stream; during the outage one leaves (its drain cannot finish, so it
    abandons after its grace time). The other's revoke drain must give up after
    TRIAGE_REVOKE_DRAIN_S (1.5 s here) while the database is still down, instead of holding the
    rebalance for as long as the outage lasts; after the outage it takes over every partition and
    the stream ends stored exactly once. (A worker that starts during an outage waits for the
    database before it joins, so here the rebalance comes from one leaving.)"""
    stream = make_stream(6_000 if long_run else 3_000, 30)
    expected = Expectation.of(stream, produce(broker.bootstrap_servers, stream))
    first = start_worker(**OUTAGE_SETTINGS)
    second = start_worker(TRIAGE_SHUTDOWN_GRACE_S="3", **OUTAGE_SETTINGS)
    wait_until(lambda: first.assignments() >= 1 and second.assignments() >= 1, 60, "both workers in the group")
    with outage_under_way(database_url, postgres_server_url, first):
        left_at = time.monotonic()
        assert second.stop(timeout_s=30) == 1, second.logs()[-2000:]  # abandoned what it could not store
        wait_until(lambda: "revoke_drain_incomplete" in first.logs(), 30, "the revoke drain giving up")
        gave_up_s = time.monotonic() - left_at
        assert first.process.poll() is None
    drain_and_stop(first, database_url, expected, 300, "the first worker finishing alone")
    verify(
        "rebalance_during_outage", broker.bootstrap_servers, database_url, expected, drain_gave_up_s=round(gave_up_s, 2)
    )

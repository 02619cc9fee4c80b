"""Fault 4: workers join and leave the group mid-stream; revoked partitions commit what is stored."""

from __future__ import annotations

from collections.abc import Callable

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, drain_and_stop, make_stream, verify
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker


def test_workers_joining_and_leaving_lose_and_duplicate_nothing(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    n = 12_000 if long_run else 8_000
    stream = make_stream(n, 40)
    placed = produce(broker.bootstrap_servers, stream)
    expected = Expectation.of(stream, placed)
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    at = lambda share: int(len(expected.ids) * share)  # noqa: E731

    first = start_worker(**FAST_BATCHES)
    wait_until(lambda: rows() >= at(0.05), 120, "worker 1 under way")
    second = start_worker(**FAST_BATCHES)
    wait_until(lambda: second.assignments() >= 1, 120, "worker 2 joined")
    third = start_worker(**FAST_BATCHES)
    wait_until(lambda: third.assignments() >= 1, 120, "worker 3 joined")
    before = first.assignments()
    assert second.stop() == 0
    wait_until(lambda: first.assignments() > before, 120, "worker 2 left")
    assert third.stop() == 0
    drain_and_stop(first, database_url, expected, 240, "worker 1 finishing alone")
    rebalances = first.logs().count('"partitions_assigned"')
    assert rebalances >= 3, first.logs()[-2000:]  # joined, then re-balanced as others came and went
    verify(
        "rebalance",
        broker.bootstrap_servers,
        database_url,
        expected,
        workers_joined=2,
        workers_left=2,
        rebalances_seen_by_first=rebalances,
    )

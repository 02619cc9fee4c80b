"""The dead-letter guard: never on a healthy stream, always on a broken producer; and the runner commits
nothing from the tripping batch on, while it keeps its partitions."""

from __future__ import annotations

import random

from tests.unit.fakes import MemoryDeadLetters, MemorySource, MemoryStore, build_runner, event, wait_for
from tests.unit.test_runner import run_in_thread
from worker.runtime.guard import WINDOW, DeadLetterGuard


def first_trip(guard: DeadLetterGuard, outcomes: list[bool], batch: int = 64, partitions: int = 1) -> int | None:
    """The index of the event whose batch tripped the guard, or None; the events go round the partitions."""
    placed = [(i % partitions, dead) for i, dead in enumerate(outcomes)]
    for start in range(0, len(placed), batch):
        if guard.observe(placed[start : start + batch]):
            return start
    return None


def test_a_healthy_stream_with_one_percent_bad_never_trips_the_defaults() -> None:
    rng = random.Random(1)
    healthy = [rng.random() < 0.01 for _ in range(500_000)]
    assert first_trip(DeadLetterGuard(0.1, 100), healthy) is None


def test_a_broken_producer_trips_within_its_first_hundred_events() -> None:
    rng = random.Random(2)
    outcomes = [rng.random() < 0.01 for _ in range(5_000)] + [True] * 1_000  # the deploy at event 5,000
    tripped = first_trip(DeadLetterGuard(0.1, 100), outcomes)
    assert tripped is not None and 5_000 <= tripped < 5_100


def test_a_broken_producer_among_good_ones_trips_on_the_share() -> None:
    rng = random.Random(3)
    outcomes = [rng.random() < 0.01 for _ in range(3_000)] + [rng.random() < 0.3 for _ in range(3_000)]
    guard = DeadLetterGuard(0.1, 100)
    tripped = first_trip(guard, outcomes)
    assert tripped is not None and 3_000 <= tripped < 3_000 + WINDOW
    assert guard.tripped is not None and "of the last 1000 events dead-lettered (limit 10%)" in guard.tripped.reason
    assert guard.observe([(0, True)] * 10) is None  # tripped once, stays tripped


def test_a_poisoned_partition_interleaved_with_healthy_ones_trips_on_its_own_run() -> None:
    """Partition 2's producer is broken; partitions 0 and 1 are healthy and their events come in
    between (round robin, as a consumer fetches them). Counted across all partitions the run never
    passes 1; counted per partition it reaches the limit on partition 2 after 100 of its events."""
    outcomes = [i % 3 == 2 for i in range(600)]  # every third event, all of partition 2's, dead
    guard = DeadLetterGuard(1.0, 100)  # the ratio alone would never trip on a third of the events
    tripped = first_trip(guard, outcomes, partitions=3)
    assert tripped is not None and tripped <= 3 * 100
    assert guard.tripped is not None and "100 consecutive events dead-lettered on partition 2" in guard.tripped.reason
    # The same stream with the run counted across partitions (one partition) never trips.
    assert first_trip(DeadLetterGuard(1.0, 100), [(i % 3 == 2) for i in range(600)]) is None


def test_limits_of_one_and_zero_turn_the_guard_off() -> None:
    assert first_trip(DeadLetterGuard(1.0, 0), [True] * 10_000) is None


def test_the_runner_commits_nothing_from_the_tripping_batch_on_and_keeps_polling() -> None:
    good = [event(f"g-{i}", "great") for i in range(40)]
    values = {0: good + [b"not json"] * 30 + [event(f"late-{i}", "great") for i in range(20)]}
    source, store, dead = MemorySource(values), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead, guard=DeadLetterGuard(1.0, 10))
    thread, _ = run_in_thread(runner)
    wait_for(lambda: runner.guard is not None and runner.guard.tripped is not None and not runner.pipeline.in_flight)
    polls = source.polls_while_paused
    wait_for(lambda: source.polls_while_paused > polls + 2)  # still polling, paused: the group keeps its member
    runner.shutdown.request("test")
    thread.join(10)
    committed = source.committed.get(0, 0)
    assert 40 <= committed < 40 + 10  # the good events, and none of the batch that made the run reach 10
    assert source.committed == {0: committed}  # and nothing later, the shutdown's drain included
    assert runner.metrics.registry.get_sample_value("triage_dead_letter_guard_tripped") == 1

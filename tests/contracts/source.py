"""The Source contract: what the runner relies on from its input topic (see ports.Source)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import pytest

from worker.contracts.values import RawRecord
from worker.runtime.ports import Source, SourceClosed

VALUES = {p: [f"p{p}-{i}".encode() for i in range(6)] for p in range(3)}


class SourceHarness(Protocol):
    topic: str
    timeout_s: float  # how long a poll loop may take to see what it waits for

    def source(self, partitions: dict[int, list[bytes]]) -> Source:
        """A new source, not yet subscribed, over a fresh topic that holds these values."""

    def add(self, partition: int, values: list[bytes]) -> None:
        """Append values to a partition of the topic."""

    def rebalance(self) -> None:
        """Begin a reassignment of every partition of the source's topic (revoked, then assigned
        again); the caller polls the source until `settled()`."""

    def settled(self) -> bool: ...

    def committed(self) -> dict[int, int]:
        """The group's committed offsets, by partition, as another member would read them."""


def poll_until(source: Source, done: Callable[[list[RawRecord]], bool], timeout_s: float) -> list[RawRecord]:
    """Poll (the main thread's job) until `done(everything polled so far)`."""
    polled: list[RawRecord] = []
    deadline = time.monotonic() + timeout_s
    while not done(polled):
        assert time.monotonic() < deadline, f"timed out with {len(polled)} records polled"
        polled += source.poll(100, 1_000)
    return polled


def seen(records: list[RawRecord]) -> set[tuple[int, int]]:
    return {(r.partition, r.offset) for r in records}


def by_partition(records: list[RawRecord]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for record in records:
        found.setdefault(record.partition, []).append(record.offset)
    return found


def total(partitions: dict[int, list[bytes]]) -> int:
    return sum(len(values) for values in partitions.values())


class SourceContract:
    """Subclass with a `harness` fixture."""

    def test_a_member_reads_every_record_in_offset_order(self, harness: SourceHarness) -> None:
        source = harness.source(VALUES)
        source.subscribe(list)
        polled = poll_until(source, lambda got: len(got) >= total(VALUES), harness.timeout_s)
        assert {p: offsets for p, offsets in by_partition(polled).items()} == {
            p: list(range(len(v))) for p, v in VALUES.items()
        }
        assert {(r.partition, r.offset): r.value for r in polled} == {
            (p, i): value for p, values in VALUES.items() for i, value in enumerate(values)
        }
        assert all(r.topic == harness.topic for r in polled)
        source.close()

    def test_commit_answers_with_the_next_offsets_and_the_group_keeps_them(self, harness: SourceHarness) -> None:
        source = harness.source(VALUES)
        source.subscribe(list)
        polled = poll_until(source, lambda got: len(got) >= total(VALUES), harness.timeout_s)
        first = [r for r in polled if r.partition == 0 and r.offset < 3] + [r for r in polled if r.partition == 2]
        assert source.commit(first) == {f"{harness.topic}:0": 3, f"{harness.topic}:2": len(VALUES[2])}
        assert source.commit([]) == {}
        assert {p: o for p, o in harness.committed().items() if o} == {0: 3, 2: len(VALUES[2])}
        source.close()

    def test_paused_partitions_fetch_nothing_until_resumed(self, harness: SourceHarness) -> None:
        source = harness.source({0: [b"a"]})
        source.subscribe(list)
        poll_until(source, lambda got: len(got) >= 1, harness.timeout_s)
        source.pause_all()
        harness.add(0, [b"b", b"c"])
        paused_polls = [source.poll(100, 1_000) for _ in range(5)]
        assert paused_polls == [[]] * 5
        source.resume_all()
        assert [r.value for r in poll_until(source, lambda got: len(got) >= 2, harness.timeout_s)] == [b"b", b"c"]
        source.close()

    def test_partitions_assigned_by_a_rebalance_are_not_paused(self, harness: SourceHarness) -> None:
        source = harness.source(VALUES)
        source.subscribe(list)
        poll_until(source, lambda got: len(got) >= 1, harness.timeout_s)
        source.pause_all()
        harness.rebalance()
        # Nothing was committed, so every record comes again, without a resume_all.
        everything = {(p, i) for p, v in VALUES.items() for i in range(len(v))}
        again = poll_until(source, lambda got: harness.settled() and seen(got) >= everything, harness.timeout_s)
        assert seen(again) == everything
        source.close()

    def test_on_revoke_runs_off_the_main_thread_and_what_it_returns_is_committed_first(
        self, harness: SourceHarness
    ) -> None:
        source = harness.source(VALUES)
        handed_back: list[RawRecord] = []
        threads: list[str] = []
        polled: list[RawRecord] = []

        def on_revoke() -> list[RawRecord]:
            threads.append(threading.current_thread().name)
            if handed_back:  # the second revoke of the reassignment: nothing finished since
                return []
            handed_back.extend(r for r in polled if r.offset < 2)  # "finished": the first two of each partition
            return list(handed_back)

        source.subscribe(on_revoke)
        polled += poll_until(source, lambda got: len(got) >= total(VALUES), harness.timeout_s)
        harness.rebalance()
        # After the reassignment each partition is read again from its committed offset, not before it.
        rest = {(p, i) for p, v in VALUES.items() for i in range(2, len(v))}
        again = poll_until(source, lambda got: harness.settled() and seen(got) >= rest, harness.timeout_s)
        assert threads and threading.main_thread().name not in threads
        assert {p: o for p, o in harness.committed().items() if o} == {p: 2 for p in VALUES}
        assert {p: min(offsets) for p, offsets in by_partition(again).items()} == {p: 2 for p in VALUES}
        source.close()

    def test_lag_is_never_negative(self, harness: SourceHarness) -> None:
        source = harness.source(VALUES)
        source.subscribe(list)
        poll_until(source, lambda got: len(got) >= total(VALUES), harness.timeout_s)
        lag = source.lag()
        assert set(lag) <= {(harness.topic, p) for p in VALUES} and all(behind >= 0 for behind in lag.values())
        source.close()

    def test_a_closed_source_raises_source_closed(self, harness: SourceHarness) -> None:
        source = harness.source({0: [b"a"]})
        source.subscribe(list)
        source.close()
        source.close()  # a second close does nothing
        for call in (
            lambda: source.poll(10, 10),
            lambda: source.commit([]),
            source.pause_all,
            source.resume_all,
            source.lag,
            lambda: source.subscribe(list),
        ):
            with pytest.raises(SourceClosed):
                call()

"""The contract suites on the in-memory fakes: the fakes the loop's tests use keep the promises of the
ports, the same suites the real parts pass in tests/integration/test_contracts.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.contracts.dead_letters import LIMIT, DeadLettersContract
from tests.contracts.source import SourceContract
from tests.contracts.writer import WriterContract
from tests.unit.fakes import TOPIC, MemoryDeadLetters, MemorySource, MemoryStore
from worker.contracts.values import RawRecord
from worker.runtime.ports import DeadLetters, ResultWriter, Source


class MemorySourceHarness:
    topic = TOPIC
    timeout_s = 2.0

    def __init__(self) -> None:
        self.memory: MemorySource | None = None

    def source(self, partitions: dict[int, list[bytes]]) -> Source:
        self.memory = MemorySource(partitions)
        return self.memory

    def add(self, partition: int, values: list[bytes]) -> None:
        assert self.memory is not None
        records = self.memory.records[partition]
        records += [RawRecord(TOPIC, partition, len(records) + i, None, v, 1_000) for i, v in enumerate(values)]

    def rebalance(self) -> None:
        assert self.memory is not None
        self.memory.rebalanced.clear()
        self.memory.request_rebalance()

    def settled(self) -> bool:
        return self.memory is not None and self.memory.rebalanced.is_set()

    def committed(self) -> dict[int, int]:
        assert self.memory is not None
        return dict(self.memory.committed)


class MemoryStoreHarness:
    def __init__(self) -> None:
        self.store = MemoryStore()

    def writer(self) -> ResultWriter:
        return self.store

    def stored(self) -> set[str]:
        return set(self.store.rows)

    @contextmanager
    def outage(self) -> Iterator[ResultWriter]:
        self.store.outage.set()
        try:
            yield self.store
        finally:
            self.store.outage.clear()


class MemoryDeadLettersHarness:
    def __init__(self) -> None:
        self.memory = MemoryDeadLetters(max_bytes=LIMIT)

    def sink(self) -> DeadLetters:
        return self.memory

    def topic(self) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        return [(key, value, dict(headers)) for key, value, headers in self.memory.messages]

    @contextmanager
    def broker_down(self) -> Iterator[None]:
        self.memory.down.set()
        try:
            yield
        finally:
            self.memory.down.clear()


class TestMemorySource(SourceContract):
    @pytest.fixture
    def harness(self) -> MemorySourceHarness:
        return MemorySourceHarness()


class TestMemoryStore(WriterContract):
    @pytest.fixture
    def harness(self) -> MemoryStoreHarness:
        return MemoryStoreHarness()


class TestMemoryDeadLetters(DeadLettersContract):
    @pytest.fixture
    def harness(self) -> MemoryDeadLettersHarness:
        return MemoryDeadLettersHarness()


class PausedForGood(MemorySource):
    """A broken fake: its partitions stay paused across a rebalance, unlike Kafka's."""

    def poll(self, timeout_ms: int, max_records: int) -> list[RawRecord]:
        paused = self.paused
        records = super().poll(timeout_ms, max_records)
        if paused and self.rebalanced.is_set() and not self.paused:
            self.paused = True  # the promise broken: a reassigned partition is still paused
            return []
        return records


def test_a_fake_that_breaks_a_promise_fails_its_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = MemorySourceHarness()
    monkeypatch.setattr("tests.unit.test_contracts.MemorySource", PausedForGood)
    with pytest.raises(AssertionError, match="timed out"):
        SourceContract().test_partitions_assigned_by_a_rebalance_are_not_paused(harness)

"""Ports: what the loop needs from the outside world, and what each part promises in return.

    Source        where records come from and where their offsets go back   (kafka/consumer.py: KafkaSource)
    ResultWriter  one transaction per batch: results and outbox rows        (postgres/store.py: ResultStore)
    DeadLetters   rejected records to the dead-letter topic                 (kafka/deadletter.py: DeadLetterSink)
    Outbox        the relay's pending rows, claimed and marked               (postgres/outbox.py: OutboxTable)
    Publisher     the relay's messages to their topics                      (kafka/publisher.py: KafkaPublisher)
    Observer      what the loop reports as it goes                          (service/metrics.py: Metrics)

The loop (runner, stages) sees only these protocols; wiring plugs in the real parts, the tests plug
in in-memory fakes (tests/unit/fakes.py). One contract suite per port (tests/contracts/) runs on the
fake in the unit tests and on the real part, against Tansu and PostgreSQL, in the integration tests,
so a fake that passes it keeps the promises written here and may stand in for the real part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from worker.contracts.values import ClassifiedItem, RawRecord, Rejection, StoreOutcome
from worker.runtime.background import RoundReport
from worker.runtime.batches import BatchReport, StageName

OnRevoke = Callable[[], list[RawRecord]]
T = TypeVar("T")


class UnreadableBatch(Exception):
    """A batch on the input topic that the client cannot read; `where` is topic:partition@offset."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"unreadable record batch at {where}: {reason}")
        self.where = where
        self.reason = reason


class SourceClosed(Exception):
    """A call on a source after `close()`."""


class Source(Protocol):
    """The input topic, read by one member of a consumer group. Every method but `on_revoke`'s call
    runs on the runner's main thread; the source is not thread-safe."""

    def subscribe(self, on_revoke: OnRevoke) -> None:
        """Join the group; returns at once (the assignment comes with later polls).

        Before a rebalance takes partitions away, the source calls `on_revoke()` on a thread of its
        own (kafka-python's network thread), while the main thread waits inside `poll`. The records it
        returns are committed, per partition the offset after the highest, before the group moves
        on. After the rebalance, each partition is read again from its committed offset."""

    def poll(self, timeout_ms: int, max_records: int) -> list[RawRecord]:
        """Up to `max_records` records, in offset order within each partition; blocks up to
        `timeout_ms` while none is there, and returns [] while every partition is paused. A
        rebalance, and the `on_revoke` call before it, happens inside a poll; partitions assigned
        by it are not paused, whatever was paused before. Raises UnreadableBatch for a batch the
        client cannot read (after returning the records before it), SourceClosed after `close`."""

    def commit(self, records: Iterable[RawRecord]) -> dict[str, int]:
        """Commit, per partition, the offset after the highest of `records`; blocks until the group
        answers. Returns what was committed as {"topic:partition": next offset}: {} for no records,
        and {} when the group refused (it moved on in a rebalance: the records will be delivered
        again, and the idempotent store drops the repeats). Raises SourceClosed after `close`."""

    def pause_all(self) -> None:
        """Stop fetching from every assigned partition; polls go on returning [] and keep the
        membership. Raises SourceClosed after `close`."""

    def resume_all(self) -> None:
        """Fetch again from every paused partition. Raises SourceClosed after `close`."""

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition polled from so far, records between the last one polled and the end
        of the partition (never negative); sends no request. Raises SourceClosed after `close`."""

    def close(self) -> None:
        """Leave the group, committing nothing more; waits a few seconds at most. A second call does
        nothing."""


class ResultWriter(Protocol):
    """The results of one batch and their outbox rows, written in one transaction (called on the
    store stage's thread)."""

    def write(self, results: Sequence[ClassifiedItem]) -> StoreOutcome:
        """Store what is new, atomically, and say what happened; blocks for the transaction.

        Idempotent on event id: an id stored before (a replay) or earlier in the same batch is not
        stored again and comes back in `duplicates`. Escalated and audit items get an outbox row each,
        counted in `escalations` and `audits`. A record whose values the database refuses comes back
        in `refused` (for the dead-letter topic) and the rest is stored. Raises retry.Unavailable
        while the database cannot take writes (the same call may succeed later), and an
        OperatorError for a problem a retry cannot fix (the schema, the privileges)."""


class DeadLetters(Protocol):
    """The dead-letter topic (called on the store stage's thread)."""

    def send(self, rejections: Iterable[Rejection]) -> None:
        """Hand each rejected record, with its original key, value and headers, and the reason, to the
        producer; does not wait for the broker and never raises for a broker that is down."""

    def flush(self) -> list[Rejection]:
        """Wait (a bounded time) for the broker to acknowledge everything sent; returns the rejections
        it did not acknowledge, to be sent again. A dead letter too large for the topic is sent
        again without its value. Raises an OperatorError when the broker will never take dead
        letters (an ACL)."""


@dataclass(frozen=True)
class OutboxRow:
    """One pending outbox row: its payload is the message's value, as the store wrote it."""

    id: int
    event_id: str
    payload: str
    headers: dict[str, str] | None  # the input headers kept for it (TRIAGE_PASSTHROUGH_HEADERS)
    source_time: datetime | None  # its event's Kafka timestamp


class Claim(Protocol):
    """Pending rows locked for one round; marks land when the claim's block ends without an error."""

    rows: list[OutboxRow]

    def published(self, ids: Sequence[int], at: datetime) -> None: ...

    def failed(self, ids: Sequence[int], error: str | None) -> None: ...

    def parked(self, reasons: Mapping[int, str], at: datetime) -> None:
        """Set rows aside for good, each with its reason: no claim returns them again."""


class Outbox(Protocol):
    """The outbox table (called on the relay's thread)."""

    def claim(self, kind: str, topic: str, limit: int) -> AbstractContextManager[Claim]:
        """Up to `limit` of the oldest pending rows of `kind` for `topic` (rows that name no topic
        too; never a parked row), locked against other relays until the block ends. Raises retry.Unavailable when the
        database cannot be reached, naming no statement parameter."""


@dataclass(frozen=True)
class Message(Generic[T]):
    ref: T  # what the caller knows the message by (an outbox row's id)
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Published(Generic[T]):
    delivered: list[T]
    undelivered: list[T]  # to try again
    last_error: str | None
    refused: list[tuple[T, str]] = field(default_factory=list)  # for good (too large, invalid), with the reason


class Publisher(Protocol):
    """Messages to a topic (called on the relay's thread)."""

    def publish(self, topic: str, messages: Sequence[Message[Any]]) -> Published[Any]:
        """Send every message and wait a bounded time for the broker; returns which it acknowledged,
        which not (with the last error), and which it will never take (with its reason). Never raises
        for a broker that is down."""


class Observer(Protocol):
    """The loop's figures as they happen (batch reports, background rounds, occupancy, lag). Called on
    the main thread, and on a background loop's thread for `observe_round`; never blocks."""

    def observe(self, report: BatchReport) -> None: ...

    def observe_round(self, report: RoundReport) -> None: ...

    def observe_busy(self, stage: StageName, seconds: float) -> None:
        """Busy time outside any batch's report (polling)."""

    def set_in_flight(self, batches: int) -> None: ...

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None: ...

    def set_guard_tripped(self) -> None: ...

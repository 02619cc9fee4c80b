"""Source: where records come from and where their offsets go back. `Source` is what the runner
needs; `KafkaSource` is the real one, over a kafka-python consumer (tests use an in-memory one).

Auto-commit is off. The worker calls `commit(records)` only after those records are stored
(or dead-lettered); the committed offset of each partition is the highest processed offset + 1.
Because every batch holds everything polled before it, the committed prefix is always whole.
On a rebalance, `on_revoke` runs before partitions are taken away: the worker finishes the
batches it holds and hands back their records, whose offsets are committed before the group
moves on. kafka-python 3 runs the listener on its network thread, where the blocking `commit`
is refused, so the listener is async and awaits the commit instead. While the worker's
pipeline is full (a slow stage, or a dependency down) it pauses every partition and keeps
polling: it stays in the group without fetching more.

A batch the client cannot read (its CRC does not match, its codec is unknown, or a record's
header key is not UTF-8, which kafka-python reports as a CorruptRecordError after handing back the
records before it) raises `UnreadableBatch`, naming the topic, partition and offset where
kafka-python says them. Nothing is skipped: the worker stops with a clear error instead of a
crash loop of tracebacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, CorruptRecordError, KafkaError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from worker.contracts.values import RawRecord
from worker.logs import get_logger

log = get_logger("worker.source")

COMMIT_TIMEOUT_MS = 10_000
CLOSE_TIMEOUT_MS = 5_000


def next_offsets(records: Iterable[RawRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Per partition, the offset after the highest record: what a commit of `records` stores."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}


def _describe(offsets: dict[TopicPartition, OffsetAndMetadata]) -> dict[str, int]:
    return {f"{tp.topic}:{tp.partition}": meta.offset for tp, meta in offsets.items()}


class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer, on_revoke: OnRevoke) -> None:
        self.consumer = consumer
        self.on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))
        if not revoked:
            return
        offsets = next_offsets(self.on_revoke())
        if not offsets:
            return
        try:
            await self.consumer.commit_async(offsets)
        except KafkaError as exc:
            log.warning("offset_commit_failed", error=f"{type(exc).__name__}: {exc}", during="rebalance")
            return
        log.info("offsets_committed_on_revoke", committed=_describe(offsets))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


OnRevoke = Callable[[], list[RawRecord]]
# kafka-python names the place of a corrupt batch only in its message, e.g. "Record batch for
# partition TopicPartition(topic='t', partition=0) at offset 42 failed crc check".
_CORRUPT_AT = re.compile(
    r"TopicPartition\(topic='(?P<topic>[^']*)', partition=(?P<partition>\d+)\) at offset (?P<offset>\d+)"
)


class UnreadableBatch(Exception):
    """A batch on the input topic that the client cannot read; `where` is topic:partition@offset."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"unreadable record batch at {where}: {reason}")
        self.where = where
        self.reason = reason


class Source(Protocol):
    def subscribe(self, on_revoke: OnRevoke) -> None:
        """Start consuming; before partitions are taken away, `on_revoke()` returns the records
        finished meanwhile, whose offsets the source commits before the group moves on."""

    def poll(self, timeout_ms: int, max_records: int) -> list[RawRecord]: ...

    def commit(self, records: Iterable[RawRecord]) -> dict[str, int]:
        """Commit, per partition, the offset after the highest of `records`; returns what was committed."""

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    def lag(self) -> dict[tuple[str, int], int]: ...

    def close(self) -> None: ...


class KafkaSource:
    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self._next_offsets: dict[TopicPartition, int] = {}  # after the last record polled, for lag

    def subscribe(self, on_revoke: OnRevoke) -> None:
        self.consumer.subscribe([self.topic], listener=_Rebalance(self.consumer, on_revoke))

    def poll(self, timeout_ms: int, max_records: int) -> list[RawRecord]:
        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max(max_records, 1))
        except (CorruptRecordError, UnsupportedCodecError) as exc:
            raise UnreadableBatch(self._where(exc), f"{type(exc).__name__}: {exc}") from exc
        records = []
        for tp, messages in polled.items():
            if messages:
                self._next_offsets[tp] = messages[-1].offset + 1
            for m in messages:
                records.append(
                    RawRecord(
                        topic=m.topic,
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key,
                        value=m.value,
                        timestamp_ms=m.timestamp,
                        headers=tuple((k, v) for k, v in (m.headers or [])),
                    )
                )
        return records

    def commit(self, records: Iterable[RawRecord]) -> dict[str, int]:
        """Commit, per partition, the offset after the highest processed record.

        A failed commit (the group moved on during a rebalance) is logged, not raised: the
        records will be delivered again and the idempotent store drops the repeats.
        """
        offsets = next_offsets(records)
        if not offsets:
            return {}
        try:
            self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offset_commit_failed", error=f"{type(exc).__name__}: {exc}")
            return {}
        return _describe(offsets)

    def _where(self, exc: Exception) -> str:
        found = _CORRUPT_AT.search(str(exc))
        if found:
            return f"{found['topic']}:{found['partition']}@{found['offset']}"
        # No place in the message (a codec error): the batch starts at the position of one of these.
        positions = {f"{tp.topic}:{tp.partition}@{self.consumer.position(tp)}" for tp in self.consumer.assignment()}
        return "one of " + ", ".join(sorted(positions))

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition, records between the last one polled and the high watermark.

        The watermark comes with every fetch response, so this sends no request; partitions not
        polled from yet are left out. (Tansu reports watermarks loosely; Apache Kafka exactly.)
        """
        lag = {}
        for tp in self.consumer.assignment():
            highwater, polled = self.consumer.highwater(tp), self._next_offsets.get(tp)
            if highwater is not None and polled is not None:
                lag[(tp.topic, tp.partition)] = max(highwater - polled, 0)
        return lag

    def pause_all(self) -> None:
        """Stop fetching (while a dependency is down) but keep polling, so the group keeps us."""
        self.consumer.pause(*self.consumer.assignment())

    def resume_all(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def close(self) -> None:
        """Leave the group (no auto-commit: only stored work was committed), waiting at most CLOSE_TIMEOUT_MS."""
        self.consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)

"""Consumer: `KafkaSource`, the runner's Source (see ports) over a kafka-python consumer.

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
from collections.abc import Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, CorruptRecordError, KafkaError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from worker.contracts.values import RawRecord
from worker.logs import get_logger
from worker.runtime.ports import OnRevoke, SourceClosed, UnreadableBatch

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
    def __init__(self, consumer: KafkaConsumer, on_revoke: OnRevoke, assigned: set[TopicPartition]) -> None:
        self.consumer = consumer
        self.on_revoke = on_revoke
        self.assigned = assigned  # partitions assigned since the source last looked: rewound in poll

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
        # kafka-python keeps a partition paused when a rebalance hands it back to the same member; the
        # Source promises that an assignment starts unpaused (the runner pauses again when it must).
        self.consumer.resume(*assigned)
        self.assigned.update(assigned)
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


# kafka-python names the place of a corrupt batch only in its message, e.g. "Record batch for
# partition TopicPartition(topic='t', partition=0) at offset 42 failed crc check".
_CORRUPT_AT = re.compile(
    r"TopicPartition\(topic='(?P<topic>[^']*)', partition=(?P<partition>\d+)\) at offset (?P<offset>\d+)"
)


class KafkaSource:
    """A Source (see ports) over one kafka-python consumer, which must have auto-commit off."""

    def __init__(self, consumer: KafkaConsumer, topic: str, offset_reset: str = "earliest") -> None:
        self.consumer = consumer
        self.topic = topic
        self.offset_reset = offset_reset  # where a partition with no committed offset starts (the consumer's own)
        self._next_offsets: dict[TopicPartition, int] = {}  # after the last record polled, for lag
        self._assigned: set[TopicPartition] = set()  # filled by the rebalance listener
        self._closed = False

    def subscribe(self, on_revoke: OnRevoke) -> None:
        self._check_open()
        self.consumer.subscribe([self.topic], listener=_Rebalance(self.consumer, on_revoke, self._assigned))

    def poll(self, timeout_ms: int, max_records: int) -> list[RawRecord]:
        self._check_open()
        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max(max_records, 1))
        except (CorruptRecordError, UnsupportedCodecError) as exc:
            raise UnreadableBatch(self._where(exc), f"{type(exc).__name__}: {exc}") from exc
        if self._assigned:
            polled = self._rewind(polled)
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

    def _rewind(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Read every newly assigned partition again from its committed offset.

        kafka-python 3 keeps the fetch position of a partition that a rebalance hands back to the
        same member, so the records of batches the runner abandoned at the revoke (never committed)
        would not come again, and a later batch's commit would pass over them. Seeking each assigned
        partition to its committed offset replays them, as a new owner would (the store drops what
        was stored after all); records this poll returned from those partitions come again."""
        rewound = set()
        while self._assigned:  # emptied one by one: the listener may add to it from its own thread
            rewound.add(self._assigned.pop())
        assigned = set(self.consumer.assignment())
        for tp in rewound & assigned:
            committed = self.consumer.committed(tp)
            if committed is not None:
                self.consumer.seek(tp, committed)
            elif self.offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
            self._next_offsets.pop(tp, None)
        return {tp: messages for tp, messages in polled.items() if tp not in rewound}

    def commit(self, records: Iterable[RawRecord]) -> dict[str, int]:
        """Commit, per partition, the offset after the highest processed record.

        A failed commit (the group moved on during a rebalance) is logged, not raised: the
        records will be delivered again and the idempotent store drops the repeats.
        """
        self._check_open()
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
        self._check_open()
        lag = {}
        for tp in self.consumer.assignment():
            highwater, polled = self.consumer.highwater(tp), self._next_offsets.get(tp)
            if highwater is not None and polled is not None:
                lag[(tp.topic, tp.partition)] = max(highwater - polled, 0)
        return lag

    def pause_all(self) -> None:
        """Stop fetching (while a dependency is down) but keep polling, so the group keeps us."""
        self._check_open()
        self.consumer.pause(*self.consumer.assignment())

    def resume_all(self) -> None:
        self._check_open()
        self.consumer.resume(*self.consumer.paused())

    def close(self) -> None:
        """Leave the group (no auto-commit: only stored work was committed), waiting at most CLOSE_TIMEOUT_MS."""
        if not self._closed:
            self._closed = True
            self.consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)

    def _check_open(self) -> None:
        if self._closed:
            raise SourceClosed(f"the consumer of {self.topic} is closed")

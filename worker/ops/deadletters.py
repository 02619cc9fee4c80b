"""Dead letters: what is on the dead-letter topic, and putting fixed ones back (`triage-worker deadletters`).

`stats [--since 24h]` counts the dead letters by error class and by where they came from (source
topic and partition). `replay --error-class C [--since T] [--dry-run]` sends the dead letters of
that class back to the topic they came from, as they were (key, value and the original headers),
with `triage.replay.count` one higher. A record replayed `--max-replays` times (3) already is
refused rather than sent round again, so a record that can never be stored cannot circle forever.
Fix what made them fail first (the producer, a setting, the database): a replayed event that
fails again is dead-lettered again, with its count. The worker's store is idempotent on event
ids, so replaying an event that was stored after all stores nothing twice.

The topic is read from its start (or from the first record at `--since`, by timestamp) to its end
as the broker reports it, with no consumer group, so reading it commits nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from kafka import TopicPartition

from worker.contracts.errors import OperatorError
from worker.contracts.wire import ORIGIN_HEADER
from worker.runtime.kafka.deadletter import OURS, REPLAY_COUNT
from worker.runtime.wiring import build_producer, build_reader
from worker.settings import Settings

QUIET_S = 2.0  # stop reading after this long without a record, whatever the end offsets say
DEFAULT_MAX_REPLAYS = 3


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        """Our header's value (the last one of that name: a producer's copy cannot shadow ours)."""
        found = [value for key, value in self.headers if key == name]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def error_class(self) -> str:
        return self.header("triage.error.class") or "unknown"

    @property
    def source(self) -> str:
        return f"{self.header('triage.source.topic') or '?'}:{self.header('triage.source.partition') or '?'}"

    @property
    def replays(self) -> int:
        count = self.header(REPLAY_COUNT)
        return int(count) if count and count.isdigit() else 0

    @property
    def origin(self) -> str:
        """Where the record was first consumed, topic:partition:offset: what a replay keys it by. A
        dead letter of a replayed copy carries it in `triage.origin`; a first one is its source."""
        return self.header(ORIGIN_HEADER) or ":".join(
            self.header(name) or "?"
            for name in ("triage.source.topic", "triage.source.partition", "triage.source.offset")
        )


@dataclass
class Stats:
    total: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None


@dataclass
class Replayed:
    sent: int = 0
    too_often: int = 0  # replayed max_replays times already: refused
    without_value: int = 0  # sent to the dead-letter topic without its value (too large): cannot be replayed
    topics: Counter[str] = field(default_factory=Counter)


def read(settings: Settings, since: timedelta | None = None, wait_s: float = 5.0) -> Iterator[DeadLetter]:
    """Every dead letter on the topic (since a time), without a group. A broker that cannot be reached
    is said in one line within `wait_s` (see cli.common.explain); a topic it does not have, too."""
    consumer = build_reader(settings, wait_ms=int(wait_s * 1000))
    try:
        topic = settings.dead_letter_topic
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise OperatorError(f"the dead-letter topic {topic} does not exist (or this client may not describe it)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        start_ms = int((datetime.now(timezone.utc) - since).timestamp() * 1000) if since else None
        end = consumer.end_offsets(assigned)
        last_record = time.monotonic()
        while any(consumer.position(tp) < end[tp] for tp in assigned) and time.monotonic() - last_record < QUIET_S:
            for records in consumer.poll(timeout_ms=200).values():
                last_record = time.monotonic()
                for record in records:
                    if start_ms is None or record.timestamp >= start_ms:
                        yield DeadLetter(
                            record.partition,
                            record.offset,
                            record.timestamp,
                            record.key,
                            record.value,
                            [(k, v) for k, v in (record.headers or [])],
                        )
    finally:
        consumer.close(autocommit=False)


def stats(letters: Iterator[DeadLetter]) -> Stats:
    found = Stats()
    for letter in letters:
        found.total += 1
        found.by_class[letter.error_class] += 1
        found.by_source[letter.source] += 1
        found.first_ms = letter.timestamp_ms if found.first_ms is None else min(found.first_ms, letter.timestamp_ms)
        found.last_ms = letter.timestamp_ms if found.last_ms is None else max(found.last_ms, letter.timestamp_ms)
    return found


def replay(
    settings: Settings,
    letters: Iterator[DeadLetter],
    error_class: str,
    *,
    dry_run: bool = False,
    max_replays: int = DEFAULT_MAX_REPLAYS,
) -> Replayed:
    """Send each record of `error_class` back once, however many dead letters it left (one per failed
    try): keyed by where it was first consumed, with that place in `triage.origin`, so decode gives an
    event without an id the same derived id every time (see decode.derived_event_id) and any number
    of replays stores one row. A record already replayed `max_replays` times (its highest count over
    its dead letters) is refused."""
    outcome = Replayed()
    latest: dict[str, DeadLetter] = {}
    tries: dict[str, int] = {}
    for letter in letters:
        if letter.error_class == error_class:
            latest[letter.origin] = letter
            tries[letter.origin] = max(tries.get(letter.origin, 0), letter.replays)
    producer = None if dry_run else build_producer(settings)
    try:
        for origin, letter in latest.items():
            if tries[origin] >= max_replays:
                outcome.too_often += 1
                continue
            if letter.value is None or letter.header("triage.value.omitted_bytes"):
                outcome.without_value += 1
                continue
            topic = letter.header("triage.source.topic") or settings.input_topic
            outcome.topics[topic] += 1
            outcome.sent += 1
            if producer is not None:
                headers = [(k, v) for k, v in letter.headers if not k.startswith(OURS)]
                headers += [(REPLAY_COUNT, str(tries[origin] + 1).encode()), (ORIGIN_HEADER, origin.encode())]
                producer.send(topic, key=letter.key, value=letter.value, headers=headers)
        if producer is not None:
            producer.flush(timeout=60)
    finally:
        if producer is not None:
            producer.close(timeout=10)
    return outcome


def render_stats(found: Stats, window: str) -> str:
    if not found.total:
        return f"no dead letters {window}"
    since = datetime.fromtimestamp((found.first_ms or 0) / 1000, timezone.utc).isoformat(timespec="seconds")
    until = datetime.fromtimestamp((found.last_ms or 0) / 1000, timezone.utc).isoformat(timespec="seconds")
    lines = [f"{found.total:,} dead letters {window} ({since} to {until})", "", f"{'error class':28}{'count':>9}"]
    lines += [f"{name:28}{count:>9,}" for name, count in found.by_class.most_common()]
    lines += ["", f"{'from topic:partition':28}{'count':>9}"]
    lines += [f"{name:28}{count:>9,}" for name, count in found.by_source.most_common()]
    return "\n".join(lines)


def render_replay(outcome: Replayed, error_class: str, dry_run: bool, max_replays: int) -> str:
    verb = "would send" if dry_run else "sent"
    lines = [
        f"{verb} {outcome.sent:,} dead letters of class {error_class} back: "
        + (", ".join(f"{count:,} to {topic}" for topic, count in outcome.topics.items()) or "none")
    ]
    if outcome.too_often:
        lines.append(f"refused {outcome.too_often:,} already replayed {max_replays} times (--max-replays)")
    if outcome.without_value:
        lines.append(f"left {outcome.without_value:,} sent without their value (too large): see their source offsets")
    return "\n".join(lines)

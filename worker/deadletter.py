"""Dead letters: publish rejected records to the dead-letter topic, unchanged, with the reason.

Key and value are the original bytes. Headers (see schemas/dead-letter.v1.json) carry the
error class, a readable message and the record's source topic, partition and offset.
`flush()` waits for the broker's acknowledgement; offsets are committed only after it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from worker.records import Rejection


class DeadLetterError(RuntimeError):
    """A dead letter could not be delivered; the offsets behind it must not be committed."""


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    record = rejection.record
    return [
        ("triage.error.class", rejection.error_class.encode()),
        ("triage.error.message", rejection.message.encode("utf-8", "replace")[:2000]),
        ("triage.source.topic", record.topic.encode()),
        ("triage.source.partition", str(record.partition).encode()),
        ("triage.source.offset", str(record.offset).encode()),
        ("triage.failed_at", datetime.now(timezone.utc).isoformat().encode()),
    ]


class DeadLetterSink:
    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self._in_flight: list[FutureRecordMetadata] = []

    def send(self, rejections: Iterable[Rejection]) -> None:
        for rejection in rejections:
            self._in_flight.append(
                self.producer.send(
                    self.topic,
                    key=rejection.record.key,
                    value=rejection.record.value,
                    headers=dead_letter_headers(rejection),
                )
            )

    def flush(self) -> int:
        """Wait until every dead letter sent so far is acknowledged; returns how many."""
        futures, self._in_flight = self._in_flight, []
        if not futures:
            return 0
        self.producer.flush(timeout=self.timeout_s)
        for future in futures:
            try:
                future.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - any delivery failure blocks the commit
                raise DeadLetterError(f"dead letter not delivered to {self.topic}: {exc}") from exc
        return len(futures)

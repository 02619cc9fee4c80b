"""Dead letters: publish rejected records to the dead-letter topic, unchanged, with the reason.

Key and value are the original bytes (a value too large for any producer request, over 32 MiB,
is left out and its size given in `triage.value.omitted_bytes`). Headers (see schemas/dead-letter.v1.json) carry the
error class, a readable message and the record's source topic, partition and offset.
`flush()` waits for the broker's acknowledgements and hands back what was not delivered, so the
caller can send it again; offsets are committed only once every dead letter is acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from worker.contracts.values import Rejection
from worker.runtime.delivery import await_delivery


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
    def __init__(
        self, producer: KafkaProducer, topic: str, *, timeout_s: float = 30.0, max_value_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.producer = producer
        self.max_value_bytes = max_value_bytes
        self.topic = topic
        self.timeout_s = timeout_s
        self._in_flight: list[tuple[Rejection, FutureRecordMetadata | None]] = []

    def send(self, rejections: Iterable[Rejection]) -> None:
        for rejection in rejections:
            value, headers = rejection.record.value, dead_letter_headers(rejection)
            if value is not None and len(value) > self.max_value_bytes:
                # Larger than any request we may send: keep the record's place and size, not its bytes.
                headers.append(("triage.value.omitted_bytes", str(len(value)).encode()))
                value = None
            try:
                future = self.producer.send(self.topic, key=rejection.record.key, value=value, headers=headers)
            except KafkaError:  # no metadata / buffer full while the broker is away: retried by flush's caller
                future = None
            self._in_flight.append((rejection, future))

    def flush(self) -> list[Rejection]:
        """Wait for the broker's acknowledgements; returns the rejections that were not delivered."""
        in_flight, self._in_flight = self._in_flight, []
        return await_delivery(self.producer, in_flight, self.timeout_s)[1]

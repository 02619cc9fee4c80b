"""Dead letters: publish rejected records to the dead-letter topic, unchanged, with the reason.

Key and value are the original bytes (a value too large for any producer request, over 32 MiB,
is left out and its size given in `triage.value.omitted_bytes`). The original headers come first,
so a replay (`triage-worker deadletters replay`) can send the record as it was; then ours (see
schemas/dead-letter.v1.json): the error class, a readable message and the record's source topic,
partition and offset.
`flush()` waits for the broker's acknowledgements and hands back what was not delivered, so the
caller can send it again; offsets are committed only once every dead letter is acknowledged.

What the broker refuses for good is not retried forever. A dead letter too large for the topic
(its `max.message.bytes`, or the broker's) is sent again without its value, with
`triage.value.omitted_bytes` (the original stays on the input topic, at the offset the headers
name). A dead-letter topic the worker may not write to (an ACL) raises `DeadLetterTopicRefused`:
the worker stops with one line, since no retry can fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from worker.contracts.errors import OperatorError
from worker.contracts.values import Rejection
from worker.runtime.kafka.delivery import outcomes

OURS = "triage."  # the prefix of the headers the worker writes
REPLAY_COUNT = "triage.replay.count"  # how many times `deadletters replay` has sent the record back
TOO_LARGE = {10, 18}  # MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE
NOT_ALLOWED = {29, 31}  # TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED


class DeadLetterTopicRefused(OperatorError):
    """The broker will never take our dead letters (an ACL): the worker stops, naming the topic."""


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    record = rejection.record
    return [
        *((name, value) for name, value in record.headers if not name.startswith(OURS)),
        *((name, value) for name, value in record.headers if name == REPLAY_COUNT),  # kept, so loops stop
        ("triage.error.class", rejection.error_class.encode()),
        ("triage.error.message", rejection.message.encode("utf-8", "replace")[:2000]),
        ("triage.source.topic", record.topic.encode()),
        ("triage.source.partition", str(record.partition).encode()),
        ("triage.source.offset", str(record.offset).encode()),
        ("triage.failed_at", datetime.now(timezone.utc).isoformat().encode()),
        *((name, value.encode("utf-8", "replace")[:2000]) for name, value in rejection.extra_headers),
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

    def send(self, rejections: Iterable[Rejection], *, without_value: bool = False) -> None:
        for rejection in rejections:
            value, headers = rejection.record.value, dead_letter_headers(rejection)
            if value is not None and (without_value or len(value) > self.max_value_bytes):
                # Larger than the broker takes: keep the record's place and size, not its bytes.
                headers.append(("triage.value.omitted_bytes", str(len(value)).encode()))
                value = None
            try:
                future = self.producer.send(self.topic, key=rejection.record.key, value=value, headers=headers)
            except KafkaError as exc:  # no metadata / buffer full while the broker is away: retried by flush's caller
                if getattr(exc, "errno", None) in TOO_LARGE and value is not None:
                    self.send([rejection], without_value=True)
                    continue
                future = None
            self._in_flight.append((rejection, future))

    def flush(self) -> list[Rejection]:
        """Wait for the broker's acknowledgements; returns the rejections that were not delivered."""
        undelivered: list[Rejection] = []
        stripped: set[int] = set()  # sent again without the value: too large once more means undeliverable
        while self._in_flight:
            in_flight, self._in_flight = self._in_flight, []
            for rejection, delivered, refusal in outcomes(self.producer, in_flight, self.timeout_s):
                if delivered:
                    continue
                errno = getattr(refusal, "errno", None)
                if errno in NOT_ALLOWED:
                    raise DeadLetterTopicRefused(
                        f"the broker refuses dead letters on {self.topic}: {type(refusal).__name__}; "
                        "grant the worker's principal Write on it (see worker/docs/faults.md)"
                    )
                if errno in TOO_LARGE and id(rejection) not in stripped:
                    stripped.add(id(rejection))
                    self.send([rejection], without_value=True)  # goes round this loop once more
                    continue
                undelivered.append(rejection)
        return undelivered

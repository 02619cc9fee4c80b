"""Dead letters: publish rejected records to the dead-letter topic, unchanged, with the reason.

Key and value are the original bytes. The original headers come first, so a replay (`triage-worker
deadletters replay`) can send the record as it was; then ours (see schemas/dead-letter.v1.json): the
error class, a readable message and the record's source topic, partition and offset.
`flush()` waits for the broker's acknowledgements and hands back what was not delivered, so the
caller can send it again; offsets are committed only once every dead letter is acknowledged.

What the broker refuses for good is never retried as an outage. A dead letter too large for the topic
(TRIAGE_KAFKA_MAX_MESSAGE_BYTES, checked before it is sent, or the broker's own limit, as it
answers) is reduced one step at a time until it fits (FORMS):
1. `whole`: as above;
2. `without_value`: the value left out, its size in `triage.value.omitted_bytes`;
3. `without_their_headers`: the record's own headers left out too, their count in
   `triage.headers.omitted` (ours stay);
4. `minimal`: no key, no value, and only the error class and the source topic, partition and offset.
The original stays on the input topic at the offset the headers name. Each reduction is counted
(`on_reduced`, the `triage_dead_letters_reduced_total{form}` metric) and logged without the bytes. A
dead-letter topic the worker may not write to (an ACL) raises `DeadLetterTopicRefused`: the worker
stops with one line, since no retry can fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from worker.contracts.errors import OperatorError
from worker.contracts.values import Rejection
from worker.contracts.wire import ORIGIN_HEADER, SCHEMA_HEADER, DeadLetterHeaders, message_bytes, version_of
from worker.logs import get_logger
from worker.runtime.kafka.delivery import TOO_LARGE, outcomes

log = get_logger("worker.deadletter")

OURS = "triage."  # the prefix of the headers the worker writes
REPLAY_COUNT = "triage.replay.count"  # how many times `deadletters replay` has sent the record back
KEPT = (REPLAY_COUNT, ORIGIN_HEADER)  # ours that a record may carry and its dead letter keeps, so replays add up
NOT_ALLOWED = {29, 31}  # TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED
FORMS = ("whole", "without_value", "without_their_headers", "minimal")
MINIMAL = (
    "triage.error.class",
    "triage.source.topic",
    "triage.source.partition",
    "triage.source.offset",
    SCHEMA_HEADER,
)
SCHEMA = version_of(DeadLetterHeaders).encode()
Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class DeadLetterTopicRefused(OperatorError):
    """The broker will never take our dead letters (an ACL): the worker stops, naming the topic."""


def their_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    """The record's own headers (ours it may carry are dropped, but the replay count and origin)."""
    headers = rejection.record.headers
    return [
        *((name, value) for name, value in headers if not name.startswith(OURS)),
        *((name, value) for name, value in headers if name in KEPT),
    ]


def our_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    record = rejection.record
    return [
        ("triage.error.class", rejection.error_class.encode()),
        ("triage.error.message", rejection.message.encode("utf-8", "replace")[:2000]),
        ("triage.source.topic", record.topic.encode()),
        ("triage.source.partition", str(record.partition).encode()),
        ("triage.source.offset", str(record.offset).encode()),
        ("triage.failed_at", datetime.now(timezone.utc).isoformat().encode()),
        *((name, value.encode("utf-8", "replace")[:2000]) for name, value in rejection.extra_headers),
        (SCHEMA_HEADER, SCHEMA),
    ]


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    """The headers of a whole dead letter: the record's own first, then ours."""
    return [*their_headers(rejection), *our_headers(rejection)]


def dead_letter(rejection: Rejection, form: str) -> Message:
    """The dead letter of `rejection` in one of FORMS: (key, value, headers)."""
    record = rejection.record
    if form == "minimal":
        ours = dict(our_headers(rejection))
        return None, None, [*((name, ours[name]) for name in MINIMAL), ("triage.reduced", b"minimal")]
    value, headers = record.value, dead_letter_headers(rejection)
    if form != "whole" and value is not None:
        headers.append(("triage.value.omitted_bytes", str(len(value)).encode()))
        value = None
    if form == "without_their_headers":
        theirs = their_headers(rejection)
        headers = [h for h in headers if h not in theirs] + [("triage.headers.omitted", str(len(theirs)).encode())]
    return record.key, value, headers


class DeadLetterSink:
    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        *,
        timeout_s: float = 30.0,
        max_message_bytes: int = 1_048_576,
        on_reduced: Callable[[str], None] = lambda form: None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes  # the topic's limit (TRIAGE_KAFKA_MAX_MESSAGE_BYTES)
        self.on_reduced = on_reduced
        self._in_flight: list[tuple[tuple[Rejection, int], FutureRecordMetadata | None]] = []

    def send(self, rejections: Iterable[Rejection]) -> None:
        for rejection in rejections:
            self._send(rejection, 0)

    def _send(self, rejection: Rejection, form: int) -> None:
        """Send `rejection` in FORMS[form], or the first smaller form that fits the limit."""
        key, value, headers = dead_letter(rejection, FORMS[form])
        while message_bytes(key, value, headers) > self.max_message_bytes and form + 1 < len(FORMS):
            form += 1
            key, value, headers = dead_letter(rejection, FORMS[form])
        if message_bytes(key, value, headers) > self.max_message_bytes:
            self._reduced(rejection, "dropped")  # not even its place fits: counted, never retried
            return
        try:
            future = self.producer.send(self.topic, key=key, value=value, headers=headers)
        except KafkaError as exc:  # no metadata / buffer full while the broker is away: retried by flush's caller
            if getattr(exc, "errno", None) in TOO_LARGE:  # the producer's own limit, which is the broker's
                if form + 1 < len(FORMS):
                    self._send(rejection, form + 1)
                else:
                    self._reduced(rejection, "dropped")
                return
            future = None
        self._in_flight.append(((rejection, form), future))

    def flush(self) -> list[Rejection]:
        """Wait for the broker's acknowledgements; returns the rejections that were not delivered."""
        undelivered: list[Rejection] = []
        while self._in_flight:
            in_flight, self._in_flight = self._in_flight, []
            for (rejection, form), delivered, refusal in outcomes(self.producer, in_flight, self.timeout_s):
                errno = getattr(refusal, "errno", None)
                if delivered:
                    if form:
                        self._reduced(rejection, FORMS[form])
                elif errno in NOT_ALLOWED:
                    raise DeadLetterTopicRefused(
                        f"the broker refuses dead letters on {self.topic}: {type(refusal).__name__}; "
                        "grant the worker's principal Write on it (see worker/docs/faults.md)"
                    )
                elif errno in TOO_LARGE and form + 1 < len(FORMS):
                    self._send(rejection, form + 1)  # goes round this loop once more
                elif errno in TOO_LARGE:
                    self._reduced(rejection, "dropped")  # not even its place fits: counted, never retried
                else:
                    undelivered.append(rejection)
        return undelivered

    def _reduced(self, rejection: Rejection, form: str) -> None:
        record = rejection.record
        log.warning(
            "dead_letter_reduced",
            form=form,
            error_class=str(rejection.error_class),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            limit_bytes=self.max_message_bytes,
        )
        self.on_reduced(form)

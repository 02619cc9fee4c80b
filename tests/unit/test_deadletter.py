"""The dead-letter sink against a broker that refuses some records for good (a fake producer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError

from worker.contracts.errors import ErrorClass
from worker.contracts.values import RawRecord, Rejection
from worker.runtime.kafka.deadletter import DeadLetterSink, DeadLetterTopicRefused


@dataclass
class Future:
    exception: Exception | None = None
    is_done: bool = True

    def succeeded(self) -> bool:
        return self.exception is None


@dataclass
class Broker:
    """Takes values up to `max_bytes`; refuses everything with `refuse`; `down` acknowledges nothing."""

    max_bytes: int = 1_000
    refuse: Exception | None = None
    down: bool = False
    stored: list[dict[str, Any]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Future:
        if self.down:
            return Future(KafkaTimeoutError("no ack"))
        if self.refuse:
            return Future(self.refuse)
        if value is not None and len(value) > self.max_bytes:
            return Future(MessageSizeTooLargeError("record too large for the topic"))
        self.stored.append({"key": key, "value": value, "headers": dict(headers)})
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        pass


def rejection(value: bytes, offset: int = 5) -> Rejection:
    return Rejection(RawRecord("in", 0, offset, b"k", value), ErrorClass.INVALID_JSON, "not JSON")


def test_a_dead_letter_too_large_for_the_topic_is_sent_without_its_value() -> None:
    broker = Broker(max_bytes=100)
    sink = DeadLetterSink(broker, "dlq")  # type: ignore[arg-type]
    sink.send([rejection(b"x" * 5_000), rejection(b"small", offset=6)])
    assert sink.flush() == []
    by_offset = {record["headers"]["triage.source.offset"]: record for record in broker.stored}
    big, small = by_offset[b"5"], by_offset[b"6"]
    assert big["value"] is None and big["headers"]["triage.value.omitted_bytes"] == b"5000"
    assert big["headers"]["triage.source.offset"] == b"5"  # where the original still is
    assert small["value"] == b"small"


def test_a_topic_the_worker_may_not_write_stops_it_with_one_line() -> None:
    sink = DeadLetterSink(Broker(refuse=TopicAuthorizationFailedError("acl")), "dlq")  # type: ignore[arg-type]
    sink.send([rejection(b"bad")])
    with pytest.raises(DeadLetterTopicRefused, match="grant the worker's principal Write on it") as raised:
        sink.flush()
    assert raised.value.exit_status == 2


def test_a_broker_that_is_down_hands_the_dead_letters_back_for_a_retry() -> None:
    broker = Broker(down=True)
    sink = DeadLetterSink(broker, "dlq")  # type: ignore[arg-type]
    sink.send([rejection(b"bad")])
    assert len(sink.flush()) == 1


def test_a_dead_letter_keeps_the_records_own_headers_ahead_of_ours() -> None:
    from worker.contracts.errors import ErrorClass
    from worker.contracts.values import RawRecord, Rejection
    from worker.runtime.kafka.deadletter import dead_letter_headers

    record = RawRecord(
        "feedback.events", 2, 7, b"k", b"v",
        headers=(("traceparent", b"00-1-2-01"), ("triage.error.class", b"spoofed"), ("triage.replay.count", b"2")),
    )  # fmt: skip
    headers = dead_letter_headers(Rejection(record, ErrorClass.INVALID_JSON, "not JSON"))
    assert headers[:2] == [("traceparent", b"00-1-2-01"), ("triage.replay.count", b"2")]
    assert [v for k, v in headers if k == "triage.error.class"] == [b"invalid_json"]  # ours, not the producer's


def test_a_dead_letter_whose_headers_alone_are_too_large_is_reduced_step_by_step_never_retried() -> None:
    """One input record whose own headers, with ours added, exceed the limit once wedged the worker:
    undeliverable in both forms, it was sent again and reported unavailable for ever."""
    broker = Broker(max_bytes=100_000)
    reduced: list[str] = []
    sink = DeadLetterSink(broker, "dlq", max_message_bytes=2_000, on_reduced=reduced.append)  # type: ignore[arg-type]
    huge_headers = (("x-big", b"h" * 1_900), ("traceparent", b"00-abc-def-01"))
    record = RawRecord("in", 3, 9, b"key", b"v" * 1_000, headers=huge_headers)
    sink.send([Rejection(record, ErrorClass.INVALID_JSON, "not JSON"), rejection(b"small", offset=10)])
    assert sink.flush() == []
    first, second = broker.stored
    assert first["value"] is None and "x-big" not in first["headers"] and "traceparent" not in first["headers"]
    assert (
        first["headers"]["triage.headers.omitted"] == b"2" and first["headers"]["triage.value.omitted_bytes"] == b"1000"
    )
    assert (
        first["headers"]["triage.source.offset"] == b"9" and first["headers"]["triage.error.class"] == b"invalid_json"
    )
    assert second["value"] == b"small"
    assert reduced == ["without_their_headers"]


def test_what_no_form_fits_ends_minimal_or_counted_dropped() -> None:
    broker = Broker(max_bytes=100_000)
    reduced: list[str] = []
    sink = DeadLetterSink(broker, "dlq", max_message_bytes=400, on_reduced=reduced.append)  # type: ignore[arg-type]
    long_reason = Rejection(RawRecord("in", 0, 1, b"k" * 300, b"v"), ErrorClass.INVALID_EVENT, "m" * 2_000)
    sink.send([long_reason])
    assert sink.flush() == []
    [minimal] = broker.stored
    assert minimal["key"] is None and minimal["value"] is None and minimal["headers"]["triage.reduced"] == b"minimal"
    assert set(minimal["headers"]) == {
        "triage.error.class", "triage.source.topic", "triage.source.partition", "triage.source.offset",
        "triage.schema", "triage.reduced",
    }  # fmt: skip
    tiny = DeadLetterSink(broker, "dlq", max_message_bytes=100, on_reduced=reduced.append)  # type: ignore[arg-type]
    tiny.send([long_reason])
    assert tiny.flush() == []  # not even its place fits: counted, dropped, never an outage
    assert reduced == ["minimal", "dropped"] and len(broker.stored) == 1


def test_a_broker_whose_limit_is_lower_than_ours_gets_the_smaller_forms_it_answers_for() -> None:
    broker = Broker(max_bytes=10)  # refuses every value over 10 bytes, as its message.max.bytes says
    sink = DeadLetterSink(broker, "dlq")  # type: ignore[arg-type]
    sink.send([rejection(b"x" * 50)])
    assert sink.flush() == []
    assert broker.stored[0]["value"] is None

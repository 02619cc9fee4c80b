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

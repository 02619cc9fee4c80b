"""The DeadLetters contract: what the store stage relies on from the dead-letter topic (see ports.DeadLetters)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from worker.contracts.errors import ErrorClass
from worker.contracts.values import RawRecord, Rejection
from worker.runtime.ports import DeadLetters

LIMIT = 64 * 1024  # the topic's message size limit the harness sets up


class Letter(Protocol):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class DeadLettersHarness(Protocol):
    def sink(self) -> DeadLetters:
        """A sink over a fresh dead-letter topic that takes messages up to LIMIT bytes."""

    def topic(self) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        """What the topic holds: (key, value, headers by name), in the order written."""

    def broker_down(self) -> AbstractContextManager[None]:
        """While the block runs, the broker acknowledges nothing."""


def rejection(offset: int, value: bytes | None = b"not json", headers: tuple[tuple[str, bytes], ...] = ()) -> Rejection:
    record = RawRecord("feedback.events", 1, offset, f"k{offset}".encode(), value, 1_763_000_000_000, headers)
    return Rejection(record, ErrorClass.INVALID_JSON, "value is not JSON")


class DeadLettersContract:
    """Subclass with a `harness` fixture."""

    def test_every_rejection_lands_with_its_bytes_its_headers_and_the_reason(self, harness: DeadLettersHarness) -> None:
        sink = harness.sink()
        sink.send([rejection(3, headers=(("traceparent", b"00-abc-def-01"),)), rejection(4, None)])
        assert sink.flush() == []
        letters = harness.topic()
        assert [(key, value) for key, value, _ in letters] == [(b"k3", b"not json"), (b"k4", None)]
        headers = letters[0][2]
        assert headers["traceparent"] == b"00-abc-def-01"
        assert headers["triage.error.class"] == b"invalid_json" and headers["triage.error.message"]
        assert (
            headers["triage.source.topic"],
            headers["triage.source.partition"],
            headers["triage.source.offset"],
        ) == (
            b"feedback.events",
            b"1",
            b"3",
        )

    def test_what_a_broker_that_is_down_did_not_acknowledge_is_handed_back(self, harness: DeadLettersHarness) -> None:
        sink = harness.sink()
        letters = [rejection(5), rejection(6)]
        with harness.broker_down():
            sink.send(letters)
            assert sorted(r.record.offset for r in sink.flush()) == [5, 6]
        sink.send(letters)  # the caller sends them again once the broker is back
        assert sink.flush() == []
        # At least once: what the broker took before it went away may land too.
        assert {headers["triage.source.offset"] for _, _, headers in harness.topic()} == {b"5", b"6"}

    def test_a_dead_letter_too_large_for_the_topic_goes_without_its_value(self, harness: DeadLettersHarness) -> None:
        sink = harness.sink()
        sink.send([rejection(7, b"x" * (2 * LIMIT)), rejection(8)])
        assert sink.flush() == []
        letters = {headers["triage.source.offset"]: (value, headers) for _, value, headers in harness.topic()}
        big, headers = letters[b"7"]
        assert big is None and headers["triage.value.omitted_bytes"] == str(2 * LIMIT).encode()
        assert letters[b"8"][0] == b"not json"

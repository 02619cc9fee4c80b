"""The relay over in-memory Outbox and Publisher ports: a row the broker refuses for good is parked
with its reason and the rows behind it flow; an outage leaves everything pending."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from worker.runtime.ports import Message, OutboxRow, Published
from worker.runtime.relay import OutboxRelay


class MemoryOutbox:
    def __init__(self, rows: int, big: set[int]) -> None:
        self.rows = {i: OutboxRow(i, f"e{i}", "x" * (2_000 if i in big else 10), None, None) for i in range(rows)}
        self.published: set[int] = set()
        self.parked: dict[int, str] = {}

    @contextmanager
    def claim(self, kind: str, topic: str, limit: int) -> Iterator[Any]:
        outbox = self
        pending = [r for i, r in sorted(self.rows.items()) if i not in self.published and i not in self.parked]

        class Claim:
            rows = pending[:limit]

            def published(self, ids: Sequence[int], at: datetime) -> None:
                outbox.published |= set(ids)

            def failed(self, ids: Sequence[int], error: str | None) -> None:
                pass

            def parked(self, reasons: Mapping[int, str], at: datetime) -> None:
                outbox.parked.update(reasons)

        yield Claim()


class LimitedBroker:
    """Takes values up to 1,000 bytes; refuses larger ones for good, as message.max.bytes does."""

    def __init__(self) -> None:
        self.down = False
        self.topic: list[bytes] = []

    def publish(self, topic: str, messages: Sequence[Message[int]]) -> Published[int]:
        if self.down:
            return Published([], [m.ref for m in messages], "KafkaTimeoutError")
        small = [m for m in messages if len(m.value) <= 1_000]
        self.topic += [m.key for m in small]
        refused = [(m.ref, "MessageSizeTooLargeError: [Error 10]") for m in messages if len(m.value) > 1_000]
        return Published([m.ref for m in small], [], None, refused)


def test_rows_the_broker_refuses_for_good_are_parked_and_the_rest_flow() -> None:
    """500 refused rows at the head of the outbox (the relay batch) once blocked their kind for good:
    retried oldest first every round, they filled every batch."""
    outbox, broker = MemoryOutbox(520, big=set(range(500))), LimitedBroker()
    relay = OutboxRelay(outbox, broker, {"escalation": "esc"}, batch_size=500)
    assert relay.publish_all() == {"escalation": 20}  # one round: the 500 parked, the 20 behind them sent
    assert len(outbox.parked) == 500 and all("MessageSizeTooLarge" in r for r in outbox.parked.values())
    assert sorted(broker.topic) == sorted(f"e{i}".encode() for i in range(500, 520))


def test_an_outage_parks_nothing() -> None:
    outbox, broker = MemoryOutbox(10, big=set()), LimitedBroker()
    broker.down = True
    relay = OutboxRelay(outbox, broker, {"escalation": "esc"})
    assert relay.publish_all() == {"escalation": 0}
    assert outbox.parked == {} and outbox.published == set()

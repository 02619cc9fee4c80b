"""Publisher: messages to a topic, and which of them the broker acknowledged (for the relay).

`publish` hands every message to the producer and waits (a bounded time) for the acknowledgements.
A send that cannot start (no metadata, the buffer full while the broker is away) stops the round
there: the messages after it are reported undelivered without being tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from worker.runtime.kafka.delivery import await_delivery
from worker.runtime.ports import Message, Published

T = TypeVar("T")


class KafkaPublisher:
    def __init__(self, producer: KafkaProducer, timeout_s: float = 10.0) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    def publish(self, topic: str, messages: Sequence[Message[T]]) -> Published[T]:
        pending: list[tuple[T, FutureRecordMetadata | None]] = []
        send_error = None
        for message in messages:
            try:
                future = self.producer.send(topic, key=message.key, value=message.value, headers=list(message.headers))
            except KafkaError as exc:  # broker unreachable: stop here, the rest stay pending
                send_error = f"{type(exc).__name__}: {exc}"[:1000]
                pending += [(m.ref, None) for m in messages[len(pending) :]]
                break
            pending.append((message.ref, future))
        delivered, undelivered, last_error = await_delivery(self.producer, pending, self.timeout_s)
        return Published(delivered, undelivered, last_error or send_error)

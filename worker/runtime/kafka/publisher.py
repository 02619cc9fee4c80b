"""Publisher: messages to a topic, and which of them the broker acknowledged (for the relay).

`publish` hands every message to the producer and waits (a bounded time) for the acknowledgements.
A message the broker (or the producer, which holds the same limit) refuses for good, too large or
invalid, is reported refused with the reason, and the others go on. A send that cannot start for
any other reason (no metadata, the buffer full while the broker is away) stops the round there: the
messages after it are reported undelivered without being tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from worker.runtime.kafka.delivery import REFUSED_FOR_GOOD, await_delivery, describe
from worker.runtime.ports import Message, Published

T = TypeVar("T")


class KafkaPublisher:
    def __init__(self, producer: KafkaProducer, timeout_s: float = 10.0) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    def publish(self, topic: str, messages: Sequence[Message[T]]) -> Published[T]:
        pending: list[tuple[T, FutureRecordMetadata | None]] = []
        refused: list[tuple[T, str]] = []
        send_error = None
        for index, message in enumerate(messages):
            try:
                future = self.producer.send(topic, key=message.key, value=message.value, headers=list(message.headers))
            except KafkaError as exc:
                if getattr(exc, "errno", None) in REFUSED_FOR_GOOD:
                    refused.append((message.ref, describe(exc)))
                    continue
                send_error = describe(exc)  # broker unreachable: stop here, the rest stay pending
                pending += [(m.ref, None) for m in messages[index:]]
                break
            pending.append((message.ref, future))
        delivered, undelivered, refused_later, last_error = await_delivery(self.producer, pending, self.timeout_s)
        return Published(delivered, undelivered, last_error or send_error, refused + refused_later)

"""Delivery: wait for the broker to acknowledge records already handed to the producer.

Shared by the dead-letter sink and the relay's publisher: flush with a time limit, then split what
was sent into delivered, undelivered (try again) and refused for good (too large, invalid: trying
again cannot help), keeping the last error for the record.
"""

from __future__ import annotations

from typing import TypeVar

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

T = TypeVar("T")
TOO_LARGE = {10, 18}  # MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE: the broker (or the producer) will never take it
REFUSED_FOR_GOOD = TOO_LARGE | {87}  # and INVALID_RECORD: sending it again cannot help


def outcomes(
    producer: KafkaProducer, pending: list[tuple[T, FutureRecordMetadata | None]], timeout_s: float
) -> list[tuple[T, bool, BaseException | None]]:
    """Flush, then each item with whether the broker acknowledged it and, if it refused it, why.
    A None future is a send that never started; an unfinished one was not acknowledged in time."""
    if not pending:
        return []
    try:
        producer.flush(timeout=timeout_s)
    except KafkaError:
        pass  # the futures below say which records made it
    return [
        (
            item,
            future is not None and future.is_done and future.succeeded(),
            future.exception if future is not None and future.is_done else None,
        )
        for item, future in pending
    ]


def await_delivery(
    producer: KafkaProducer, pending: list[tuple[T, FutureRecordMetadata | None]], timeout_s: float
) -> tuple[list[T], list[T], list[tuple[T, str]], str | None]:
    """Returns (delivered, undelivered, refused for good with the broker's reason, last error). A None
    future is a send that never started."""
    delivered, undelivered, refused, last_error = [], [], [], None
    for (item, ok, exc), (_, future) in zip(outcomes(producer, pending, timeout_s), pending, strict=True):
        if ok:
            delivered.append(item)
        elif getattr(exc, "errno", None) in REFUSED_FOR_GOOD:
            refused.append((item, describe(exc)))
        else:
            undelivered.append(item)
            if exc is not None:
                last_error = describe(exc)
            elif future is not None:
                last_error = f"not acknowledged within {timeout_s}s"
    return delivered, undelivered, refused, last_error


def describe(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]

"""Relay: publish pending escalation outbox rows to the escalation topic, then mark them sent.

Rows are claimed with `FOR UPDATE SKIP LOCKED`, so several workers can relay at once without
sending the same row twice in the normal case. A row is marked published only after the broker
acknowledged it; if Kafka is down the rows stay pending and are retried on the next call.
Delivery is at least once: consumers de-duplicate on the message key (the event_id).
"""

from __future__ import annotations

from datetime import datetime, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from sqlalchemy import Engine, Text, cast, select, update

from worker.delivery import await_delivery
from worker.failpoints import failpoint
from worker.tables import escalation_outbox


class EscalationRelay:
    def __init__(
        self, engine: Engine, producer: KafkaProducer, topic: str, *, batch_size: int = 500, timeout_s: float = 10.0
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.topic = topic
        self.batch_size = batch_size
        self.timeout_s = timeout_s

    def publish_pending(self) -> tuple[int, int]:
        """Publish one batch of pending rows; returns (published, failed)."""
        outbox = escalation_outbox.c
        with self.engine.begin() as connection:
            rows = connection.execute(
                # The payload as JSONB's own text: sent as is, never parsed and re-serialised here.
                select(outbox.id, outbox.event_id, cast(outbox.payload, Text).label("payload"))
                .where(outbox.published_at.is_(None))
                .order_by(outbox.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0, 0
            pending: list[tuple[int, FutureRecordMetadata | None]] = []
            send_error = None
            for row in rows:
                try:
                    future = self.producer.send(
                        self.topic,
                        key=row.event_id.encode("utf-8"),
                        value=row.payload.encode("utf-8"),
                    )
                except KafkaError as exc:  # broker unreachable: stop here, the rest stay pending
                    send_error = f"{type(exc).__name__}: {exc}"[:1000]
                    pending += [(r.id, None) for r in rows[len(pending) :]]
                    break
                pending.append((row.id, future))
            sent, failed, last_error = await_delivery(self.producer, pending, self.timeout_s)
            failpoint("during_relay")
            last_error = last_error or send_error
            now = datetime.now(timezone.utc)
            if sent:
                connection.execute(
                    update(escalation_outbox)
                    .where(outbox.id.in_(sent))
                    .values(published_at=now, attempts=outbox.attempts + 1)
                )
            if failed:
                connection.execute(
                    update(escalation_outbox)
                    .where(outbox.id.in_(failed))
                    .values(attempts=outbox.attempts + 1, last_error=last_error)
                )
        return len(sent), len(failed)

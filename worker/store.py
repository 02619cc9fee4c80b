"""Store: write one batch of results and its escalation outbox rows in one Postgres transaction.

Idempotent on `event_id`: a replayed event (after a crash or a rebalance) inserts nothing and
creates no second outbox row. Within a batch, the first event with an id wins; later ones with
the same id are reported back as duplicates so the caller can log them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert

from worker.events import EscalationEvent
from worker.records import ClassifiedItem
from worker.tables import escalation_outbox, feedback_results


@dataclass(frozen=True)
class StoreOutcome:
    inserted: int
    escalations: int
    duplicates: list[str]  # event ids already stored, or repeated within the batch


def escalation_event(result: ClassifiedItem, escalated_at: datetime, include_text: bool) -> EscalationEvent:
    item, prediction = result.item, result.prediction
    assert result.decision.reason is not None
    return EscalationEvent(
        event_id=item.event_id,
        label=prediction.label,
        score=prediction.score,
        reason=result.decision.reason,
        source=item.source,
        product=item.product,
        customer_id=item.customer_id,
        created_at=item.created_at,
        model=result.model,
        text=item.text if include_text else None,
        escalated_at=escalated_at,
    )


class ResultStore:
    def __init__(self, engine: Engine, *, store_text: bool = True) -> None:
        self.engine = engine
        self.store_text = store_text

    def write(self, results: Sequence[ClassifiedItem]) -> StoreOutcome:
        """Insert results and outbox rows atomically; returns what was new."""
        unique: dict[str, ClassifiedItem] = {}
        duplicates: list[str] = []
        for result in results:
            if result.item.event_id in unique:
                duplicates.append(result.item.event_id)
            else:
                unique[result.item.event_id] = result
        if not unique:
            return StoreOutcome(0, 0, duplicates)
        now = datetime.now(timezone.utc)
        rows = [self._row(result) for result in unique.values()]
        with self.engine.begin() as connection:
            # One cached statement with a parameter list: SQLAlchemy's "insertmanyvalues" sends it
            # as multi-row INSERTs without recompiling a 1,000-row VALUES clause for every batch.
            inserted = set(
                connection.execute(
                    insert(feedback_results)
                    .on_conflict_do_nothing(index_elements=["event_id"])
                    .returning(feedback_results.c.event_id),
                    rows,
                ).scalars()
            )
            outbox = [
                {
                    "event_id": event_id,
                    "payload": escalation_event(unique[event_id], now, self.store_text).model_dump(mode="json"),
                    "created_at": now,
                    "attempts": 0,
                }
                for event_id in unique
                if event_id in inserted and unique[event_id].decision.escalate
            ]
            if outbox:
                connection.execute(
                    insert(escalation_outbox).on_conflict_do_nothing(index_elements=["event_id"]), outbox
                )
        duplicates.extend(event_id for event_id in unique if event_id not in inserted)
        return StoreOutcome(inserted=len(inserted), escalations=len(outbox), duplicates=duplicates)

    def _row(self, result: ClassifiedItem) -> dict[str, object]:
        item, prediction, record = result.item, result.prediction, result.item.record
        return {
            "event_id": item.event_id,
            "label": prediction.label,
            "score": prediction.score,
            "negative_prob": prediction.negative_prob,
            "escalated": result.decision.escalate,
            "escalation_reason": result.decision.reason,
            "model": result.model,
            "source": item.source,
            "product": item.product,
            "customer_id": item.customer_id,
            "created_at": item.created_at,
            "processed_at": datetime.now(timezone.utc),
            "kafka_topic": record.topic,
            "kafka_partition": record.partition,
            "kafka_offset": record.offset,
            "kafka_timestamp": (
                datetime.fromtimestamp(record.timestamp_ms / 1000, timezone.utc)
                if record.timestamp_ms is not None and record.timestamp_ms >= 0
                else None
            ),
            "inference_ms": result.inference_ms,
            "batch_size": result.batch_size,
            "text": item.text if self.store_text else None,
            "metadata": item.metadata,
        }

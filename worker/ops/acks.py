"""Acks: a human marks an escalation as handled (`triage-worker ack EVENT_ID`), so the backlog shrinks.

Acknowledging sets `acknowledged_at`/`acknowledged_by` on the stored result; the
`escalation_backlog` view lists escalations without one. Unknown ids and results that were never
escalated are reported, not silently ignored; acknowledging twice keeps the first acknowledgement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Engine, select, update

from worker.contracts.tables import feedback_results


@dataclass
class AckOutcome:
    acknowledged: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    not_escalated: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.not_escalated or self.unknown)


def acknowledge(engine: Engine, event_ids: Sequence[str], by: str) -> AckOutcome:
    results = feedback_results.c
    outcome = AckOutcome()
    with engine.begin() as connection:
        found = {
            row.event_id: row
            for row in connection.execute(
                select(results.event_id, results.escalated, results.acknowledged_at)
                .where(results.event_id.in_(list(event_ids)))
                .with_for_update()
            )
        }
        for event_id in dict.fromkeys(event_ids):
            row = found.get(event_id)
            if row is None:
                outcome.unknown.append(event_id)
            elif not row.escalated:
                outcome.not_escalated.append(event_id)
            elif row.acknowledged_at is not None:
                outcome.already.append(event_id)
            else:
                outcome.acknowledged.append(event_id)
        if outcome.acknowledged:
            connection.execute(
                update(feedback_results)
                .where(results.event_id.in_(outcome.acknowledged))
                .values(acknowledged_at=datetime.now(timezone.utc), acknowledged_by=by)
            )
    return outcome

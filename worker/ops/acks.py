"""Acks and verdicts: a human marks an escalation handled (`triage-worker ack EVENT_ID`), optionally
saying what the feedback really was (`--label positive|negative`), so the backlog shrinks and the
escalation queue becomes labelled data (`triage-worker export --reviewed`).

Acknowledging sets `acknowledged_at`/`acknowledged_by`; acknowledging twice keeps the first. A
verdict sets `reviewed_label`/`reviewed_by`/`reviewed_at` (and acknowledges, if not yet done); a
later verdict replaces an earlier one, and the change is reported. Audit-sample items (sent to
the reviewers without being escalated) are acknowledged the same way. Unknown ids and results
that were never sent to the reviewers are reported and left unchanged. With `--category NAME`
(checked against TRIAGE_CATEGORIES before anything is written; `general` for "no team's category")
the reviewer tags the item in the same act (`reviewed_category`), exported beside the label for
`finetune`. When the model routed the item to one team and the tag names another, the escalation
is sent again to the tagged team (an outbox row of kind `reroute`, published by the workers' relay),
with `category_source: reviewer`; a later tag re-routes it again. Items the model left in `general`
are not re-sent: whoever reads `general` tagged them, and tagging history for training stays quiet. A trigger takes
a new acknowledgement off the open escalations counted in the hourly rollups (migrations 0004 and
0007).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update
from sqlalchemy.dialects.postgresql import insert

from worker.contracts.categories import GENERAL, CategoryList
from worker.contracts.tables import escalation_outbox, feedback_results
from worker.contracts.values import Sentiment
from worker.contracts.wire import EscalationEvent

ROUTE_HEADERS = ("triage.category", "triage.route")


@dataclass
class AckOutcome:
    done: list[tuple[str, str]] = field(default_factory=list)  # (event id, what happened)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (event id, why nothing happened)

    @property
    def ok(self) -> bool:
        return not self.refused


def acknowledge(
    engine: Engine,
    event_ids: Sequence[str],
    by: str,
    label: Sentiment | None = None,
    category: str | None = None,
    *,
    categories: CategoryList | None = None,
    escalation_topic: str = "",
) -> AckOutcome:
    """Acknowledge `event_ids`; with `category` (and the `categories` it was checked against), an item
    the model sent elsewhere is re-routed to that category's team (a topic, or `escalation_topic` with
    the route in a header)."""
    results = feedback_results.c
    outcome = AckOutcome()
    now = datetime.now(timezone.utc)
    verdict: dict[str, object] = {"reviewed_by": by, "reviewed_at": now} if label or category else {}
    if label is not None:
        verdict["reviewed_label"] = label
    if category is not None:
        verdict["reviewed_category"] = category
    newly: list[str] = []  # acknowledged now
    again: list[str] = []  # acknowledged before: only a verdict changes
    with engine.begin() as connection:
        found = {
            row.event_id: row
            for row in connection.execute(
                select(feedback_results).where(results.event_id.in_(list(event_ids))).with_for_update()
            )
        }
        for event_id in dict.fromkeys(event_ids):
            row = found.get(event_id)
            if row is None:
                outcome.refused.append((event_id, "unknown event id"))
                continue
            if not (row.escalated or row.audit_sample):
                outcome.refused.append((event_id, "not escalated nor audited, nothing to acknowledge"))
                continue
            (newly if row.acknowledged_at is None else again).append(event_id)
            said = ["acknowledged" if row.acknowledged_at is None else "already acknowledged"]
            if label is not None:
                if row.reviewed_label is None:
                    said.append(f"verdict {label}")
                elif row.reviewed_label != label:
                    said.append(f"verdict changed from {row.reviewed_label} to {label}")
                else:
                    said.append(f"verdict {label} confirmed")
            if category is not None:
                said.append(_tag_said(row.reviewed_category, row.category, category))
                if categories is not None and category != GENERAL and row.category not in (None, GENERAL, category):
                    said.append(_reroute(connection, row, categories, category, escalation_topic, now))
            outcome.done.append((event_id, ", ".join(said)))
        # One statement for all new acknowledgements: the trigger then locks the rollup rows it
        # adds to once, in key order, so two people acknowledging at once never deadlock.
        if newly:
            connection.execute(
                update(feedback_results)
                .where(results.event_id.in_(newly))
                .values(acknowledged_at=now, acknowledged_by=by, **verdict)
            )
        if again and verdict:
            connection.execute(update(feedback_results).where(results.event_id.in_(again)).values(**verdict))
    return outcome


def _tag_said(before: str | None, routed: str | None, category: str) -> str:
    """What a category tag did, said against the reviewer's earlier tag and where the model sent it."""
    if before is not None and before != category:
        return f"category changed from {before} to {category}"
    model = f" (the model routed it to {routed})" if routed is not None and routed != category else ""
    return f"category {category}{model}"


def _reroute(
    connection: Connection, row: Row[Any], categories: CategoryList, category: str, escalation_topic: str, now: datetime
) -> str:
    """Send the escalation again, to the team the reviewer tagged it for (replacing an earlier reroute)."""
    route = categories.by_name[category].route
    topic = route if categories.routing == "topic" else escalation_topic
    event = EscalationEvent(
        event_id=row.event_id,
        label=row.label,
        score=row.score,
        reason=row.escalation_reason or "audit",
        source=row.source,
        product=row.product,
        customer_id=row.customer_id,
        created_at=row.created_at,
        model=row.model,
        model_revision=row.model_revision,
        text=row.text,
        metadata=row.metadata,
        escalated_at=row.processed_at,
        category=category,
        category_score=None,
        category_source="reviewer",
    )
    values = {
        "topic": topic,
        "payload": event.model_dump(mode="json"),
        "headers": dict(zip(ROUTE_HEADERS, (category, route), strict=True)),
        "created_at": now,
        "published_at": None,
        "parked_at": None,
        "parked_reason": None,
        "attempts": 0,
        "last_error": None,
    }
    connection.execute(
        insert(escalation_outbox)
        .values(event_id=row.event_id, kind="reroute", source_time=None, **values)
        .on_conflict_do_update(index_elements=["event_id", "kind"], set_=values)
    )
    return f"re-routed to {category} ({topic})"

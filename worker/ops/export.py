"""Export: reviewers' verdicts as labelled data (`triage-worker export --reviewed`).

Writes the JSON-lines format that `evaluate` and `calibrate` read (`text`, `label`), with the
event id, the model's own answer and the calibration behind it as extra keys, oldest verdict
first. Rows stored without text (TRIAGE_STORE_TEXT=false) cannot be evaluated again; they are
counted and left out.

Verdicts on escalated items (negative or unsure) describe the escalation queue, not the whole
stream; those on the audit sample (TRIAGE_AUDIT_SAMPLE_RATE) describe the items the model let
through, and carry `"audit": true`, so `evaluate` and `finetune` can weigh them
(`--audit-weight`). A reviewer's category tag (`ack --category`) is written as `category`
beside the label, with the model's own (`model_category`), for `finetune` to train the category
head on; a row without a tag has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import IO

from sqlalchemy import Engine, select

from worker.contracts.tables import feedback_results
from worker.ops.quality.labelled import write_example


@dataclass(frozen=True)
class Exported:
    written: int
    without_text: int


def export_reviewed(engine: Engine, out: IO[str], since: timedelta | None = None) -> Exported:
    c = feedback_results.c
    query = (
        select(
            c.event_id,
            c.text,
            c.reviewed_label,
            c.label,
            c.score,
            c.model,
            c.model_revision,
            c.calibration,
            c.reviewed_at,
            c.audit_sample,
            c.reviewed_category,
            c.category_predicted,
        )
        .where(c.reviewed_label.is_not(None))  # a category tag comes with a verdict (ack checks it)
        .order_by(c.reviewed_at, c.event_id)
    )
    if since is not None:
        query = query.where(c.reviewed_at >= datetime.now(timezone.utc) - since)
    written = without_text = 0
    with engine.connect() as connection:
        for row in connection.execution_options(stream_results=True, yield_per=1000).execute(query):
            if row.text is None:
                without_text += 1
                continue
            write_example(
                out,
                row.text,
                row.reviewed_label,
                event_id=row.event_id,
                model_label=row.label,
                model_score=row.score,
                model=row.model,
                model_revision=row.model_revision,
                calibration=row.calibration,
                audit=row.audit_sample,
                reviewed_at=row.reviewed_at.isoformat(),
                **({"category": row.reviewed_category} if row.reviewed_category else {}),
                **({"model_category": row.category_predicted} if row.category_predicted else {}),
            )
            written += 1
    return Exported(written, without_text)

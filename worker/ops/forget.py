"""Forget: erase one customer's feedback text and identifiers (`triage-worker forget`).

In one transaction: the results of that customer (or those event ids) lose their text,
customer_id and metadata, and their outbox rows lose the text, customer_id and metadata in the payload
(published or not: an unpublished escalation still goes out, without them). Labels, scores, the
event id and the rollup counts stay, so trends do not change. What was already published to a
Kafka topic is beyond reach here: topic retention or compaction removes it (see worker/docs/data-over-time.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, text

ERASED_FROM_PAYLOAD = '{"text": null, "customer_id": null, "metadata": null}'


@dataclass(frozen=True)
class Forgotten:
    results: int  # result rows whose text and identifiers were cleared
    outbox: int  # outbox payloads cleared


def forget(engine: Engine, *, customer_id: str | None = None, event_ids: Sequence[str] = ()) -> Forgotten:
    if (customer_id is None) == (not event_ids):
        raise ValueError("name a customer id or event ids, not both")
    with engine.begin() as connection:
        if customer_id is not None:
            found = connection.execute(
                text("select event_id from feedback_results where customer_id = :customer for update"),
                {"customer": customer_id},
            )
        else:
            found = connection.execute(
                text("select event_id from feedback_results where event_id = any(:ids) for update"),
                {"ids": list(event_ids)},
            )
        ids = [row.event_id for row in found]
        if not ids:
            return Forgotten(0, 0)
        results = connection.execute(
            text(
                "update feedback_results set text = null, customer_id = null, metadata = null "
                "where event_id = any(:ids)"
            ),
            {"ids": ids},
        ).rowcount
        outbox = connection.execute(
            text("update escalation_outbox set payload = payload || cast(:erased as jsonb) where event_id = any(:ids)"),
            {"ids": ids, "erased": ERASED_FROM_PAYLOAD},
        ).rowcount
    return Forgotten(results, outbox)

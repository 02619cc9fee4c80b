"""Outbox: the escalation_outbox table as the relay reads and marks it (see relay).

`claim(kind, topic, limit)` opens a transaction, locks the oldest pending rows of that kind for this
deployment's topic with `FOR UPDATE SKIP LOCKED` (so several workers relay at once without sending
the same row twice in the normal case), and hands them over with their payload as JSONB's own text,
never parsed and re-serialised. Marks made on the claim land when the block ends, in the same
transaction; an exception in the block rolls them back and the rows stay pending. A parked row (the
broker refuses it for good, migration 0010) is never claimed again. A database error
comes out as `Unavailable` naming only its class and SQLSTATE: a statement's parameters may hold
customer text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, Text, cast, or_, select, update
from sqlalchemy.exc import DBAPIError

from worker.contracts.tables import escalation_outbox
from worker.runtime.ports import OutboxRow
from worker.runtime.postgres.errors import sqlstate_of
from worker.runtime.retry import Unavailable


class Claim:
    """Rows locked for one relay round, and the marks to make on them (every mark counts an attempt)."""

    def __init__(self, connection: Connection, rows: Sequence[OutboxRow]) -> None:
        self.connection = connection
        self.rows = list(rows)

    def published(self, ids: Sequence[int], at: datetime) -> None:
        self._mark(ids, published_at=at)

    def failed(self, ids: Sequence[int], error: str | None) -> None:
        self._mark(ids, last_error=error)

    def parked(self, reasons: Mapping[int, str], at: datetime) -> None:
        for row_id, reason in reasons.items():  # rare: one statement each
            self._mark([row_id], parked_at=at, parked_reason=reason[:1000], last_error=reason[:1000])

    def _mark(self, ids: Sequence[int], **values: object) -> None:
        if ids:
            outbox = escalation_outbox.c
            self.connection.execute(
                update(escalation_outbox).where(outbox.id.in_(ids)).values(attempts=outbox.attempts + 1, **values)
            )


class OutboxTable:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def claim(self, kind: str, topic: str, limit: int) -> Iterator[Claim]:
        outbox = escalation_outbox.c
        try:
            with self.engine.begin() as connection:
                found = connection.execute(
                    select(
                        outbox.id,
                        outbox.event_id,
                        cast(outbox.payload, Text).label("payload"),
                        outbox.headers,
                        outbox.source_time,
                    )
                    .where(
                        outbox.published_at.is_(None),
                        outbox.parked_at.is_(None),
                        outbox.kind == kind,
                        or_(outbox.topic.is_(None), outbox.topic == topic),  # this deployment's rows only
                    )
                    .order_by(outbox.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).all()
                yield Claim(
                    connection, [OutboxRow(r.id, r.event_id, r.payload, r.headers, r.source_time) for r in found]
                )
        except DBAPIError as exc:
            raise Unavailable(f"database: {type(exc.orig).__name__} (SQLSTATE {sqlstate_of(exc)})") from None

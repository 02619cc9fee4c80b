"""Partitions: the results' weekly partitions, created ahead of time and, with TRIAGE_RESULTS_RETENTION, dropped whole.

Run by the housekeeping loop (every TIDY_INTERVAL_S, and at start) in each worker, under one advisory lock
so two workers never change partitions at once. `ensure_partitions` creates this week's and next
week's partition (rows outside every partition would land in the default one). `drop_expired`
drops the weeks that ended before `now - retention` (a drop, not a delete: cheap at any size)
and then forgets their ids in the ledger, a bounded number at a time, so a replay of an event
older than the retention is stored again. The hourly rollups keep counting the dropped rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, text

HOUSEKEEPING_LOCK = 0x7472_6961_6765  # pg_advisory_xact_lock key shared by every worker
LEDGER_BATCH = 50_000
FORGET_IDS = """
    DELETE FROM result_ids WHERE event_id IN (
        SELECT event_id FROM result_ids WHERE processed_at < :before LIMIT :limit
    )
"""


@dataclass(frozen=True)
class Dropped:
    partitions: list[str]
    ids: int


class ResultPartitions:
    def __init__(self, engine: Engine, keep: timedelta | None) -> None:
        self.engine = engine
        self.keep = keep

    def ensure_partitions(self, now: datetime | None = None) -> None:
        today = (now or datetime.now(timezone.utc)).date()
        with self.engine.begin() as connection:
            connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": HOUSEKEEPING_LOCK})
            for day in (today, today + timedelta(days=7)):
                connection.execute(text("select feedback_results_ensure_week(:day)"), {"day": day})

    def drop_expired(self, now: datetime | None = None) -> Dropped:
        if self.keep is None:
            return Dropped([], 0)
        before = (now or datetime.now(timezone.utc)) - self.keep
        with self.engine.begin() as connection:
            connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": HOUSEKEEPING_LOCK})
            dropped = list(
                connection.execute(text("select feedback_results_drop_weeks_before(:before)"), {"before": before})
                .scalars()
                .all()
            )
            # The dropped weeks are exactly those before the week that holds `before`.
            week = connection.execute(
                text("select date_trunc('week', cast(:before as timestamptz), 'UTC')"), {"before": before}
            ).scalar_one()
            ids = connection.execute(text(FORGET_IDS), {"before": week, "limit": LEDGER_BATCH}).rowcount
        return Dropped(dropped, ids)

"""Partitions: the results' weekly partitions, created ahead of time and, with TRIAGE_RESULTS_RETENTION, dropped whole.

Run by the housekeeping loop (every TIDY_INTERVAL_S, and at start) in each worker, under one advisory
lock so two workers never change partitions at once. `ensure_partitions` creates this week's and
next week's partition (rows outside every partition would land in the default one). `drop_expired`
drops the weeks that ended before `now - retention` (a drop, not a delete: cheap at any size) and
then forgets their ids in the ledger and their shadow candidates' answers (`shadow_results`),
LEDGER_BATCH at a time until none is left or the round's time is up, so a replay of an event older
than the retention is stored again. The hourly rollups
keep counting the dropped rows.

Two guards keep one process from dropping current weeks: "now" is the database's clock, never the
host's (a host whose clock runs a month fast would otherwise drop a month), and the retention is
the deployment's, stored in `triage_settings` by the first worker that has one (a canary set to 1w
logs `results_retention_differs` and keeps the stored value). Partition DDL takes ACCESS EXCLUSIVE
on the results table, so it waits at most LOCK_TIMEOUT for it: a long reader (an export into a
slow pipe) makes the chore fail and retry next round instead of stalling every store behind it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, text

from worker.logs import get_logger

log = get_logger("worker.partitions")

HOUSEKEEPING_LOCK = 0x7472_6961_6765  # pg_advisory_xact_lock key shared by every worker
LEDGER_BATCH = 50_000
LOCK_TIMEOUT = "2s"
FORGET_IDS = """
    DELETE FROM result_ids WHERE event_id IN (
        SELECT event_id FROM result_ids WHERE processed_at < :before LIMIT :limit
    )
"""
FORGET_SHADOWS = """
    DELETE FROM shadow_results WHERE ctid IN (
        SELECT ctid FROM shadow_results WHERE processed_at < :before LIMIT :limit
    )
"""
RETENTION_SETTING = "results_retention"  # seconds, in triage_settings


@dataclass(frozen=True)
class Dropped:
    partitions: list[str]
    ids: int
    ids_left: bool = False  # the round's time ran out before every expired id was forgotten


class ResultPartitions:
    def __init__(self, engine: Engine, keep: timedelta | None, *, budget_s: float = 20.0) -> None:
        self.engine = engine
        self.keep = keep  # this worker's TRIAGE_RESULTS_RETENTION; the deployment's stored one wins
        self.budget_s = budget_s
        self._warned: timedelta | None = None

    def ensure_partitions(self, now: datetime | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(text(f"set local lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": HOUSEKEEPING_LOCK})
            today = (now or connection.execute(text("select now()")).scalar_one()).date()
            for day in (today, today + timedelta(days=7)):
                connection.execute(text("select feedback_results_ensure_week(:day)"), {"day": day})

    def retention(self) -> timedelta | None:
        """The deployment's retention: the stored one, or this worker's, stored if none was."""
        with self.engine.begin() as connection:
            if self.keep is not None:
                connection.execute(
                    text("insert into triage_settings (name, value) values (:name, :value) on conflict do nothing"),
                    {"name": RETENTION_SETTING, "value": str(int(self.keep.total_seconds()))},
                )
            stored = connection.execute(
                text("select value from triage_settings where name = :name"), {"name": RETENTION_SETTING}
            ).scalar_one_or_none()
        keep = timedelta(seconds=int(stored)) if stored is not None else None
        if keep != self.keep and self._warned != keep:
            self._warned = keep
            log.warning(
                "results_retention_differs",
                this_worker_s=self.keep.total_seconds() if self.keep else None,
                deployment_s=keep.total_seconds() if keep else None,
                using="deployment",
            )
        return keep

    def drop_expired(self, now: datetime | None = None) -> Dropped:
        keep = self.retention()
        if keep is None:
            return Dropped([], 0)
        started = time.monotonic()
        with self.engine.begin() as connection:
            connection.execute(text(f"set local lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": HOUSEKEEPING_LOCK})
            before = (now or connection.execute(text("select now()")).scalar_one()) - keep
            dropped = list(
                connection.execute(text("select feedback_results_drop_weeks_before(:before)"), {"before": before})
                .scalars()
                .all()
            )
            # The dropped weeks are exactly those before the week that holds `before`.
            week = connection.execute(
                text("select date_trunc('week', cast(:before as timestamptz), 'UTC')"), {"before": before}
            ).scalar_one()
        ids, left = 0, True
        while left and time.monotonic() - started < self.budget_s:
            with self.engine.begin() as connection:
                forgotten = connection.execute(text(FORGET_IDS), {"before": week, "limit": LEDGER_BATCH}).rowcount
                shadows = connection.execute(text(FORGET_SHADOWS), {"before": week, "limit": LEDGER_BATCH}).rowcount
            ids += forgotten
            left = max(forgotten, shadows) == LEDGER_BATCH
        return Dropped(dropped, ids, ids_left=left)

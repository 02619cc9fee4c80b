"""Housekeeping: the chores that keep the database small and the queries fast, in one background loop.

    every FOLD_INTERVAL_S (1 s):      fold the store's pending rollup counts into the hourly rollups (rollups)
    every WATCH_INTERVAL_S (5 s):     count the unpublished outbox rows per kind and the oldest one's age
                                      (`triage_outbox_unpublished`, `triage_outbox_oldest_unpublished_seconds`),
                                      and the parked ones (`triage_outbox_parked`: the broker refused them for good)
    every TIDY_INTERVAL_S (60 s),     delete outbox rows published longer ago than TRIAGE_OUTBOX_RETENTION,
    and once at start:                create this week's and next week's results partition,
                                      drop the weeks older than TRIAGE_RESULTS_RETENTION (partitions)

The deletes keep pace with the worker: each tidy deletes PRUNE_BATCH rows at a time until none is
left or TIDY_BUDGET_S is spent (a worker at 2,000 events/s with a results topic publishes 240,000
outbox rows a minute). What is still left then is the chore's backlog, exported as
`triage_housekeeping_backlog{chore}`. Expiry is reckoned by the database's clock, not the host's.

Every worker runs it; the chores that change shared state take an advisory lock, so two workers
never do the same one at once. A chore that fails is logged (`<chore>_failed`) and tried again on
its next turn; the others go on. Built in wiring; started and stopped by the runner like every
background loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, text

from worker.logs import get_logger
from worker.runtime.background import Periodic, Unpublished
from worker.runtime.batches import StageName
from worker.runtime.postgres.partitions import ResultPartitions
from worker.runtime.postgres.rollups import FOLD_INTERVAL_S, fold

log = get_logger("worker.housekeeping")

TIDY_INTERVAL_S = 60.0
WATCH_INTERVAL_S = 5.0
UNPUBLISHED = """
    SELECT kind, count(*) FILTER (WHERE parked_at IS NULL),
           coalesce(extract(epoch from now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0),
           count(*) FILTER (WHERE parked_at IS NOT NULL)
    FROM escalation_outbox WHERE published_at IS NULL GROUP BY kind
"""
TIDY_BUDGET_S = 20.0
PRUNE_BATCH = 10_000
PRUNE = """
    DELETE FROM escalation_outbox WHERE id IN (
        SELECT id FROM escalation_outbox
        WHERE published_at IS NOT NULL AND published_at < now() - cast(:retention as interval)
        LIMIT :limit FOR UPDATE SKIP LOCKED
    )
"""
PRUNABLE = """
    SELECT count(*) FROM escalation_outbox
    WHERE published_at IS NOT NULL AND published_at < now() - cast(:retention as interval)
"""


@dataclass(frozen=True)
class Pruned:
    deleted: int
    left: int  # rows still past the retention when the time ran out; 0 when every one was deleted


def prune_outbox(engine: Engine, retention: timedelta | None, budget_s: float = TIDY_BUDGET_S) -> Pruned:
    """Delete rows published longer ago than `retention` (by the database's clock), PRUNE_BATCH at a
    time, until none is left or `budget_s` is spent. A row not yet published is never deleted."""
    if retention is None:
        return Pruned(0, 0)
    started, deleted = time.monotonic(), 0
    params = {"retention": retention, "limit": PRUNE_BATCH}
    while True:
        with engine.begin() as connection:
            count = int(connection.execute(text(PRUNE), params).rowcount)
        deleted += count
        if count < PRUNE_BATCH:
            return Pruned(deleted, 0)
        if time.monotonic() - started >= budget_s:
            with engine.connect() as connection:
                return Pruned(deleted, int(connection.execute(text(PRUNABLE), params).scalar_one()))


@dataclass
class Chore:
    name: str
    every_s: float
    run: Callable[[], None]
    due: float = 0.0  # time.monotonic() of its next turn; 0: at the first round


class Housekeeping:
    def __init__(
        self,
        engine: Engine,
        partitions: ResultPartitions,
        outbox_retention: timedelta | None,
    ) -> None:
        self.engine = engine
        self.partitions = partitions
        self.outbox_retention = outbox_retention
        self.backlog: dict[str, int] = {"outbox_prune": 0, "result_ids": 0}
        self.unpublished: dict[str, Unpublished] = {}
        self.chores = [
            Chore("rollup_fold", FOLD_INTERVAL_S, self.fold_rollups, due=time.monotonic() + FOLD_INTERVAL_S),
            Chore("outbox_watch", WATCH_INTERVAL_S, self.watch_outbox),
            Chore("outbox_prune", TIDY_INTERVAL_S, self.prune_outbox),
            Chore("partitions", TIDY_INTERVAL_S, self.keep_partitions),
        ]

    def round(self) -> None:
        """Run every chore whose turn has come."""
        for chore in self.chores:
            if time.monotonic() < chore.due:
                continue
            chore.due = time.monotonic() + chore.every_s
            try:
                chore.run()
            except Exception as exc:  # noqa: BLE001 - each chore on its own: one failing stops no other
                log.warning(f"{chore.name}_failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def fold_rollups(self) -> None:
        """The pending counts stay pending if this fails: the live view is exact either way."""
        fold(self.engine)

    def watch_outbox(self) -> None:
        """Uses the outbox's partial index on unpublished rows: cheap while the relay keeps up."""
        with self.engine.connect() as connection:
            found = {
                kind: Unpublished(int(rows), float(age), int(parked))
                for kind, rows, age, parked in connection.execute(text(UNPUBLISHED))
            }
        self.unpublished = {
            kind: found.get(kind, Unpublished(0, 0.0, 0)) for kind in {*self.unpublished, *found, "escalation"}
        }

    def prune_outbox(self) -> None:
        pruned = prune_outbox(self.engine, self.outbox_retention)
        self.backlog["outbox_prune"] = pruned.left
        if pruned.deleted:
            log.info("outbox_pruned", count=pruned.deleted, left=pruned.left)

    def keep_partitions(self) -> None:
        self.partitions.ensure_partitions()
        dropped = self.partitions.drop_expired()
        self.backlog["result_ids"] = int(dropped.ids_left)
        if dropped.partitions or dropped.ids:
            log.info("results_expired", partitions=dropped.partitions, ids_forgotten=dropped.ids)


def housekeeping_loop(housekeeping: Housekeeping) -> Periodic:
    """Housekeeping as a background loop: a round every second (the shortest chore interval)."""
    interval_s = min(chore.every_s for chore in housekeeping.chores)
    return Periodic(
        "housekeeping",
        StageName.HOUSEKEEPING,
        housekeeping.round,
        interval_s,
        backlog=lambda: housekeeping.backlog,
        unpublished=lambda: housekeeping.unpublished,
    )

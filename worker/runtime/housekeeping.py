"""Housekeeping: the chores that keep the database small and the queries fast, in one background loop.

    every FOLD_INTERVAL_S (1 s):      fold the store's pending rollup counts into the hourly rollups (rollups)
    every TIDY_INTERVAL_S (60 s),     delete outbox rows published longer ago than TRIAGE_OUTBOX_RETENTION,
    and once at start:                create this week's and next week's results partition,
                                      drop the weeks older than TRIAGE_RESULTS_RETENTION (partitions)

Every worker runs it; the chores that change shared state take an advisory lock, so two workers
never do the same one at once. A chore that fails is logged (`<chore>_failed`) and tried again on
its next turn; the others go on. Built in wiring; started and stopped by the runner like every
background loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, text

from worker.logs import get_logger
from worker.runtime.background import Periodic
from worker.runtime.batches import StageName
from worker.runtime.partitions import ResultPartitions
from worker.runtime.rollups import FOLD_INTERVAL_S, fold

log = get_logger("worker.housekeeping")

TIDY_INTERVAL_S = 60.0
PRUNE_BATCH = 10_000
PRUNE = """
    DELETE FROM escalation_outbox WHERE id IN (
        SELECT id FROM escalation_outbox
        WHERE published_at IS NOT NULL AND published_at < :before
        LIMIT :limit FOR UPDATE SKIP LOCKED
    )
"""


def prune_outbox(engine: Engine, retention: timedelta | None) -> int:
    """Delete rows published longer ago than `retention`, at most PRUNE_BATCH; returns how many.
    A row not yet published is never deleted."""
    if retention is None:
        return 0
    with engine.begin() as connection:
        before = datetime.now(timezone.utc) - retention
        return int(connection.execute(text(PRUNE), {"before": before, "limit": PRUNE_BATCH}).rowcount)


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
        self.chores = [
            Chore("rollup_fold", FOLD_INTERVAL_S, self.fold_rollups, due=time.monotonic() + FOLD_INTERVAL_S),
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

    def prune_outbox(self) -> None:
        pruned = prune_outbox(self.engine, self.outbox_retention)
        if pruned:
            log.info("outbox_pruned", count=pruned)

    def keep_partitions(self) -> None:
        self.partitions.ensure_partitions()
        dropped = self.partitions.drop_expired()
        if dropped.partitions or dropped.ids:
            log.info("results_expired", partitions=dropped.partitions, ids_forgotten=dropped.ids)


def housekeeping_loop(housekeeping: Housekeeping) -> Periodic:
    """Housekeeping as a background loop: a round every second (the shortest chore interval)."""
    interval_s = min(chore.every_s for chore in housekeeping.chores)
    return Periodic("housekeeping", StageName.HOUSEKEEPING, lambda: housekeeping.round(), interval_s)

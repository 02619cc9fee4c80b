"""Runner: the worker's main loop. Read this file top to bottom to follow a message through the system.

    main thread:   poll (source) -> micro-batch (batcher) -> submit ......... commit offsets (source)
    stage threads:         decode -> tokenize -> infer -> store (stages, pipeline)   ^
    background:    outbox -> escalation and results topics (relay); folds, prunes, partitions (housekeeping)

The stages overlap: while the model runs one batch, the next is tokenized and the previous one
stored. A batch's offsets are committed only after it came out of the store stage, and batches
come out in order, so a crash at any point replays work instead of losing it, and the idempotent
store turns replays into no-ops. Each committed batch becomes one `BatchReport`, which feeds the
totals, the `batch_stored` log line and the metrics.

Stopping (see shutdown): the loop ends, the batches in hand are finished and committed, and the
worker leaves the group. Past the grace time, or at a second signal, what is left is abandoned
uncommitted. Before a rebalance takes partitions away, the batches in hand get `revoke_drain_s`
to finish; those that do are committed, the rest are never committed (the next owner replays them).
A batch Kafka hands over that cannot be read stops the worker the same way, after the batches
before it are committed, and `run` raises `UnreadableBatch`: nothing is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from worker.contracts.values import RawRecord
from worker.logs import get_logger
from worker.runtime.background import BackgroundLoop, RoundReport
from worker.runtime.batcher import MicroBatcher
from worker.runtime.batches import BatchReport, Polled, StageName, Stored, Totals
from worker.runtime.failpoints import failpoint
from worker.runtime.guard import DeadLetterGuard
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.pipeline import Chain, Pipeline
from worker.runtime.ports import Observer, Source, UnreadableBatch
from worker.runtime.retry import Abandoned
from worker.runtime.shutdown import Shutdown

log = get_logger("worker.runner")

IDLE_POLL_MS = 500
PAUSED_WAIT_S = 0.05
LAG_INTERVAL_S = 5.0
BACKGROUND_STOP_TIMEOUT_S = 15.0  # each background loop's last round at a clean stop (the relay's)
NOT_COMMITTED = "not_committed"  # a batch whose partitions a rebalance took away before it finished


class Runner:
    def __init__(
        self,
        source: Source,
        stages: Chain[Polled, Stored],
        batcher: MicroBatcher,
        *,
        depth: int,
        shutdown: Shutdown,
        revoke_drain_s: float,
        metrics: Observer,
        background: Sequence[BackgroundLoop] = (),
        on_close: Callable[[], None] = lambda: None,
        started_fields: Mapping[str, Any] | None = None,
        heartbeat: Heartbeat | None = None,
        guard: DeadLetterGuard | None = None,
    ) -> None:
        self.source = source
        self.stages = stages
        self.batcher = batcher
        self.depth = depth
        self.shutdown = shutdown
        self.revoke_drain_s = revoke_drain_s
        self.metrics = metrics
        self.background = list(background)  # started before the first poll, stopped after the last commit
        self.on_close = on_close
        self.started_fields = dict(started_fields or {})
        self.heartbeat = heartbeat or Heartbeat()  # /healthz reads it: beaten on every poll
        self.guard = guard  # trips on too many dead letters: nothing is committed from then on
        self.totals = Totals()
        self.abandoned = False
        self.unreadable: UnreadableBatch | None = None
        self.generation = 0  # bumped by every revoke: batches of an older one are never committed
        self._loop_ended = False
        self._lag_at = 0.0

    # --- the main thread ---------------------------------------------------------------------
    def run(self, until: Callable[[Totals], bool] | None = None) -> Totals:
        """Consume until a stop is requested (or `until(totals)`), then finish and leave the group."""
        log.info("worker_started", **self.started_fields, pipeline_depth=self.depth)
        self.pipeline = Pipeline(self.stages, self.depth)
        self.source.subscribe(self._on_revoke)
        for loop in self.background:
            loop.start(self._on_round)
        try:
            while not self.shutdown.requested.is_set() and not (until and until(self.totals)):
                self._commit_finished(wait_s=0)
                if self._guard_tripped():
                    self._hold()
                    continue
                if self.pipeline.full():
                    self._wait_for_room()
                    continue
                self._poll(self.batcher.time_left_ms() if self.batcher.pending else IDLE_POLL_MS)
                if self.batcher.ready():
                    self._submit()
                self._report_progress()
            if not self.shutdown.requested.is_set():
                self.shutdown.request("done")  # `until` was met: the drain gets the same deadline
            self._finish()
            if self.unreadable:
                raise self.unreadable
        except Abandoned:  # a stage gave up waiting for a dependency because the work was abandoned
            self.abandoned = True
        finally:
            self._loop_ended = True
            for loop in self.background:
                time_left = self.shutdown.deadline - self.shutdown.clock()
                loop.stop(final_round=not self.abandoned, timeout_s=max(min(BACKGROUND_STOP_TIMEOUT_S, time_left), 1.0))
            self.source.close()
            self.on_close()
            log.info("worker_stopped", **self.totals.log_fields(), abandoned=self.abandoned)
        return self.totals

    def _poll(self, wait_ms: int) -> None:
        started = time.perf_counter()
        self._fetch(wait_ms, self.batcher.room())
        self._busy(StageName.POLL, time.perf_counter() - started)
        failpoint("after_poll")

    def _fetch(self, wait_ms: int, max_records: int) -> None:
        try:
            self.batcher.add(self.source.poll(wait_ms, max_records))
            self.heartbeat.beat()  # every poll, the paused ones of an outage too: /healthz reads it
        except UnreadableBatch as exc:  # finish and commit what came before it, then stop
            log.error("batch_unreadable", where=exc.where, reason=exc.reason[:500])
            self.unreadable = exc
            self.shutdown.request("unreadable batch")

    def _submit(self) -> None:
        self.pipeline.submit(Polled(tuple(self.batcher.take()), self.generation))

    def _wait_for_room(self) -> None:
        """Every slot is taken (a slow stage or an outage): stop fetching, keep the group, wait.

        Partitions stay paused until a batch comes out; polls continue so the consumer keeps its
        membership (and may see a rebalance, whose callback drains the pipeline and whose new
        partitions are paused again on the next round).
        """
        try:
            while self.pipeline.full() and not self.shutdown.requested.is_set():
                self.source.pause_all()
                # Nothing is fetched while paused, except from a partition that a rebalance inside
                # this very poll assigned: such records join the next batch, never the floor.
                self._fetch(0, 1)
                self._commit_finished(wait_s=PAUSED_WAIT_S)
        finally:
            self.source.resume_all()

    def _finish(self) -> None:
        """Submit the batch being gathered and commit batches as they finish, until none is left or
        the shutdown deadline passes; then what is left is abandoned (replayed after a restart)."""
        if self.batcher.pending and not self._guard_tripped():
            self._submit()
        while self.pipeline.in_flight:
            if self.shutdown.expired():
                self.abandoned = True
                log.warning("batch_abandoned", batches_in_flight=self.pipeline.in_flight)
                return
            self._commit_finished(wait_s=PAUSED_WAIT_S)
        self._loop_ended = True
        self.pipeline.close()

    def _commit_finished(self, wait_s: float) -> None:
        for stored in self.pipeline.finished(wait_s):
            if stored.polled.generation != self.generation or self._stopped_by_guard(stored):
                self._account(stored, NOT_COMMITTED, 0.0)
                continue
            started = time.perf_counter()
            committed = self.source.commit(stored.polled.records)
            commit_s = time.perf_counter() - started
            failpoint("after_commit")
            self._account(stored, committed, commit_s)

    def _stopped_by_guard(self, stored: Stored) -> bool:
        """Whether the dead-letter guard is tripped, or trips on this batch: then it is not committed."""
        if self.guard is None:
            return False
        if self.guard.tripped:
            return True
        dead = {(r.record.partition, r.record.offset) for r in stored.inferred.rejections}
        dead |= {(r.record.partition, r.record.offset) for r in stored.outcome.refused}
        trip = self.guard.observe(
            [(record.partition, (record.partition, record.offset) in dead) for record in stored.polled.records]
        )
        if trip is None:
            return False
        first_uncommitted: dict[str, int] = {}
        for record in stored.polled.records:
            first_uncommitted[str(record.partition)] = min(
                record.offset, first_uncommitted.get(str(record.partition), record.offset)
            )
        log.error(
            "dead_letter_guard_tripped",
            reason=trip.reason,
            topic=stored.polled.records[0].topic,
            first_uncommitted=first_uncommitted,
        )
        self.metrics.set_guard_tripped()
        return True

    def _guard_tripped(self) -> bool:
        return self.guard is not None and self.guard.tripped is not None

    def _hold(self) -> None:
        """Tripped: keep the partitions and the group membership, fetch nothing, commit nothing."""
        self.source.pause_all()
        self._fetch(
            IDLE_POLL_MS, 1
        )  # a partition a rebalance assigns inside the poll may give a record: kept, never submitted

    def _report_progress(self) -> None:
        """Pipeline occupancy now, and consumer lag every LAG_INTERVAL_S."""
        self.metrics.set_in_flight(self.pipeline.in_flight)
        if time.monotonic() - self._lag_at >= LAG_INTERVAL_S:
            self._lag_at = time.monotonic()
            self.metrics.set_lag(self.source.lag())

    # --- before a rebalance (on the consumer's network thread, while the main thread polls) ---
    def _on_revoke(self) -> list[RawRecord]:
        """Finish the batches in hand within `revoke_drain_s`; hand back the records of those that did.

        Their offsets are committed by the source before the group moves on. Batches still in
        flight at the deadline (a stage waiting out an outage, say) belong to the old assignment
        from now on: they are still stored when they can be, but never committed.
        After the loop has ended (a clean stop drained everything; an abandon must commit
        nothing) it hands back nothing.
        """
        if self._loop_ended:
            return []
        started = time.monotonic()
        deadline = min(started + self.revoke_drain_s, self.shutdown.deadline)
        if self.batcher.pending:
            self._submit()
        records: list[RawRecord] = []
        try:
            while self.pipeline.in_flight and time.monotonic() < deadline and not self.shutdown.abandoned.is_set():
                for stored in self.pipeline.finished(PAUSED_WAIT_S):
                    current = stored.polled.generation == self.generation and not self._stopped_by_guard(stored)
                    self._account(stored, "on_revoke" if current else NOT_COMMITTED, 0.0)
                    if current:
                        records += stored.polled.records
        finally:
            self.generation += 1
        if self.pipeline.in_flight:
            log.warning(
                "revoke_drain_incomplete",
                batches_left=self.pipeline.in_flight,
                waited_s=round(time.monotonic() - started, 2),
            )
        return records

    # --- accounting: one report per batch feeds the totals, the log line and the metrics -----
    def _account(self, stored: Stored, committed: Mapping[str, int] | str, commit_s: float) -> None:
        report = BatchReport.of(stored, committed, commit_s)
        self.totals.add(report)
        self.metrics.observe(report)
        for rejection in report.dead_letters:
            record = rejection.record
            log.warning(
                "event_dead_lettered",
                error_class=str(rejection.error_class),
                reason=rejection.message,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        if report.duplicates:
            log.warning(
                "duplicate_events_skipped", event_ids=list(report.duplicates[:50]), count=len(report.duplicates)
            )
        log.info("batch_stored", **report.log_fields())

    def _busy(self, stage: StageName, seconds: float) -> None:
        """Time spent outside any batch's report (polling)."""
        self.totals.stage_s[stage] += seconds
        self.metrics.observe_busy(stage, seconds)

    def _on_round(self, report: RoundReport) -> None:  # called on a background loop's thread
        self.totals.stage_s[report.stage] += report.busy_s
        for kind, count in report.published.items():
            self.totals.published[kind] = self.totals.published.get(kind, 0) + count
        self.metrics.observe_round(report)

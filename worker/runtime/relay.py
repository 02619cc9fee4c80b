"""Relay: publish pending outbox rows (escalations, and results when a results topic is set), mark them sent.

Rows are claimed with `FOR UPDATE SKIP LOCKED`, so several workers can relay at once without
sending the same row twice in the normal case. A row is marked published only after the broker
acknowledged it; if Kafka is down the rows stay pending and are retried on the next call.
Delivery is at least once: consumers de-duplicate on the message key (the event_id).
`RelayLoop` runs the relay in its own thread, a round every RELAY_INTERVAL_S until nothing is
pending; at a clean stop it publishes what is left, an abandoned worker leaves that to the next.
Every PRUNE_INTERVAL_S (and once at start) it also does the housekeeping: it deletes rows
published longer ago than TRIAGE_OUTBOX_RETENTION, a bounded number at a time (a row not yet
published is never deleted), and keeps the results' weekly partitions (see retention). Every
FOLD_INTERVAL_S it folds the store's pending rollup counts into the hourly rollups (see rollups).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from sqlalchemy import Engine, Text, cast, select, text, update
from sqlalchemy.exc import DBAPIError

from worker.contracts.tables import escalation_outbox
from worker.logs import get_logger
from worker.runtime.delivery import await_delivery
from worker.runtime.failpoints import failpoint
from worker.runtime.retention import Retention
from worker.runtime.rollups import FOLD_INTERVAL_S, fold

log = get_logger("worker.relay")

RELAY_INTERVAL_S = 0.25
PRUNE_INTERVAL_S = 60.0
PRUNE_BATCH = 10_000
PRUNE = """
    DELETE FROM escalation_outbox WHERE id IN (
        SELECT id FROM escalation_outbox
        WHERE published_at IS NOT NULL AND published_at < :before
        LIMIT :limit FOR UPDATE SKIP LOCKED
    )
"""


class EscalationRelay:
    def __init__(
        self,
        engine: Engine,
        producer: KafkaProducer,
        topic: str,
        *,
        results_topic: str | None = None,
        retention: timedelta | None = None,
        results: Retention | None = None,
        batch_size: int = 500,
        timeout_s: float = 10.0,
    ) -> None:
        self.engine = engine
        self.producer = producer
        # Outbox kind -> topic. Result rows left from a time with a results topic wait for one.
        self.topics = {"escalation": topic} | ({"result": results_topic} if results_topic else {})
        self.retention = retention  # of published outbox rows
        self.results = results  # the results' partitions, kept by the same housekeeping
        self.batch_size = batch_size
        self.timeout_s = timeout_s

    def prune(self) -> int:
        """Delete rows published longer ago than the retention, at most PRUNE_BATCH; returns how many."""
        if self.retention is None:
            return 0
        with self.engine.begin() as connection:
            before = datetime.now(timezone.utc) - self.retention
            return connection.execute(text(PRUNE), {"before": before, "limit": PRUNE_BATCH}).rowcount

    def publish_pending(self) -> tuple[int, int]:
        """Publish one batch of pending rows; returns (published, failed)."""
        outbox = escalation_outbox.c
        with self.engine.begin() as connection:
            rows = connection.execute(
                # The payload as JSONB's own text: sent as is, never parsed and re-serialised here.
                select(outbox.id, outbox.event_id, outbox.kind, cast(outbox.payload, Text).label("payload"))
                .where(outbox.published_at.is_(None), outbox.kind.in_(list(self.topics)))
                .order_by(outbox.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0, 0
            pending: list[tuple[int, FutureRecordMetadata | None]] = []
            send_error = None
            for row in rows:
                try:
                    future = self.producer.send(
                        self.topics[row.kind],
                        key=row.event_id.encode("utf-8"),
                        value=row.payload.encode("utf-8"),
                    )
                except KafkaError as exc:  # broker unreachable: stop here, the rest stay pending
                    send_error = f"{type(exc).__name__}: {exc}"[:1000]
                    pending += [(r.id, None) for r in rows[len(pending) :]]
                    break
                pending.append((row.id, future))
            sent, failed, last_error = await_delivery(self.producer, pending, self.timeout_s)
            failpoint("during_relay")
            last_error = last_error or send_error
            now = datetime.now(timezone.utc)
            if sent:
                connection.execute(
                    update(escalation_outbox)
                    .where(outbox.id.in_(sent))
                    .values(published_at=now, attempts=outbox.attempts + 1)
                )
            if failed:
                connection.execute(
                    update(escalation_outbox)
                    .where(outbox.id.in_(failed))
                    .values(attempts=outbox.attempts + 1, last_error=last_error)
                )
        return len(sent), len(failed)


class RelayLoop:
    """The relay in a thread of its own; `on_round(published, busy_s)` reports every round."""

    def __init__(
        self, relay: EscalationRelay, on_round: Callable[[int, float], None], interval_s: float = RELAY_INTERVAL_S
    ) -> None:
        self.relay = relay
        self.on_round = on_round
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._final_round = True
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, final_round: bool, timeout_s: float) -> None:
        """End the loop; with `final_round`, publish what is pending first (waiting up to `timeout_s`)."""
        self._final_round = final_round
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        self.prune()  # at start too: the partitions for this week and the next
        pruned_at = folded_at = time.monotonic()
        while not self._stop.wait(self.interval_s):
            self.publish_all()
            if time.monotonic() - folded_at >= FOLD_INTERVAL_S:
                folded_at = time.monotonic()
                self.fold_rollups()
            if time.monotonic() - pruned_at >= PRUNE_INTERVAL_S:
                pruned_at = time.monotonic()
                self.prune()
        if self._final_round:
            self.publish_all()

    def prune(self) -> None:
        """Housekeeping: a bounded prune of published rows, next week's result partition, expired
        result weeks. Errors are logged, not raised (the next round tries again)."""
        try:
            pruned = self.relay.prune()
            if pruned:
                log.info("outbox_pruned", count=pruned)
            if self.relay.results is not None:
                self.relay.results.ensure_partitions()
                dropped = self.relay.results.drop_expired()
                if dropped.partitions or dropped.ids:
                    log.info("results_expired", partitions=dropped.partitions, ids_forgotten=dropped.ids)
        except Exception as exc:  # noqa: BLE001 - housekeeping; publishing must go on
            log.warning("housekeeping_failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def fold_rollups(self) -> None:
        """The pending rollup counts into the hourly rollups; errors are logged, not raised."""
        try:
            fold(self.relay.engine)
        except Exception as exc:  # noqa: BLE001 - the counts stay pending, exact in the live view
            log.warning("rollup_fold_failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def publish_all(self) -> None:
        """Publish outbox rows until none is pending or a round fails; errors are logged, not raised."""
        started = time.perf_counter()
        total = 0
        try:
            while True:
                published, failed = self.relay.publish_pending()
                total += published
                if published:
                    log.info("escalations_published", count=published, failed=failed)
                if failed:
                    log.warning("escalations_unpublished", count=failed)
                if published == 0 or failed:
                    return
        except DBAPIError as exc:
            log.warning("relay_failed", error=type(exc.orig).__name__)
        except Exception as exc:  # noqa: BLE001 - the outbox keeps the rows; try again next round
            log.error("relay_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        finally:
            self.on_round(total, time.perf_counter() - started)

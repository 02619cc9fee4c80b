"""Relay: publish the pending outbox rows to their topics and mark them published. Nothing else.

The store writes an outbox row of kind `escalation` for every escalated result and, with a results
topic, one of kind `result` for every result, in the same transaction as the results. The relay
claims pending rows (see ports.Outbox: locked, so several workers can relay at once without sending
the same row twice in the normal case), sends each to its kind's topic keyed by event id, with a
`triage.event_id` header and the input headers kept for it (TRIAGE_PASSTHROUGH_HEADERS: trace
context), and marks it published only after the broker acknowledged it. If Kafka is down the rows
stay pending and are retried on the next round. Delivery is at least once: consumers de-duplicate
on the message key (the event_id). Rows of a kind with no topic (results left from a time when a
results topic was set) wait for one.

A row the broker refuses for good (too large for the topic, or invalid) is parked with the broker's
reason (migration 0010), logged as `outbox_row_parked`, counted (`triage_outbox_parked`) and alerted
on, and the rows behind it go on: it never heads every batch again.

Each row names its topic (migration 0008), and a relay publishes only rows for its own topics, so
two deployments on one database never publish each other's rows. With categories routed by topic
(TRIAGE_CATEGORIES, `routing: topic`), an escalation row names its category's topic, and each such
topic is a lane of its own. Each lane is published on its own: a lane whose topic fails (a results
topic that does not exist, say) backs off, up to KIND_BACKOFF_MAX_S, while the others go on every
round. The relay runs as a background loop (see background), a round every RELAY_INTERVAL_S and
once more at a clean stop; deleting published rows is housekeeping's job (postgres/housekeeping).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from worker.contracts.wire import SCHEMA_HEADER, EscalationEvent, TriageResult, version_of
from worker.logs import get_logger
from worker.runtime.background import Periodic
from worker.runtime.batches import StageName
from worker.runtime.failpoints import failpoint
from worker.runtime.ports import Message, Outbox, Publisher
from worker.runtime.retry import Unavailable

log = get_logger("worker.relay")

RELAY_INTERVAL_S = 0.25
KIND_BACKOFF_MAX_S = 30.0
EVENT_ID_HEADER = "triage.event_id"
# How each outbox kind is named in logs: `escalations_published`, `results_published`, ...
PLURAL = {"escalation": "escalations", "result": "results", "reroute": "reroutes"}
# A reroute is an escalation sent again to the team a reviewer tagged it for (`ack --category`).
SCHEMAS = {
    "escalation": version_of(EscalationEvent),
    "result": version_of(TriageResult),
    "reroute": version_of(EscalationEvent),
}


@dataclass(frozen=True)
class Delivery:
    """One batch of outbox rows of one kind handed to the broker: how many it acknowledged, how many not
    (tried again), how many it refuses for good (parked)."""

    published: int
    failed: int
    parked: int = 0


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        topics: Mapping[str, str],
        *,
        routes: Sequence[str] = (),
        batch_size: int = 500,
        on_delivered: Callable[[str, float], None] = lambda kind, seconds: None,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        # A lane is one kind of row bound for one topic: each kind's topic, and with categories routed by
        # topic (`routes`) one escalation lane per category topic, so a failing team topic backs off alone.
        self.topics = dict(topics)  # lane -> topic; a kind's own lane is named after it
        self.kinds = {kind: kind for kind in topics}  # lane -> outbox kind
        routed_kinds = [kind for kind in ("escalation", "reroute") if kind in topics]
        for kind in routed_kinds:
            for topic in sorted(set(routes) - {topics[kind]}):
                self.topics[f"{kind}@{topic}"] = topic
                self.kinds[f"{kind}@{topic}"] = kind
        self.batch_size = batch_size
        self.on_delivered = on_delivered  # (kind, seconds since the event's Kafka timestamp) per acknowledged row
        self._failures = dict.fromkeys(self.topics, 0)  # consecutive failed rounds, by lane
        self._next_try = dict.fromkeys(self.topics, 0.0)  # time.monotonic() a failing lane is tried again

    def publish_pending(self, lane: str) -> Delivery:
        """Publish one batch of pending rows of `lane` (a kind, or `escalation@<topic>`; oldest first)."""
        topic, kind = self.topics[lane], self.kinds[lane]
        with self.outbox.claim(kind, topic, self.batch_size) as claim:
            if not claim.rows:
                return Delivery(0, 0)
            messages = [
                Message(
                    row.id,
                    row.event_id.encode("utf-8"),
                    row.payload.encode("utf-8"),
                    message_headers(row.event_id, kind, row.headers),
                )
                for row in claim.rows
            ]
            published = self.publisher.publish(topic, messages)
            failpoint("during_relay")
            now = datetime.now(timezone.utc)
            acknowledged = set(published.delivered)
            for row in claim.rows:
                if row.id in acknowledged and row.source_time is not None:
                    self.on_delivered(kind, (now - row.source_time).total_seconds())
            claim.published(published.delivered, now)
            claim.failed(published.undelivered, published.last_error)
            if published.refused:
                claim.parked(dict(published.refused), now)
                by_id = {row.id: row.event_id for row in claim.rows}
                for row_id, reason in published.refused:
                    log.error("outbox_row_parked", kind=kind, event_id=by_id[row_id], reason=reason[:300])
        return Delivery(len(published.delivered), len(published.undelivered), len(published.refused))

    def publish_all(self) -> dict[str, int]:
        """Publish every lane whose turn it is; returns what was published, by kind (lanes summed)."""
        published: dict[str, int] = {}
        for kind in self.topics:
            if time.monotonic() < self._next_try[kind]:
                continue
            count, ok = self._publish_kind(kind)
            published[self.kinds[kind]] = published.get(self.kinds[kind], 0) + count
            self._failures[kind] = 0 if ok else self._failures[kind] + 1
            delay = 0.0 if ok else min(RELAY_INTERVAL_S * 2 ** self._failures[kind], KIND_BACKOFF_MAX_S)
            self._next_try[kind] = time.monotonic() + delay
        return published

    def _publish_kind(self, kind: str) -> tuple[int, bool]:
        """Batches of lane `kind` until none is pending or one fails; returns (published, all went well).

        Errors are logged, not raised: the outbox keeps the rows for the next try."""
        name, total = PLURAL.get(self.kinds[kind], kind), 0
        try:
            while True:
                delivery = self.publish_pending(kind)
                total += delivery.published
                if delivery.published:
                    log.info(f"{name}_published", count=delivery.published, failed=delivery.failed)
                if delivery.failed:
                    log.warning(f"{name}_unpublished", count=delivery.failed, topic=self.topics[kind])
                    return total, False
                if not delivery.published and not delivery.parked:
                    return total, True
        except Unavailable as exc:  # the database is away: the outbox keeps the rows for the next round
            log.warning("relay_failed", kind=kind, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the outbox keeps the rows; try again next round
            log.error("relay_failed", kind=kind, error=f"{type(exc).__name__}: {exc}"[:500])
        return total, False


def message_headers(event_id: str, kind: str, kept: Mapping[str, str] | None) -> tuple[tuple[str, bytes], ...]:
    """Every message names its event (`triage.event_id`) and its schema's version (`triage.schema`), and
    carries the headers kept with its row: the input's (TRIAGE_PASSTHROUGH_HEADERS), and what the store
    cut to fit (see postgres/payloads)."""
    headers = [(EVENT_ID_HEADER, event_id.encode("utf-8")), (SCHEMA_HEADER, SCHEMAS[kind].encode())]
    headers += [(name, value.encode("utf-8")) for name, value in (kept or {}).items()]
    return tuple(headers)


def relay_loop(relay: OutboxRelay, interval_s: float = RELAY_INTERVAL_S) -> Periodic:
    """The relay as a background loop; at a clean stop it publishes what is left."""
    return Periodic("relay", StageName.RELAY, relay.publish_all, interval_s, last_round=relay.publish_all)

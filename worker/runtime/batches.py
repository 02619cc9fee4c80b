"""Batches: the values one micro-batch takes on its way through the stages, and the report it ends in.

    Polled (runner) -> Decoded (decode) -> Tokenized (tokenize) -> Inferred (infer) -> Stored (store)
    -> BatchReport (runner, once the offsets are committed)

Every value is frozen: a stage builds the next one and adds its own time to `timings`. The
report feeds the totals, the `batch_stored` log line and the metrics, so the three always agree.
`StageName` is the one set of stage names used by timings, logs, metrics and the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from worker.contracts.values import ClassifiedItem, FeedbackItem, RawRecord, Rejection, StoreOutcome


class StageName(str, Enum):
    POLL = "poll"  # main thread: fetching records from Kafka
    DECODE = "decode"  # bytes -> valid events or dead-letter reasons
    TOKENIZE = "tokenize"  # texts -> padded forward passes
    INFER = "infer"  # the model and the triage policy
    STORE = "store"  # dead letters sent, results and outbox rows in one transaction
    COMMIT = "commit"  # main thread: offsets committed
    RELAY = "relay"  # relay thread: outbox rows -> escalation and results topics
    HOUSEKEEPING = "housekeeping"  # housekeeping thread: rollup folds, outbox prune, partitions

    def __str__(self) -> str:
        return self.value


Timings = tuple[tuple[StageName, float], ...]
E = TypeVar("E")  # the model's encoded passes (see worker.contracts.inference.Model)


def timed(timings: Timings, stage: StageName, started: float) -> Timings:
    """`timings` with `stage` added, busy from `started` (a perf_counter reading) until now."""
    return (*timings, (stage, time.perf_counter() - started))


@dataclass(frozen=True)
class Polled:
    records: tuple[RawRecord, ...]
    generation: int  # the partition assignment it was polled under (see Runner._on_revoke)
    submitted_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Decoded:
    polled: Polled
    items: tuple[FeedbackItem, ...]
    rejections: tuple[Rejection, ...]
    timings: Timings


@dataclass(frozen=True)
class Tokenized(Generic[E]):
    decoded: Decoded
    encoded: E  # the model's encoded passes (worker.model.encoding.Encoded for the real one), opaque here
    timings: Timings


@dataclass(frozen=True)
class Inferred:
    polled: Polled
    classified: tuple[ClassifiedItem, ...]
    rejections: tuple[Rejection, ...]  # decode's, plus texts the model could not take
    padded_tokens: int
    queue_wait_s: float  # from leaving the batcher to the model starting on it
    timings: Timings


@dataclass(frozen=True)
class Stored:
    inferred: Inferred
    outcome: StoreOutcome
    timings: Timings

    @property
    def polled(self) -> Polled:
        return self.inferred.polled


@dataclass(frozen=True)
class BatchReport:
    """Everything known about one finished batch; built once, read by totals, log and metrics."""

    events: int
    classified: int
    stored: int
    escalated: int
    duplicates: tuple[str, ...]
    dead_letters: tuple[Rejection, ...]
    audited: int  # audit-sample items sent to the reviewers (not escalations)
    padded_tokens: int
    queue_wait_s: float
    stage_s: Mapping[StageName, float]
    record_timestamps_ms: tuple[int, ...]  # Kafka timestamps of the records, for end-to-end latency
    timestamps_dropped: int  # events stored without their Kafka timestamp, which no datetime could hold
    committed: Mapping[str, int] | str  # offsets committed, "on_revoke", or "not_committed"
    finished_at_ms: float
    routed: Mapping[str, int] = field(default_factory=dict)  # escalations by the category they went to

    @classmethod
    def of(cls, stored: Stored, committed: Mapping[str, int] | str, commit_s: float) -> BatchReport:
        inferred, records = stored.inferred, stored.polled.records
        stage_s: dict[StageName, float] = {}
        for stage, seconds in (*stored.timings, (StageName.COMMIT, commit_s)):
            stage_s[stage] = stage_s.get(stage, 0.0) + seconds
        return cls(
            events=len(records),
            classified=len(inferred.classified),
            stored=stored.outcome.inserted,
            escalated=stored.outcome.escalations,
            audited=stored.outcome.audits,
            duplicates=tuple(stored.outcome.duplicates),
            dead_letters=(*inferred.rejections, *(refusal.rejection() for refusal in stored.outcome.refused)),
            padded_tokens=inferred.padded_tokens,
            queue_wait_s=inferred.queue_wait_s,
            stage_s=stage_s,
            record_timestamps_ms=tuple(r.timestamp_ms for r in records if r.timestamp_ms is not None),
            timestamps_dropped=sum(
                1 for c in inferred.classified if c.item.kafka_time is None and (c.item.record.timestamp_ms or -1) >= 0
            ),
            committed=committed,
            finished_at_ms=time.time() * 1000,
            routed=_routed(inferred.classified, stored.outcome),
        )

    def log_fields(self) -> dict[str, Any]:
        """The fields of the `batch_stored` log line."""
        return {
            "events": self.events,
            "stored": self.stored,
            "escalated": self.escalated,
            **({"audited": self.audited} if self.audited else {}),
            "dead_lettered": len(self.dead_letters),
            "duplicates": len(self.duplicates),
            "padded_tokens": self.padded_tokens,
            **({"timestamps_dropped": self.timestamps_dropped} if self.timestamps_dropped else {}),
            **{f"{stage}_ms": round(seconds * 1000, 2) for stage, seconds in self.stage_s.items()},
            "committed": self.committed,
        }


@dataclass
class Totals:
    """What a runner has done so far, summed from its batch reports (and the relay's rounds)."""

    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    escalated: int = 0
    audited: int = 0
    dead_lettered: int = 0
    timestamps_dropped: int = 0
    published: dict[str, int] = field(default_factory=dict)  # outbox rows published, by kind (escalation, result)
    batches: int = 0
    # Seconds each stage was busy. Stages run in parallel, so these add up to more than the wall time.
    stage_s: dict[StageName, float] = field(default_factory=lambda: dict.fromkeys(StageName, 0.0))

    def add(self, report: BatchReport) -> None:
        self.consumed += report.events
        self.stored += report.stored
        self.duplicates += len(report.duplicates)
        self.escalated += report.escalated
        self.audited += report.audited
        self.dead_lettered += len(report.dead_letters)
        self.timestamps_dropped += report.timestamps_dropped
        self.batches += 1
        for stage, seconds in report.stage_s.items():
            self.stage_s[stage] += seconds

    def log_fields(self) -> dict[str, Any]:
        """The fields of the `worker_stopped` log line."""
        counts = {k: v for k, v in vars(self).items() if k not in ("stage_s", "published")}
        published = {f"{kind}s_published": count for kind, count in sorted(self.published.items())}
        return {**counts, **published, "stage_s": {str(k): round(v, 3) for k, v in self.stage_s.items()}}


def _routed(classified: tuple[ClassifiedItem, ...], outcome: StoreOutcome) -> dict[str, int]:
    """Escalations stored in this batch, by the category they went to (replays and refusals left out)."""
    skipped = set(outcome.duplicates) | {r.event_id for r in outcome.refused}
    counts: dict[str, int] = {}
    for item in classified:
        route = item.decision.route
        if item.decision.escalate and route is not None and item.item.event_id not in skipped:
            counts[route.category] = counts.get(route.category, 0) + 1
    return counts

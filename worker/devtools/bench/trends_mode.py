"""Trends mode: do trend queries stay fast as the results grow, and what do the rollups cost the store?

On an embedded PostgreSQL (or TRIAGE_DATABASE_URL with `--use-database`), it seeds results in
steps up to each size in `--rows` (a year of feedback over 50 products, 5 sources and 2 models,
stored without text; 90% of the escalations older than a day acknowledged), through the same
rollup trigger the store fires, folding the pending counts after each chunk as the worker does.
Then it writes `--pending-events` more through the store and leaves their counts pending (what a
worker at 10,000 events/s leaves between two folds), times the trend queries of worker/docs/trends.md and the
7-day `report` (median of 5 runs each). The ratio between the largest and the smallest size shows
whether a query's time grows with the rows. Last, it writes the same micro-batches through the
store with the rollup trigger enabled and disabled, in blocks that take turns; an enabled block
ends with a fold, timed with it. It prints the throughput ratio.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord
from worker.ops import trends
from worker.runtime.postgres import rollups
from worker.runtime.postgres.store import ResultStore
from worker.runtime.triage import TriagePolicy

DOCS = Path(__file__).resolve().parents[2] / "docs"  # the trend queries are the ones worker/docs/trends.md gives
QUERY = re.compile(r"```sql\n-- query: ([\w-]+)[^\n]*\n(.*?)```", re.S)
SEED_CHUNK = 500_000
SEED = """
    insert into feedback_results (event_id, label, score, negative_prob, escalated, escalation_reason, model,
        source, product, created_at, processed_at, kafka_topic, kafka_partition, kafka_offset,
        acknowledged_at, acknowledged_by)
    select 'bench-' || i, label, score, case when label = 'negative' then score else 1 - score end,
           label = 'negative' or score < 0.6,
           case when label = 'negative' then 'negative' when score < 0.6 then 'low_confidence' end,
           'model-' || (i % 2), 'source-' || (i % 5), 'product-' || (i % 50), at, at + interval '2 seconds',
           'feedback.events', i % 12, i,
           case when (label = 'negative' or score < 0.6) and i % 10 <> 0 and at < now() - interval '1 day'
                then at + (i % 240) * interval '1 minute' end,
           case when (label = 'negative' or score < 0.6) and i % 10 <> 0 and at < now() - interval '1 day'
                then 'bench' end
    from (
        select i, case when random() < 0.35 then 'negative' else 'positive' end as label,
               0.5 + random() / 2 as score, now() - random() * interval '365 days' as at
        from generate_series(:lo, :hi - 1) as i
    ) as seeded
"""
ROLLUP_TRIGGER = "feedback_results_rollup"


def readme_queries() -> dict[str, str]:
    queries = dict(QUERY.findall((DOCS / "trends.md").read_text()))
    queries.pop("review-agreement", None)  # on reviewed rows, which these seeds have none of
    return queries


def bench_trends(
    database_url: str, sizes: Sequence[int], *, store_batches: int = 1200, pending_events: int = 10_000
) -> dict[str, Any]:
    engine = create_engine(database_url)
    queries = readme_queries()
    steps = []
    seeded = 0
    try:
        for size in sorted(sizes):
            started = time.perf_counter()
            seeded = _seed(engine, seeded, size)
            seed_s = time.perf_counter() - started
            pending_rows = _leave_pending(engine, pending_events, f"pending-{size}")
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                for table in ("feedback_results", "sentiment_rollup", "sentiment_rollup_pending"):
                    connection.execute(text(f"vacuum analyze {table}"))
            timings = {name: _median_ms(engine, _query(sql)) for name, sql in queries.items()}
            timings["report-7d-by-product"] = _median_ms(engine, lambda _: _report(engine))
            rollup_rows = engine.connect().execute(text("select count(*) from sentiment_rollup")).scalar_one()
            steps.append(
                {
                    "rows": size,
                    "seed_s": round(seed_s, 1),
                    "rollup_rows": rollup_rows,
                    "pending_rollup_rows": pending_rows,
                    "ms": timings,
                }
            )
        store = _store_ratio(engine, store_batches)
    finally:
        engine.dispose()
    first, last = steps[0]["ms"], steps[-1]["ms"]
    return {
        "mode": "trends",
        "steps": steps,
        "growth": {name: round(last[name] / max(first[name], 0.01), 2) for name in first},
        "slowest_ms_at_largest": max(last.values()),
        **store,
    }


def _seed(engine: Engine, have: int, want: int) -> int:
    with engine.begin() as connection:  # a weekly partition for every week of the seeded year
        connection.execute(
            text(
                "select feedback_results_ensure_week(week::date) from generate_series("
                "now() - interval '371 days', now(), interval '1 week') as week"
            )
        )
    while have < want:
        upto = min(have + SEED_CHUNK, want)
        with engine.begin() as connection:
            connection.execute(text(SEED), {"lo": have, "hi": upto})
        rollups.fold(engine)
        have = upto
    return have


def _leave_pending(engine: Engine, events: int, prefix: str) -> int:
    """Store `events` more results in micro-batches of 64 and leave their counts pending; how many rows wait."""
    rng = random.Random(7)
    policy = TriagePolicy(0.6)
    store = ResultStore(engine)
    for start in range(0, events, 64):
        store.write([_result(rng, policy, f"{prefix}-{n}") for n in range(start, min(start + 64, events))])
    with engine.connect() as connection:
        return int(connection.execute(text("select count(*) from sentiment_rollup_pending")).scalar_one())


def _query(sql: str) -> Callable[[Connection], object]:
    return lambda connection: connection.execute(text(sql)).all()


def _median_ms(engine: Engine, query: Callable[[Any], Any], runs: int = 5) -> float:
    times = []
    with engine.connect() as connection:
        query(connection)  # warm the cache and the plan
        for _ in range(runs):
            started = time.perf_counter()
            query(connection)
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def _run_sql(sql: str) -> Callable[[Any], Any]:
    return lambda connection: connection.execute(text(sql)).all()


def _report(engine: Engine) -> None:
    trends.trend_rows(engine, timedelta(days=7), "product")
    trends.daily_points(engine, timedelta(days=7), "product")


def _store_ratio(engine: Engine, batches: int, block: int = 100) -> dict[str, Any]:
    """The store's events/s with the rollup trigger on and off: blocks of `block` batches take turns,
    the first batch of each block (re-planned after the trigger changed) is not timed, and an
    enabled block ends with a timed fold of what it left pending: 6,400 events a fold. The worker
    folds every FOLD_INTERVAL_S (1 s), so it folds that many at 6,400 events/s; slower, it folds
    fewer per fold, and each key is summed fewer times per fold."""
    rng = random.Random(5)
    policy = TriagePolicy(0.6)
    store = ResultStore(engine)
    seconds = {"on": 0.0, "off": 0.0}
    events = {"on": 0, "off": 0}
    rollups.fold(engine)
    for n in range(batches):
        mode = "on" if (n // block) % 2 == 0 else "off"
        batch = [_result(rng, policy, f"store-{n}-{i}") for i in range(64)]
        if n % block == 0:
            with engine.begin() as connection:
                state = "enable" if mode == "on" else "disable"
                connection.execute(text(f"alter table feedback_results {state} trigger {ROLLUP_TRIGGER}"))
        started = time.perf_counter()
        store.write(batch)
        if mode == "on" and n % block == block - 1:
            rollups.fold(engine)
        if n % block:
            seconds[mode] += time.perf_counter() - started
            events[mode] += len(batch)
    with engine.begin() as connection:
        connection.execute(text(f"alter table feedback_results enable trigger {ROLLUP_TRIGGER}"))
    on, off = events["on"] / seconds["on"], events["off"] / seconds["off"]
    return {"store_events_per_s_rollups_on": round(on), "store_events_per_s_rollups_off": round(off),
            "store_ratio_on_to_off": round(on / off, 3)}  # fmt: skip


def _result(rng: random.Random, policy: TriagePolicy, event_id: str) -> ClassifiedItem:
    negative = rng.random() < 0.35
    score = 0.5 + rng.random() / 2
    prediction = Prediction("negative" if negative else "positive", score, score if negative else 1 - score, "X")
    item = FeedbackItem(
        record=RawRecord("feedback.events", 0, 0, None, b"{}"),
        event_id=event_id,
        text="a review of about the usual length " * 8,
        source=f"source-{rng.randrange(5)}",
        product=f"product-{rng.randrange(50)}",
        created_at=datetime.now(timezone.utc) - timedelta(minutes=rng.randrange(120)),
    )
    return ClassifiedItem(item, prediction, policy.decide(prediction), f"model-{rng.randrange(2)}", 1.0, 64)

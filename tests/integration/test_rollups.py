"""The hourly rollups equal a GROUP BY over the raw results, whatever the order of writes: random
batches, replays, late events, acknowledgements, two writers at once, folds while they write, and
raw rows deleted. Both before a fold (the live view sums pending and folded counts) and after."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from tests.services import rows
from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord
from worker.ops import migrate
from worker.ops.acks import acknowledge
from worker.runtime.postgres import rollups
from worker.runtime.postgres.store import ResultStore
from worker.runtime.triage import TriagePolicy

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)
RAW_GROUP_BY = """
    select date_trunc('hour', event_time, 'UTC') as hour, source, product, model,
           count(*) as total,
           count(*) filter (where label = 'negative') as negatives,
           count(*) filter (where escalated) as escalations,
           count(*) filter (where escalation_reason = 'low_confidence') as low_confidence_escalations,
           count(*) filter (where escalated and acknowledged_at is null) as open_escalations,
           count(*) filter (where score < 0.60) as scores_under_060,
           round(sum(score)::numeric, 6) as score_sum
    from feedback_results group by 1, 2, 3, 4 order by 1, 2, 3, 4
"""
LIVE = """
    select hour, source, product, model, sum(total), sum(negatives), sum(escalations),
           sum(low_confidence_escalations), sum(open_escalations), sum(scores_under_060),
           round(sum(score_sum)::numeric, 6)
    from sentiment_rollup_live group by 1, 2, 3, 4 having sum(total) > 0 order by 1, 2, 3, 4
"""
FOLDED = """
    select hour, source, product, model, total, negatives, escalations, low_confidence_escalations,
           open_escalations, scores_under_060, round(score_sum::numeric, 6)
    from sentiment_rollup where total > 0 order by 1, 2, 3, 4
"""


def item(rng: random.Random, n: int, *, late: bool = False) -> ClassifiedItem:
    negative = rng.random() < 0.4
    score = rng.uniform(0.5, 1.0)
    prediction = Prediction("negative" if negative else "positive", score, score if negative else 1 - score, "X")
    hours_ago = rng.randint(24 * 20, 24 * 40) if late else rng.randint(0, 72)
    feedback = FeedbackItem(
        record=RawRecord("feedback.events", 0, n, None, b"{}"),
        event_id=f"e-{n}",
        text="t",
        source=rng.choice(["survey", "zendesk", "app-store", None]),
        product=rng.choice(["web", "mobile", "api", "desk", None]),
        created_at=None if rng.random() < 0.1 else NOW - timedelta(hours=hours_ago, minutes=rng.randint(0, 59)),
    )
    return ClassifiedItem(feedback, prediction, TriagePolicy(0.6).decide(prediction), rng.choice(["m-a", "m-b"]), 1, 1)


def test_rollups_equal_the_raw_group_by_through_replays_late_events_acks_and_two_writers(database_url: str) -> None:
    rng = random.Random(11)
    engine = create_engine(database_url, pool_size=4)
    store = ResultStore(engine)
    batches = [[item(rng, b * 100 + i, late=rng.random() < 0.1) for i in range(100)] for b in range(8)]
    for batch in batches[:4]:
        store.write(batch)
    store.write(batches[1])  # a replay of a whole batch: nothing new
    store.write(batches[2][:50] + batches[4][:50])  # half replay, half new
    errors: list[BaseException] = []

    def write(part: list[list[ClassifiedItem]]) -> None:
        try:
            for batch in part:
                ResultStore(engine).write(batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(batches[4:6] + batches[6:],)), threading.Thread(
        target=write, args=(batches[6:] + batches[4:6],))]  # fmt: skip
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert not errors, errors
    escalated = [r[0] for r in rows(database_url, "select event_id from feedback_results where escalated")]
    acknowledge(engine, escalated[: len(escalated) // 2], "rita")
    acknowledge(engine, escalated[:10], "sam", label="negative")  # again, with a verdict: no double count
    acks_raw = rows(
        database_url,
        """
        select date_trunc('hour', acknowledged_at, 'UTC'), product, count(*),
               round(sum(extract(epoch from acknowledged_at - processed_at)), 3),
               count(*) filter (where acknowledged_at - processed_at <= interval '1 hour')
        from feedback_results where escalated and acknowledged_at is not null group by 1, 2 order by 1, 2""",
    )
    acks_rollup = rows(database_url, "select hour, product, handled, round(seconds_sum::numeric, 3), within_1h "
                                     "from acknowledgement_rollup order by 1, 2")  # fmt: skip
    assert acks_rollup == acks_raw and sum(r[2] for r in acks_raw) == len(escalated) // 2
    raw = rows(database_url, RAW_GROUP_BY)
    assert rows(database_url, "select count(*) from feedback_results") == [(800,)]
    assert rows(database_url, LIVE) == raw  # before any fold: all of it pending
    assert rows(database_url, FOLDED) == []
    assert sum(r[4] for r in raw) == 800 and len({r[0] for r in raw}) > 60  # many hours, late ones included
    assert (rollups.fold(engine) or 0) > 0
    assert rows(database_url, FOLDED) == rows(database_url, LIVE) == raw  # one folded row per key
    assert rows(database_url, "select count(*) from sentiment_rollup_pending") == [(0,)]

    with engine.begin() as connection:  # retention deletes raw rows; the rollups keep counting them
        connection.execute(text("delete from feedback_results where event_time < now() - interval '10 days'"))
    assert sum(r[4] for r in rows(database_url, LIVE)) == 800
    engine.dispose()


def test_folds_while_two_workers_write_and_acknowledge_count_everything_once(database_url: str) -> None:
    rng = random.Random(23)
    engine = create_engine(database_url, pool_size=6)
    batches = [[item(rng, b * 50 + i) for i in range(50)] for b in range(24)]
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []
    folded: list[int | None] = []

    def write(part: list[list[ClassifiedItem]]) -> None:
        try:
            store = ResultStore(engine)
            for batch in part:
                store.write(batch)
                ids = [r.item.event_id for r in batch if r.decision.escalate][:3]
                acknowledge(engine, ids, "rita")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def fold_until_done() -> None:
        try:
            while writing.is_set():
                folded.append(rollups.fold(engine))
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(batches[n::2] + batches[:12],)) for n in range(2)]
    folders = [threading.Thread(target=fold_until_done) for _ in range(2)]  # two at once: one skips
    for thread in workers + folders:
        thread.start()
    for thread in workers:
        thread.join()
    writing.clear()
    for thread in folders:
        thread.join()
    assert not errors, errors
    assert sum(1 for n in folded if n) > 3, folded  # folds really ran between the writes
    raw = rows(database_url, RAW_GROUP_BY)
    assert sum(r[4] for r in raw) == 1200
    assert rows(database_url, LIVE) == raw
    rollups.fold(engine)
    assert rows(database_url, FOLDED) == raw
    engine.dispose()


TODAYS_COLUMNS_UP = """
    alter table escalation_outbox add column topic text, add column headers jsonb, add column source_time timestamptz;
    alter table feedback_results add column model_revision text, add column audit_sample boolean not null default false,
        add column schema_id integer, add column category text, add column category_predicted text,
        add column category_score float8, add column reviewed_category text;
    create table shadow_results (event_id text, processed_at timestamptz, model text, model_revision text,
        calibration text, label text, score float8, negative_prob float8, escalated boolean, escalation_reason text,
        category text, category_predicted text, category_score float8)
"""
TODAYS_COLUMNS_DOWN = """
    alter table escalation_outbox drop column topic, drop column headers, drop column source_time;
    alter table feedback_results drop column model_revision, drop column audit_sample, drop column schema_id,
        drop column category, drop column category_predicted, drop column category_score, drop column reviewed_category;
    drop table shadow_results
"""


def test_migration_0007_folds_on_the_way_down_and_counts_on_after_the_way_up(database_url: str) -> None:
    rng = random.Random(5)
    engine = create_engine(database_url)
    store = ResultStore(engine)
    store.write([item(rng, n) for n in range(100)])
    escalated = [r[0] for r in rows(database_url, "select event_id from feedback_results where escalated")]
    acknowledge(engine, escalated[:5], "rita")
    raw = rows(database_url, RAW_GROUP_BY)
    migrate.downgrade(database_url, "0006_weekly_partitions")
    with (
        engine.begin() as connection
    ):  # what today's store and ack use beyond 0006 (0008, 0009, 0011); the trigger is the same
        connection.execute(text(TODAYS_COLUMNS_UP))
    assert rows(database_url, FOLDED) == raw  # the pending counts were folded in
    store.write([item(rng, n) for n in range(100, 150)])  # 0006's trigger upserts the rollup itself
    acknowledge(engine, escalated[5:8], "rita")
    assert rows(database_url, FOLDED) == rows(database_url, RAW_GROUP_BY)
    with engine.begin() as connection:
        connection.execute(text(TODAYS_COLUMNS_DOWN))  # 0008, 0009 and 0011 add them back
    migrate.upgrade(database_url)
    store.write([item(rng, n) for n in range(150, 200)])
    assert rows(database_url, "select count(*) > 0 from sentiment_rollup_pending") == [(True,)]
    assert rows(database_url, LIVE) == rows(database_url, RAW_GROUP_BY)
    assert sum(r[4] for r in rows(database_url, LIVE)) == 200
    engine.dispose()

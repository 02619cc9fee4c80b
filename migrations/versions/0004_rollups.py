"""Hourly rollups kept by the store, so trend queries cost the same at a million rows as at a billion.

`sentiment_rollup` holds one row per UTC hour of event_time, source, product and model. A
statement trigger on `feedback_results` adds every insert to it, in the inserting transaction (the
store's, or any other writer's): only rows really inserted are in the trigger's transition table,
so a replay counts once, and a late event lands in its own hour. Rows are added in key order, so
two workers adding to the same hours lock them in the same order and never deadlock. A second
trigger takes newly acknowledged escalations off `open_escalations` and adds them to
`acknowledgement_rollup` (per UTC hour of the acknowledgement and product: how many, the sum of
their delays, how many within an hour, the slowest). Deleting results leaves the
rollups alone: they outlive the raw rows. The trend views now read the rollups instead of
scanning the results. Existing results are rolled up here.

Revision ID: 0004_rollups
Revises: 0003_calibration_and_verdicts
Create Date: 2026-11-24
"""

from alembic import op

revision = "0004_rollups"
down_revision = "0003_calibration_and_verdicts"
branch_labels = None
depends_on = None

COUNTS = """
    count(*) as total,
    count(*) filter (where label = 'negative') as negatives,
    count(*) filter (where escalated) as escalations,
    count(*) filter (where escalation_reason = 'low_confidence') as low_confidence_escalations,
    count(*) filter (where escalated and acknowledged_at is null) as open_escalations,
    count(*) filter (where score < 0.60) as scores_under_060,
    sum(score) as score_sum
"""
VIEW_FROM_ROLLUP = """
    create view {name} as
    select
        {bucket} as {column},
        source,
        product,
        sum(total) as total,
        sum(negatives) as negatives,
        round(sum(negatives)::numeric / sum(total), 4) as share_negative,
        sum(escalations) as escalations{extra}
    from sentiment_rollup
    group by 1, 2, 3
"""
VIEW_FROM_RESULTS = """
    create view {name} as
    select
        {bucket} as {column},
        source,
        product,
        count(*) as total,
        count(*) filter (where label = 'negative') as negatives,
        round(count(*) filter (where label = 'negative')::numeric / count(*), 4) as share_negative,
        count(*) filter (where escalated) as escalations{extra}
    from feedback_results
    group by 1, 2, 3
"""
# (view, bucket over the rollup's hour, bucket over a result's event_time, column, extra columns)
UTC_HOUR, UTC_EVENT_TIME = "hour at time zone 'UTC'", "event_time at time zone 'UTC'"
VIEWS = [
    ("sentiment_daily", f"({UTC_HOUR})::date", f"({UTC_EVENT_TIME})::date", "day", False),
    ("sentiment_hourly", UTC_HOUR, f"date_trunc('hour', {UTC_EVENT_TIME})", "hour", True),
    ("sentiment_weekly", f"date_trunc('week', {UTC_HOUR})", f"date_trunc('week', {UTC_EVENT_TIME})", "week", True),
]


# How fast humans acknowledge escalations, per UTC hour of the acknowledgement and product.
ADD_ACKNOWLEDGED = """
        insert into acknowledgement_rollup as a
        select date_trunc('hour', acknowledged_at, 'UTC'), product, count(*),
               sum(extract(epoch from acknowledged_at - processed_at)),
               count(*) filter (where acknowledged_at - processed_at <= interval '1 hour'),
               max(extract(epoch from acknowledged_at - processed_at))
        from ({acked}) as acked
        group by 1, 2
        order by 1, 2
        on conflict on constraint acknowledgement_rollup_key do update set
            handled = a.handled + excluded.handled,
            seconds_sum = a.seconds_sum + excluded.seconds_sum,
            within_1h = a.within_1h + excluded.within_1h,
            slowest_s = greatest(a.slowest_s, excluded.slowest_s)
"""
ADD_INSERTED = f"""
    create function sentiment_rollup_add() returns trigger language plpgsql as $$
    begin
        insert into sentiment_rollup as r
        select date_trunc('hour', event_time, 'UTC'), source, product, model, {COUNTS}
        from inserted_rows
        group by 1, 2, 3, 4
        order by 1, 2, 3, 4
        on conflict on constraint sentiment_rollup_key do update set
            total = r.total + excluded.total,
            negatives = r.negatives + excluded.negatives,
            escalations = r.escalations + excluded.escalations,
            low_confidence_escalations = r.low_confidence_escalations + excluded.low_confidence_escalations,
            open_escalations = r.open_escalations + excluded.open_escalations,
            scores_under_060 = r.scores_under_060 + excluded.scores_under_060,
            score_sum = r.score_sum + excluded.score_sum;
        {ADD_ACKNOWLEDGED.format(acked="select * from inserted_rows where escalated and acknowledged_at is not null")};
        return null;
    end $$
"""
NEWLY_ACKNOWLEDGED = (
    "select after.* from new_rows as after join old_rows as before using (id) "
    "where after.escalated and before.acknowledged_at is null and after.acknowledged_at is not null"
)
CLOSE_ACKNOWLEDGED = f"""
    create function sentiment_rollup_acknowledge() returns trigger language plpgsql as $$
    begin
        update sentiment_rollup as r set open_escalations = r.open_escalations - closed.n
        from (
            select date_trunc('hour', event_time, 'UTC') as hour, source, product, model, count(*) as n
            from ({NEWLY_ACKNOWLEDGED}) as acked
            group by 1, 2, 3, 4
            order by 1, 2, 3, 4
        ) as closed
        where r.hour = closed.hour and r.source is not distinct from closed.source
          and r.product is not distinct from closed.product and r.model = closed.model;
        {ADD_ACKNOWLEDGED.format(acked=NEWLY_ACKNOWLEDGED)};
        return null;
    end $$
"""


def upgrade() -> None:
    op.execute(
        """
        create table sentiment_rollup (
            hour timestamptz not null,
            source text,
            product text,
            model text not null,
            total bigint not null,
            negatives bigint not null,
            escalations bigint not null,
            low_confidence_escalations bigint not null,
            open_escalations bigint not null,
            scores_under_060 bigint not null,
            score_sum double precision not null,
            constraint sentiment_rollup_key unique nulls not distinct (hour, source, product, model)
        )
        """
    )
    op.execute(
        """
        create table acknowledgement_rollup (
            hour timestamptz not null,
            product text,
            handled bigint not null,
            seconds_sum double precision not null,
            within_1h bigint not null,
            slowest_s double precision not null,
            constraint acknowledgement_rollup_key unique nulls not distinct (hour, product)
        )
        """
    )
    op.execute(
        ADD_ACKNOWLEDGED.format(acked="select * from feedback_results where escalated and acknowledged_at is not null")
    )
    op.execute(
        f"""
        insert into sentiment_rollup
        select date_trunc('hour', event_time, 'UTC'), source, product, model, {COUNTS}
        from feedback_results group by 1, 2, 3, 4
        """
    )
    op.execute(ADD_INSERTED)
    op.execute(
        "create trigger feedback_results_rollup after insert on feedback_results "
        "referencing new table as inserted_rows for each statement execute function sentiment_rollup_add()"
    )
    op.execute(CLOSE_ACKNOWLEDGED)
    op.execute(
        "create trigger feedback_results_rollup_ack after update on feedback_results "
        "referencing old table as old_rows new table as new_rows "
        "for each statement execute function sentiment_rollup_acknowledge()"
    )
    for name, bucket, _, column, extra in VIEWS:
        op.execute(f"drop view {name}")
        op.execute(
            VIEW_FROM_ROLLUP.format(
                name=name,
                bucket=bucket,
                column=column,
                extra=",\n        sum(low_confidence_escalations) as low_confidence_escalations" if extra else "",
            )
        )
    # The backlog by age reads only the hours that still have open escalations.
    op.execute(
        "create index sentiment_rollup_open_idx on sentiment_rollup (hour) include (product, open_escalations) "
        "where open_escalations > 0"
    )


def downgrade() -> None:
    op.execute("drop trigger feedback_results_rollup_ack on feedback_results")
    op.execute("drop trigger feedback_results_rollup on feedback_results")
    op.execute("drop function sentiment_rollup_acknowledge()")
    op.execute("drop function sentiment_rollup_add()")
    for name, _, bucket, column, extra in VIEWS:
        op.execute(f"drop view {name}")
        op.execute(
            VIEW_FROM_RESULTS.format(
                name=name,
                bucket=bucket,
                column=column,
                extra=",\n        count(*) filter (where escalation_reason = 'low_confidence') "
                "as low_confidence_escalations"
                if extra
                else "",
            )
        )
    op.execute("drop table sentiment_rollup")
    op.execute("drop table acknowledgement_rollup")

"""Rollups written as pending counts by the store and folded in by the worker, so they cost it little.

Until now the rollup trigger upserted one `sentiment_rollup` row per hour, source, product and
model in every store transaction: an index probe and a new row version each, and row locks that
make two workers storing the same hours wait for each other. The store ran at 0.84-0.89 of its
speed without the trigger. Now the trigger only appends the batch's counts to
`sentiment_rollup_pending` (no index, no locks held on shared rows), and `ack` appends minus one
open escalation there the same way. `sentiment_rollup_fold()` moves every pending row into
`sentiment_rollup` in one statement (delete ... returning, summed per key, upserted in key order);
the worker calls it every few seconds (runtime/rollups), so each key is upserted once per fold
instead of once per batch. A fold never counts a row twice: a second fold at the same time waits
for the first's deleted rows and then skips them.

`sentiment_rollup_live` is the two tables together (union all): sums over it are exact at any
moment, folded or not, and the trend views read it. The backlog index now covers every hour whose
open count is not zero, the form the README's backlog query asks for.

Revision ID: 0007_rollup_pending
Revises: 0006_weekly_partitions
Create Date: 2026-11-24
"""

import re

from alembic import op

revision = "0007_rollup_pending"
down_revision = "0006_weekly_partitions"
branch_labels = None
depends_on = None

TREND_VIEWS = ("sentiment_daily", "sentiment_hourly", "sentiment_weekly")
KEY = "hour, source, product, model"
COUNTED = (
    "total",
    "negatives",
    "escalations",
    "low_confidence_escalations",
    "open_escalations",
    "scores_under_060",
    "score_sum",
)
ADD_ON_CONFLICT = "on conflict on constraint sentiment_rollup_key do update set " + ", ".join(
    f"{column} = r.{column} + excluded.{column}" for column in COUNTED
)
INSERTED_COUNTS = """
    count(*), count(*) filter (where label = 'negative'), count(*) filter (where escalated),
    count(*) filter (where escalation_reason = 'low_confidence'),
    count(*) filter (where escalated and acknowledged_at is null),
    count(*) filter (where score < 0.60), sum(score)
"""
NEWLY_ACKNOWLEDGED = (
    "select after.* from new_rows as after join old_rows as before using (id) "
    "where after.escalated and before.acknowledged_at is null and after.acknowledged_at is not null"
)
# Unchanged from 0004: how fast humans acknowledge, per UTC hour of the acknowledgement and product.
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
TRIGGER_FUNCTIONS = """
    create or replace function sentiment_rollup_add() returns trigger language plpgsql as $$
    begin
        insert into {target}
        select date_trunc('hour', event_time, 'UTC'), source, product, model, {inserted}
        from inserted_rows group by 1, 2, 3, 4 {then};
        {acknowledged_at_insert};
        return null;
    end $$;
    create or replace function sentiment_rollup_acknowledge() returns trigger language plpgsql as $$
    begin
        insert into {target}
        select date_trunc('hour', event_time, 'UTC'), source, product, model, 0, 0, 0, 0, -count(*), 0, 0
        from ({newly}) as acked group by 1, 2, 3, 4 {then};
        {acknowledged};
        return null;
    end $$;
"""
FOLD = f"""
    create function sentiment_rollup_fold() returns bigint language sql as $$
        with moved as (delete from sentiment_rollup_pending returning *),
        added as (
            insert into sentiment_rollup as r
            select {KEY}, {", ".join(f"sum({column})" for column in COUNTED)}
            from moved group by 1, 2, 3, 4 order by 1, 2, 3, 4
            {ADD_ON_CONFLICT}
        )
        select count(*) from moved
    $$
"""


def _trigger_functions(target: str, then: str) -> str:
    return TRIGGER_FUNCTIONS.format(
        target=target,
        then=then,
        inserted=INSERTED_COUNTS,
        newly=NEWLY_ACKNOWLEDGED,
        acknowledged_at_insert=ADD_ACKNOWLEDGED.format(
            acked="select * from inserted_rows where escalated and acknowledged_at is not null"
        ),
        acknowledged=ADD_ACKNOWLEDGED.format(acked=NEWLY_ACKNOWLEDGED),
    )


def _point_trend_views(old: str, new: str) -> None:
    """Recreate the trend views from their own definitions, reading `new` where they read `old`."""
    connection = op.get_bind()
    for name in TREND_VIEWS:
        definition = connection.exec_driver_sql(f"select pg_get_viewdef('{name}'::regclass)").scalar_one()
        op.execute(f"create or replace view {name} as " + re.sub(rf"\b{old}\b", new, definition))


def _backlog_index(predicate: str) -> None:
    op.execute("drop index if exists sentiment_rollup_open_idx")
    op.execute(
        "create index sentiment_rollup_open_idx on sentiment_rollup (hour) include (product, open_escalations) "
        f"where {predicate}"
    )


def upgrade() -> None:
    op.execute("create table sentiment_rollup_pending (like sentiment_rollup)")
    op.execute(_trigger_functions("sentiment_rollup_pending", then=""))
    op.execute(FOLD)
    op.execute(
        f"create view sentiment_rollup_live as select {KEY}, {', '.join(COUNTED)} from sentiment_rollup "
        f"union all select {KEY}, {', '.join(COUNTED)} from sentiment_rollup_pending"
    )
    _point_trend_views("sentiment_rollup", "sentiment_rollup_live")
    _backlog_index("open_escalations <> 0")


def downgrade() -> None:
    op.execute("select sentiment_rollup_fold()")
    _point_trend_views("sentiment_rollup_live", "sentiment_rollup")
    op.execute(_trigger_functions("sentiment_rollup as r", then=f"order by 1, 2, 3, 4 {ADD_ON_CONFLICT}"))
    op.execute("drop view sentiment_rollup_live")
    op.execute("drop function sentiment_rollup_fold()")
    op.execute("drop table sentiment_rollup_pending")
    _backlog_index("open_escalations > 0")

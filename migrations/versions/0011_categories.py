"""Categories: each result keeps its route, the rollups count by category, and two views read them.

`feedback_results` and `shadow_results` gain `category` (the team it went to, or `general`; null
without categories), `category_predicted` (the category head's top answer, routed or not) and
`category_score`; `feedback_results.reviewed_category` holds the reviewer's tag from
`ack --category`. `sentiment_rollup` (and its pending table) and `acknowledgement_rollup` gain
`category` in their keys, so every count the trend views read is also split by category, at the
same cost per batch (the trigger groups by one more column). The rows already there keep a null
category: they were written before categories.

Two views answer the support lead's questions: `category_daily` (per UTC day and category: items,
negatives, escalations, still open, mean score) and `category_acknowledgement_daily` (per UTC day
of acknowledgement and category: handled, mean and slowest time to acknowledge, share within an
hour). The outbox takes a third kind, `reroute`: an escalation sent again to the team a reviewer
tagged it for (`ack --category`), one per event.

Revision ID: 0011_categories
Revises: 0010_outbox_parking
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_categories"
down_revision = "0010_outbox_parking"
branch_labels = None
depends_on = None

TREND_VIEWS = ("sentiment_daily", "sentiment_hourly", "sentiment_weekly")  # they read sentiment_rollup_live
COUNTED = (
    "total",
    "negatives",
    "escalations",
    "low_confidence_escalations",
    "open_escalations",
    "scores_under_060",
    "score_sum",
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


def _sql(with_category: bool) -> dict[str, str]:
    """The trigger functions and the fold, keyed with or without `category` (the downgrade's form is 0007's)."""
    key = "source, product, model" + (", category" if with_category else "")
    groups = ", ".join(str(i) for i in range(1, 5 + with_category))
    ack_key = "product" + (", category" if with_category else "")
    ack_groups = "1, 2, 3" if with_category else "1, 2"
    acknowledged = f"""
        insert into acknowledgement_rollup as a (hour, {ack_key}, handled, seconds_sum, within_1h, slowest_s)
        select date_trunc('hour', acknowledged_at, 'UTC'), {ack_key}, count(*),
               sum(extract(epoch from acknowledged_at - processed_at)),
               count(*) filter (where acknowledged_at - processed_at <= interval '1 hour'),
               max(extract(epoch from acknowledged_at - processed_at))
        from ({{acked}}) as acked
        group by {ack_groups}
        order by {ack_groups}
        on conflict on constraint acknowledgement_rollup_key do update set
            handled = a.handled + excluded.handled,
            seconds_sum = a.seconds_sum + excluded.seconds_sum,
            within_1h = a.within_1h + excluded.within_1h,
            slowest_s = greatest(a.slowest_s, excluded.slowest_s)
    """
    columns = f"hour, {key}, {', '.join(COUNTED)}"
    zeros = "0, 0, 0, 0, -count(*), 0, 0"
    functions = f"""
    create or replace function sentiment_rollup_add() returns trigger language plpgsql as $$
    begin
        insert into sentiment_rollup_pending ({columns})
        select date_trunc('hour', event_time, 'UTC'), {key}, {INSERTED_COUNTS}
        from inserted_rows group by {groups};
        {acknowledged.format(acked="select * from inserted_rows where escalated and acknowledged_at is not null")};
        return null;
    end $$;
    create or replace function sentiment_rollup_acknowledge() returns trigger language plpgsql as $$
    begin
        insert into sentiment_rollup_pending ({columns})
        select date_trunc('hour', event_time, 'UTC'), {key}, {zeros}
        from ({NEWLY_ACKNOWLEDGED}) as acked group by {groups};
        {acknowledged.format(acked=NEWLY_ACKNOWLEDGED)};
        return null;
    end $$;
    create or replace function sentiment_rollup_fold() returns bigint language sql as $$
        with moved as (delete from sentiment_rollup_pending returning *),
        added as (
            insert into sentiment_rollup as r ({columns})
            select hour, {key}, {", ".join(f"sum({column})" for column in COUNTED)}
            from moved group by {groups} order by {groups}
            on conflict on constraint sentiment_rollup_key do update set
            {", ".join(f"{column} = r.{column} + excluded.{column}" for column in COUNTED)}
        )
        select count(*) from moved
    $$;
    """
    # The live view's columns in 0007's order, `category` last (a view can only grow at its end).
    live = f"hour, source, product, model, {', '.join(COUNTED)}" + (", category" if with_category else "")
    union = f"select {live} from sentiment_rollup union all select {live} from sentiment_rollup_pending"
    return {"functions": functions, "live": union}


CATEGORY_DAILY = """
    create view category_daily as
    select date_trunc('day', hour, 'UTC') as day, category,
           sum(total) as items, sum(negatives) as negatives, sum(escalations) as escalations,
           sum(open_escalations) as open_escalations,
           sum(score_sum) / nullif(sum(total), 0) as mean_score
    from sentiment_rollup_live
    where category is not null
    group by 1, 2
"""
CATEGORY_ACKNOWLEDGEMENT = """
    create view category_acknowledgement_daily as
    select date_trunc('day', hour, 'UTC') as day, category, sum(handled) as handled,
           sum(seconds_sum) / nullif(sum(handled), 0) as mean_seconds,
           sum(within_1h)::float8 / nullif(sum(handled), 0) as share_within_1h,
           max(slowest_s) as slowest_seconds
    from acknowledgement_rollup
    where category is not null
    group by 1, 2
"""


def _keys(with_category: bool) -> None:
    extra = ", category" if with_category else ""
    op.execute("alter table sentiment_rollup drop constraint if exists sentiment_rollup_key")
    op.execute(
        "alter table sentiment_rollup add constraint sentiment_rollup_key "
        f"unique nulls not distinct (hour, source, product, model{extra})"
    )
    op.execute("alter table acknowledgement_rollup drop constraint if exists acknowledgement_rollup_key")
    op.execute(
        "alter table acknowledgement_rollup add constraint acknowledgement_rollup_key "
        f"unique nulls not distinct (hour, product{extra})"
    )


def upgrade() -> None:
    for table in ("feedback_results", "shadow_results"):
        op.add_column(table, sa.Column("category", sa.Text(), nullable=True))
        op.add_column(table, sa.Column("category_predicted", sa.Text(), nullable=True))
        op.add_column(table, sa.Column("category_score", sa.Float(), nullable=True))
    op.add_column("feedback_results", sa.Column("reviewed_category", sa.Text(), nullable=True))
    op.execute("select sentiment_rollup_fold()")
    for table in ("sentiment_rollup", "sentiment_rollup_pending", "acknowledgement_rollup"):
        op.add_column(table, sa.Column("category", sa.Text(), nullable=True))
    _keys(with_category=True)
    sql = _sql(with_category=True)
    op.execute(sql["functions"])
    op.execute("create or replace view sentiment_rollup_live as " + sql["live"])
    op.execute(CATEGORY_DAILY)
    op.execute(CATEGORY_ACKNOWLEDGEMENT)
    _outbox_kinds("'escalation', 'result', 'reroute'")


def _outbox_kinds(kinds: str) -> None:
    op.drop_constraint("escalation_outbox_kind_check", "escalation_outbox", type_="check")
    op.create_check_constraint("escalation_outbox_kind_check", "escalation_outbox", f"kind in ({kinds})")


def downgrade() -> None:
    op.execute("delete from escalation_outbox where kind = 'reroute'")
    _outbox_kinds("'escalation', 'result'")
    op.execute("drop view category_acknowledgement_daily")
    op.execute("drop view category_daily")
    op.execute("select sentiment_rollup_fold()")
    # Fold the category split away: one row per old key, summed, before the column goes.
    op.execute(
        "create temp table folded on commit drop as select hour, source, product, model, "
        + ", ".join(f"sum({c}) as {c}" for c in COUNTED)
        + " from sentiment_rollup group by 1, 2, 3, 4"
    )
    op.execute("delete from sentiment_rollup")
    op.execute(
        "create temp table acks_folded on commit drop as select hour, product, sum(handled) as handled, "
        "sum(seconds_sum) as seconds_sum, sum(within_1h) as within_1h, max(slowest_s) as slowest_s "
        "from acknowledgement_rollup group by 1, 2"
    )
    op.execute("delete from acknowledgement_rollup")
    sql = _sql(with_category=False)
    op.execute(sql["functions"])
    connection = op.get_bind()
    trend_views = {
        name: connection.exec_driver_sql(f"select pg_get_viewdef('{name}'::regclass)").scalar_one()
        for name in TREND_VIEWS
    }
    for name in TREND_VIEWS:
        op.execute(f"drop view {name}")
    op.execute("drop view sentiment_rollup_live")
    for table in ("sentiment_rollup", "sentiment_rollup_pending", "acknowledgement_rollup"):
        op.drop_column(table, "category")
    _keys(with_category=False)
    op.execute(f"insert into sentiment_rollup select hour, source, product, model, {', '.join(COUNTED)} from folded")
    op.execute("insert into acknowledgement_rollup select * from acks_folded")
    op.execute("create view sentiment_rollup_live as " + sql["live"])
    for name, definition in trend_views.items():
        op.execute(f"create view {name} as {definition}")
    op.drop_column("feedback_results", "reviewed_category")
    for table in ("feedback_results", "shadow_results"):
        op.drop_column(table, "category_score")
        op.drop_column(table, "category_predicted")
        op.drop_column(table, "category")

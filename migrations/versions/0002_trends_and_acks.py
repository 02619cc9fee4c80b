"""Hourly and weekly trend views, escalation acknowledgements and the escalation_backlog view.

Revision ID: 0002_trends_and_acks
Revises: 0001_initial
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_trends_and_acks"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# One rollup per bucket size, with the same columns as sentiment_daily plus the low-confidence count.
ROLLUP = """
    create view {name} as
    select
        date_trunc('{unit}', event_time at time zone 'UTC') as {column},
        source,
        product,
        count(*) as total,
        count(*) filter (where label = 'negative') as negatives,
        round(count(*) filter (where label = 'negative')::numeric / count(*), 4) as share_negative,
        count(*) filter (where escalated) as escalations,
        count(*) filter (where escalation_reason = 'low_confidence') as low_confidence_escalations
    from feedback_results
    group by 1, 2, 3
"""


def upgrade() -> None:
    # A human marks an escalation handled with `triage-worker ack EVENT_ID`.
    op.add_column("feedback_results", sa.Column("acknowledged_at", sa.DateTime(timezone=True)))
    op.add_column("feedback_results", sa.Column("acknowledged_by", sa.Text()))
    # The backlog view scans only open escalations, oldest first.
    op.create_index(
        "feedback_results_open_escalations_idx",
        "feedback_results",
        ["processed_at"],
        postgresql_where=sa.text("escalated and acknowledged_at is null"),
    )
    op.execute(ROLLUP.format(name="sentiment_hourly", unit="hour", column="hour"))
    op.execute(ROLLUP.format(name="sentiment_weekly", unit="week", column="week"))
    op.execute(
        """
        create view escalation_backlog as
        select
            event_id,
            product,
            source,
            label,
            score,
            escalation_reason,
            processed_at as escalated_at,
            now() - processed_at as age,
            case
                when now() - processed_at < interval '1 hour' then 'under 1h'
                when now() - processed_at < interval '4 hours' then '1h-4h'
                when now() - processed_at < interval '24 hours' then '4h-24h'
                else 'over 24h'
            end as age_bucket
        from feedback_results
        where escalated and acknowledged_at is null
        order by processed_at
        """
    )


def downgrade() -> None:
    op.execute("drop view if exists escalation_backlog")
    op.execute("drop view if exists sentiment_weekly")
    op.execute("drop view if exists sentiment_hourly")
    op.drop_index("feedback_results_open_escalations_idx", table_name="feedback_results")
    op.drop_column("feedback_results", "acknowledged_by")
    op.drop_column("feedback_results", "acknowledged_at")

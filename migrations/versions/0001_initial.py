"""Results table, escalation outbox and the sentiment_daily trend view.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_results",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("negative_prob", sa.Float, nullable=False),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("escalation_reason", sa.Text),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("product", sa.Text),
        sa.Column("customer_id", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column(
            "event_time",
            sa.DateTime(timezone=True),
            sa.Computed("coalesce(created_at, processed_at)", persisted=True),
            nullable=False,
        ),
        sa.Column("kafka_topic", sa.Text, nullable=False),
        sa.Column("kafka_partition", sa.Integer, nullable=False),
        sa.Column("kafka_offset", sa.BigInteger, nullable=False),
        sa.Column("kafka_timestamp", sa.DateTime(timezone=True)),
        sa.Column("inference_ms", sa.Float),
        sa.Column("batch_size", sa.Integer),
        sa.Column("text", sa.Text),
        sa.Column("metadata", JSONB),
        sa.UniqueConstraint("event_id", name="feedback_results_event_id_key"),
        sa.CheckConstraint("label in ('positive', 'negative')", name="feedback_results_label_check"),
        sa.CheckConstraint("score >= 0 and score <= 1", name="feedback_results_score_check"),
        sa.CheckConstraint(
            "escalation_reason is null or escalation_reason in ('negative', 'low_confidence')",
            name="feedback_results_reason_check",
        ),
        sa.CheckConstraint("escalated = (escalation_reason is not null)", name="feedback_results_escalated_check"),
    )
    op.create_index("feedback_results_event_time_idx", "feedback_results", ["event_time"])
    op.create_index("feedback_results_product_time_idx", "feedback_results", ["product", "event_time"])
    op.create_index("feedback_results_source_time_idx", "feedback_results", ["source", "event_time"])

    op.create_table(
        "escalation_outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "event_id",
            sa.Text,
            sa.ForeignKey("feedback_results.event_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("event_id", name="escalation_outbox_event_id_key"),
    )
    op.create_index(
        "escalation_outbox_unpublished_idx",
        "escalation_outbox",
        ["id"],
        postgresql_where=sa.text("published_at is null"),
    )

    op.execute(
        """
        create view sentiment_daily as
        select
            (event_time at time zone 'UTC')::date as day,
            source,
            product,
            count(*) as total,
            count(*) filter (where label = 'negative') as negatives,
            round(count(*) filter (where label = 'negative')::numeric / count(*), 4) as share_negative,
            count(*) filter (where escalated) as escalations
        from feedback_results
        group by 1, 2, 3
        """
    )


def downgrade() -> None:
    op.execute("drop view if exists sentiment_daily")
    op.drop_table("escalation_outbox")
    op.drop_table("feedback_results")

"""Which calibration produced each score, reviewers' verdicts on escalations, and the review_agreement_daily view.

Revision ID: 0003_calibration_and_verdicts
Revises: 0002_trends_and_acks
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_calibration_and_verdicts"
down_revision = "0002_trends_and_acks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The id of the calibration file (triage-worker calibrate) the score came from; null: uncalibrated.
    op.add_column("feedback_results", sa.Column("calibration", sa.Text()))
    # `triage-worker ack EVENT_ID --label negative` records what the reviewer decided.
    op.add_column("feedback_results", sa.Column("reviewed_label", sa.Text()))
    op.add_column("feedback_results", sa.Column("reviewed_by", sa.Text()))
    op.add_column("feedback_results", sa.Column("reviewed_at", sa.DateTime(timezone=True)))
    op.create_check_constraint(
        "feedback_results_reviewed_label_check",
        "feedback_results",
        "reviewed_label is null or reviewed_label in ('positive', 'negative')",
    )
    # `export --reviewed --since` and the agreement view read only reviewed rows, newest first.
    op.create_index(
        "feedback_results_reviewed_idx",
        "feedback_results",
        ["reviewed_at"],
        postgresql_where=sa.text("reviewed_label is not null"),
    )
    op.execute(
        """
        create view review_agreement_daily as
        select
            date_trunc('day', reviewed_at at time zone 'UTC')::date as day,
            model,
            calibration,
            count(*) as reviewed,
            count(*) filter (where reviewed_label = label) as agreed,
            round(count(*) filter (where reviewed_label = label)::numeric / count(*), 4) as agreement,
            count(*) filter (where reviewed_label = 'negative') as reviewed_negative,
            count(*) filter (where reviewed_label = 'positive' and label = 'negative')
                as model_negative_reviewer_positive,
            count(*) filter (where reviewed_label = 'negative' and label = 'positive')
                as model_positive_reviewer_negative
        from feedback_results
        where reviewed_label is not null
        group by 1, 2, 3
        """
    )


def downgrade() -> None:
    op.execute("drop view if exists review_agreement_daily")
    op.drop_index("feedback_results_reviewed_idx", table_name="feedback_results")
    op.drop_constraint("feedback_results_reviewed_label_check", "feedback_results", type_="check")
    op.drop_column("feedback_results", "reviewed_at")
    op.drop_column("feedback_results", "reviewed_by")
    op.drop_column("feedback_results", "reviewed_label")
    op.drop_column("feedback_results", "calibration")

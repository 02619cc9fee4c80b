"""Each outbox row names its topic, and deployment-wide settings live in the database.

`escalation_outbox.topic`: the topic the row is for, written by the store from the worker's
settings. A relay publishes only rows for its own topics (rows from before this migration have
none and go to the relay's topic for their kind), so two deployments sharing a database never
publish each other's rows.

`triage_settings`: one value per deployment for what must not differ between workers. Today:
`results_retention`, which decides which result weeks are dropped. The first worker that starts
with TRIAGE_RESULTS_RETENTION set writes it; a worker set otherwise logs the difference and uses
the stored value, so one mis-set canary cannot drop current weeks.

Revision ID: 0008_outbox_topics_and_settings
Revises: 0007_rollup_pending
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_outbox_topics_and_settings"
down_revision = "0007_rollup_pending"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("escalation_outbox", sa.Column("topic", sa.Text(), nullable=True))
    op.create_table(
        "triage_settings",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )


def downgrade() -> None:
    op.drop_table("triage_settings")
    op.drop_column("escalation_outbox", "topic")

"""Outbox rows the broker refuses for good are parked, not retried at the head of every batch.

`escalation_outbox.parked_at`, `parked_reason`: a row the broker will never take (its record is too
large for the topic, or invalid) is set aside by the relay with the broker's reason, counted
(`triage_outbox_parked`) and alerted on, so the rows behind it flow. The relay claims only rows that
are neither published nor parked; the partial index on pending rows follows. A parked row goes back
to the relay when its `parked_at` is cleared (see worker/docs/operating.md).

Revision ID: 0010_outbox_parking
Revises: 0009_identity_audits_shadow
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_outbox_parking"
down_revision = "0009_identity_audits_shadow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("escalation_outbox", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("escalation_outbox", sa.Column("parked_reason", sa.Text(), nullable=True))
    op.drop_index("escalation_outbox_unpublished_idx", table_name="escalation_outbox")
    op.create_index(
        "escalation_outbox_unpublished_idx",
        "escalation_outbox",
        ["id"],
        postgresql_where=sa.text("published_at is null and parked_at is null"),
    )
    op.create_index(
        "escalation_outbox_parked_idx",
        "escalation_outbox",
        ["kind"],
        postgresql_where=sa.text("parked_at is not null and published_at is null"),
    )


def downgrade() -> None:
    op.drop_index("escalation_outbox_parked_idx", table_name="escalation_outbox")
    op.drop_index("escalation_outbox_unpublished_idx", table_name="escalation_outbox")
    op.create_index(
        "escalation_outbox_unpublished_idx",
        "escalation_outbox",
        ["id"],
        postgresql_where=sa.text("published_at is null"),
    )
    op.drop_column("escalation_outbox", "parked_reason")
    op.drop_column("escalation_outbox", "parked_at")

"""The outbox carries results as well as escalations, and published rows can be pruned.

`escalation_outbox.kind` is `escalation` (to TRIAGE_ESCALATION_TOPIC) or `result` (every stored
result, to TRIAGE_RESULTS_TOPIC when set); one row per event and kind. The relay deletes rows
published longer ago than TRIAGE_OUTBOX_RETENTION, found through a partial index on published_at.

Revision ID: 0005_outbox_kinds_and_retention
Revises: 0004_rollups
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_outbox_kinds_and_retention"
down_revision = "0004_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("escalation_outbox", sa.Column("kind", sa.Text(), nullable=False, server_default="escalation"))
    op.create_check_constraint("escalation_outbox_kind_check", "escalation_outbox", "kind in ('escalation', 'result')")
    op.drop_constraint("escalation_outbox_event_id_key", "escalation_outbox", type_="unique")
    op.create_unique_constraint("escalation_outbox_event_id_kind_key", "escalation_outbox", ["event_id", "kind"])
    op.create_index(
        "escalation_outbox_published_idx",
        "escalation_outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at is not null"),
    )


def downgrade() -> None:
    op.execute("delete from escalation_outbox where kind = 'result'")
    op.drop_index("escalation_outbox_published_idx", table_name="escalation_outbox")
    op.drop_constraint("escalation_outbox_event_id_kind_key", "escalation_outbox", type_="unique")
    op.create_unique_constraint("escalation_outbox_event_id_key", "escalation_outbox", ["event_id"])
    op.drop_constraint("escalation_outbox_kind_check", "escalation_outbox", type_="check")
    op.drop_column("escalation_outbox", "kind")

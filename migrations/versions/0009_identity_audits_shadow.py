"""Model identity on every row, an audit sample, a shadow candidate's answers, Schema Registry ids.

`feedback_results.model_revision`: the exact weights behind a score, `sha:<hub commit>` for a hub
model and `dir:<content digest>` for a local directory (worker.model.identity). A model name alone
cannot tell a fine-tuned directory from the one it replaced. Rows from before have none.

`feedback_results.audit_sample`: the item was not escalated but was drawn for the audit sample
(TRIAGE_AUDIT_SAMPLE_RATE) and sent to the reviewers with reason `audit`. It stays `escalated =
false`, so escalation counts, rollups and the acknowledgement figures leave audits out, and
`audit_sample_daily` counts them on their own: sampled, reviewed, and the model's agreement with
the reviewers on them (an estimate of its misses among the items it let through; with
TRIAGE_AUDIT_SCOPE=all, a later setting, of its accuracy on the whole stream).

`feedback_results.schema_id`: the Schema Registry id of a value framed in the Confluent wire format
(magic byte 0, 4-byte schema id, then the JSON); null for plain JSON.

`escalation_outbox.headers`: the input headers (TRIAGE_PASSTHROUGH_HEADERS, W3C trace context by
default) the relay sends along with the row's message; `escalation_outbox.source_time`: the event's
Kafka timestamp, from which the relay measures how long an escalation took to reach the broker.

`shadow_results`: what a shadow candidate (TRIAGE_SHADOW_MODEL) said about each stored result,
written in the same transaction, keyed by event id and the candidate's revision.
`shadow_comparison_daily` sets it beside the served model's answers per day, for dashboards;
`triage-worker compare` reads the same join for any window.

Revision ID: 0009_identity_audits_shadow
Revises: 0008_outbox_topics_and_settings
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_identity_audits_shadow"
down_revision = "0008_outbox_topics_and_settings"
branch_labels = None
depends_on = None

AUDIT_VIEW = """
create view audit_sample_daily as
select date_trunc('day', event_time, 'UTC') as day,
       model,
       count(*) as sampled,
       count(reviewed_label) as reviewed,
       count(*) filter (where reviewed_label = label) as model_agreed,
       count(*) filter (where reviewed_label = 'negative') as reviewed_negative
from feedback_results
where audit_sample
group by 1, 2
"""
SHADOW_VIEW = """
create view shadow_comparison_daily as
select date_trunc('day', r.event_time, 'UTC') as day,
       r.model, s.model as shadow_model, s.model_revision as shadow_revision,
       count(*) as compared,
       count(*) filter (where s.label = r.label) as agreed,
       count(*) filter (where r.escalated) as escalated,
       count(*) filter (where s.escalated) as shadow_escalated,
       count(r.reviewed_label) as reviewed,
       count(*) filter (where r.reviewed_label = r.label) as reviewed_correct,
       count(*) filter (where r.reviewed_label = s.label) as reviewed_shadow_correct
from shadow_results s
join feedback_results r using (event_id)
group by 1, 2, 3, 4
"""


def upgrade() -> None:
    op.add_column("feedback_results", sa.Column("model_revision", sa.Text(), nullable=True))
    op.add_column(
        "feedback_results", sa.Column("audit_sample", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("feedback_results", sa.Column("schema_id", sa.Integer(), nullable=True))
    op.add_column("escalation_outbox", sa.Column("headers", JSONB(), nullable=True))
    op.add_column("escalation_outbox", sa.Column("source_time", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "shadow_results",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("model_revision", sa.Text(), nullable=False),
        sa.Column("calibration", sa.Text()),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("negative_prob", sa.Float(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("escalation_reason", sa.Text()),
        sa.PrimaryKeyConstraint("event_id", "model_revision"),
        sa.CheckConstraint("label in ('positive', 'negative')", name="shadow_results_label_check"),
    )
    op.create_index("shadow_results_processed_at_idx", "shadow_results", ["processed_at"])
    op.execute(AUDIT_VIEW)
    op.execute(SHADOW_VIEW)


def downgrade() -> None:
    op.execute("drop view shadow_comparison_daily")
    op.execute("drop view audit_sample_daily")
    op.drop_table("shadow_results")
    op.drop_column("escalation_outbox", "source_time")
    op.drop_column("escalation_outbox", "headers")
    op.drop_column("feedback_results", "schema_id")
    op.drop_column("feedback_results", "audit_sample")
    op.drop_column("feedback_results", "model_revision")

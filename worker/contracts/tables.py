"""Database tables as SQLAlchemy Core objects, used by the store, the relay and the reports.

The schema itself is owned by the Alembic migrations in `migrations/`; these definitions
mirror it for building statements, and a test checks that both agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

feedback_results = Table(
    "feedback_results",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("event_id", Text, nullable=False),  # unique through result_ids (the table is partitioned)
    Column("label", Text, nullable=False),
    Column("score", Float, nullable=False),
    Column("negative_prob", Float, nullable=False),
    Column("escalated", Boolean, nullable=False),
    Column("escalation_reason", Text),
    Column("model", Text, nullable=False),
    Column("model_revision", Text),  # the weights behind the score (see worker.model.identity); null before 0009
    Column("source", Text),
    Column("product", Text),
    Column("customer_id", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Column("event_time", DateTime(timezone=True)),  # generated: coalesce(created_at, processed_at)
    Column("kafka_topic", Text, nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("kafka_timestamp", DateTime(timezone=True)),
    Column("inference_ms", Float),
    Column("batch_size", Integer),
    Column("text", Text),
    Column("metadata", JSONB),
    Column("acknowledged_at", DateTime(timezone=True)),  # set by `triage-worker ack`
    Column("acknowledged_by", Text),
    Column("calibration", Text),  # id of the calibration behind the score; null: uncalibrated
    Column("reviewed_label", Text),  # set by `triage-worker ack --label`: what the reviewer decided
    Column("reviewed_by", Text),
    Column("reviewed_at", DateTime(timezone=True)),
    Column("audit_sample", Boolean, nullable=False),  # sent to the reviewers as an audit (migration 0009)
    Column("schema_id", Integer),  # the Schema Registry id of a framed value (migration 0009); null: plain JSON
    # With categories (migration 0011): the team it went to or `general`, the head's top answer and its
    # score; the reviewer's category from `ack --category`.
    Column("category", Text),
    Column("category_predicted", Text),
    Column("category_score", Float),
    Column("reviewed_category", Text),
)

shadow_results = Table(  # a shadow candidate's answers, stored with the results they shadow (migration 0009)
    "shadow_results",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Column("model", Text, nullable=False),
    Column("model_revision", Text, primary_key=True),
    Column("calibration", Text),
    Column("label", Text, nullable=False),
    Column("score", Float, nullable=False),
    Column("negative_prob", Float, nullable=False),
    Column("escalated", Boolean, nullable=False),  # what its policy would have done; it never escalates
    Column("escalation_reason", Text),
    Column("category", Text),  # as in feedback_results (migration 0011)
    Column("category_predicted", Text),
    Column("category_score", Float),
)

result_ids = Table(  # the idempotency ledger: one row per event id stored, until retention prunes it
    "result_ids",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)

escalation_outbox = Table(
    "escalation_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("kind", Text, nullable=False),  # escalation | result; unique with event_id
    Column("topic", Text),  # where the relay sends it; null on rows from before migration 0008
    Column("payload", JSONB, nullable=False),
    Column("headers", JSONB),  # input headers to send along (TRIAGE_PASSTHROUGH_HEADERS); null: none
    Column("source_time", DateTime(timezone=True)),  # the event's Kafka timestamp: delivery latency (0009)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("parked_at", DateTime(timezone=True)),  # the broker refuses it for good: set aside (0010)
    Column("parked_reason", Text),
)

# The store's counts, folded in by worker.runtime.postgres.rollups; read via sentiment_rollup_live.
sentiment_rollup = Table(
    "sentiment_rollup",
    metadata,
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("source", Text),
    Column("product", Text),
    Column("model", Text, nullable=False),
    Column("category", Text),  # the team's category or `general`; null without categories (migration 0011)
    Column("total", BigInteger, nullable=False),
    Column("negatives", BigInteger, nullable=False),
    Column("escalations", BigInteger, nullable=False),
    Column("low_confidence_escalations", BigInteger, nullable=False),
    Column("open_escalations", BigInteger, nullable=False),
    Column("scores_under_060", BigInteger, nullable=False),
    Column("score_sum", Float, nullable=False),
)

acknowledgement_rollup = Table(  # per UTC hour of acknowledgement and product; kept by a trigger (migration 0004)
    "acknowledgement_rollup",
    metadata,
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("product", Text),
    Column("category", Text),  # migration 0011
    Column("handled", BigInteger, nullable=False),
    Column("seconds_sum", Float, nullable=False),
    Column("within_1h", BigInteger, nullable=False),
    Column("slowest_s", Float, nullable=False),
)


triage_settings = Table(  # one value per deployment for what must not differ between workers (migration 0008)
    "triage_settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
)

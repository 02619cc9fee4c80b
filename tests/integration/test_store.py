"""The store and the migrations against a real PostgreSQL: idempotency, outbox, trend view."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import DBAPIError

from worker.contracts.tables import metadata
from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord
from worker.ops import migrate
from worker.runtime.postgres.errors import DatabaseMisconfigured, Kind, classify
from worker.runtime.postgres.store import COPY_STAGING, CREATE_STAGING, ResultStore, _copy, copy_line
from worker.runtime.retry import Unavailable
from worker.runtime.triage import TriagePolicy

pytestmark = pytest.mark.integration

policy = TriagePolicy(0.60)


def result(
    event_id: str,
    label: str,
    score: float,
    *,
    product: str = "web",
    source: str = "survey",
    day: int = 20,
    text_: str = "some text",
    offset: int = 0,
    metadata: dict[str, object] | None = None,
    created_at: datetime | None = None,
) -> ClassifiedItem:
    prediction = Prediction(label, score, score if label == "negative" else 1 - score, label.upper())  # type: ignore[arg-type]
    item = FeedbackItem(
        record=RawRecord("feedback.events", 0, offset, None, b"{}", timestamp_ms=1_763_000_000_000),
        event_id=event_id,
        text=text_,
        product=product,
        source=source,
        created_at=created_at or datetime(2026, 11, day, 12, tzinfo=timezone.utc),
        metadata={"k": "v"} if metadata is None else metadata,
    )
    return ClassifiedItem(item, prediction, policy.decide(prediction), "tiny-model", 3.5, 1)


def test_migrations_match_the_table_definitions_and_downgrade_cleanly(database_url: str) -> None:
    engine = create_engine(database_url)
    inspector = inspect(engine)
    for table in metadata.tables.values():
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}
    indexes = {i["name"] for i in inspector.get_indexes("feedback_results")}
    assert {"feedback_results_event_time_idx", "feedback_results_product_time_idx"} <= indexes
    assert "sentiment_daily" in inspector.get_view_names()
    migrate.downgrade(database_url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    migrate.upgrade(database_url)
    assert {"feedback_results", "escalation_outbox"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_writes_are_idempotent_and_outbox_follows_new_escalations_only(database_url: str) -> None:
    engine = create_engine(database_url)
    store = ResultStore(engine, store_text="none")
    batch = [result("a", "negative", 0.9), result("b", "positive", 0.95), result("c", "positive", 0.55)]
    first = store.write(batch)
    assert (first.inserted, first.escalations, first.duplicates) == (3, 2, ())
    again = store.write(batch)  # a replay after a crash
    assert (again.inserted, again.escalations, sorted(again.duplicates)) == (0, 0, ["a", "b", "c"])
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from feedback_results")).scalar_one() == 3
        outbox = connection.execute(text("select event_id, payload from escalation_outbox order by event_id")).all()
        stored_text = connection.execute(text("select count(*) from feedback_results where text is not null"))
        assert stored_text.scalar_one() == 0  # TRIAGE_STORE_TEXT=false keeps no text
    assert [row.event_id for row in outbox] == ["a", "c"]
    assert outbox[0].payload["reason"] == "negative" and outbox[1].payload["reason"] == "low_confidence"
    assert outbox[0].payload["text"] is None
    engine.dispose()


def test_first_event_with_an_id_wins_within_a_batch(database_url: str) -> None:
    engine = create_engine(database_url)
    outcome = ResultStore(engine).write(
        [
            result("dup", "positive", 0.99, text_="first", offset=1),
            result("dup", "negative", 0.99, text_="second", offset=2),
        ]
    )
    assert (outcome.inserted, outcome.escalations, outcome.duplicates) == (1, 0, ("dup",))
    with engine.connect() as connection:
        row = connection.execute(text("select text, kafka_offset from feedback_results")).one()
        assert tuple(row) == ("first", 1)
        assert connection.execute(text("select count(*) from escalation_outbox")).scalar_one() == 0
    engine.dispose()


def test_text_and_metadata_survive_copy_exactly(database_url: str) -> None:
    """COPY's text format treats tab, newline, CR and backslash specially; stored values must not change."""
    awkward = "tab\there\nnew line\r\nCRLF \\N not null \\. \\\\ back\\slash \u00e9 \U0001f389 \"quoted\" 'single'"
    metadata = {"note": awkward, "nested": [1, 2.5, None, True, {"deep": "a\tb"}], "empty": "", "n": -7}
    engine = create_engine(database_url)
    outcome = ResultStore(engine).write(
        [result("odd\tid", "negative", 0.9, text_=awkward, metadata=metadata), result("empty-meta", "positive", 0.9)]
    )
    assert (outcome.inserted, outcome.escalations) == (2, 1)
    with engine.connect() as connection:
        row = connection.execute(text("select text, metadata from feedback_results where event_id = 'odd\tid'")).one()
        payload = connection.execute(text("select payload from escalation_outbox")).scalar_one()
    engine.dispose()
    assert row.text == awkward and row.metadata == metadata
    assert payload["event_id"] == "odd\tid" and payload["text"] == awkward


def test_copy_line_format() -> None:
    line = copy_line(["a\tb", None, True, False, 0.1, 3, {"k": "x\ny"}])
    assert line == 'a\\tb\t\\N\tt\tf\t0.1\t3\t{"k": "x\\\\ny"}\n'


def test_a_lost_connection_during_copy_is_a_retryable_error(database_url: str) -> None:
    """The store thread retries errors that invalidate the connection; COPY must raise them that way too."""
    engine = create_engine(database_url)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(CREATE_STAGING)
        pid = connection.exec_driver_sql("select pg_backend_pid()").scalar_one()
        with admin.connect() as other:
            other.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            _copy(connection, COPY_STAGING, io.StringIO(copy_line(["x"] * 21)))
        assert raised.value.connection_invalidated and classify(raised.value).kind is Kind.OUTAGE
    outcome = ResultStore(engine).write([result("after", "positive", 0.9)])  # the pool opened a new connection
    assert outcome.inserted == 1
    engine.dispose()
    admin.dispose()


def test_sentiment_daily_view(database_url: str) -> None:
    engine = create_engine(database_url)
    ResultStore(engine).write(
        [
            result("1", "negative", 0.9, product="web", day=20),
            result("2", "positive", 0.9, product="web", day=20),
            result("3", "positive", 0.55, product="web", day=20),
            result("4", "positive", 0.9, product="web", day=20),
            result("5", "negative", 0.8, product="app", day=21),
            result("6", "negative", 0.8, product="app", day=21, source="zendesk"),
        ]
    )
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "select day::text, source, product, total, negatives, share_negative::float, escalations "
                "from sentiment_daily order by day, product, source"
            )
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("2026-11-20", "survey", "web", 4, 1, 0.25, 2),
        ("2026-11-21", "survey", "app", 1, 1, 1.0, 1),
        ("2026-11-21", "zendesk", "app", 1, 1, 1.0, 1),
    ]


def test_values_postgres_refuses_are_isolated_and_the_rest_stored(database_url: str) -> None:
    """One statement fails for the batch; halving finds the two records, the other 30 are stored."""
    engine = create_engine(database_url)
    far_offset = datetime(2026, 11, 25, 10, tzinfo=timezone(timedelta(hours=20)))  # pydantic takes it; PG: +-15:59
    batch = [result(f"ok-{i}", "negative" if i % 3 else "positive", 0.9) for i in range(30)]
    batch.insert(7, result("inf", "negative", 0.9, metadata={"x": float("inf")}))  # COPY writes Infinity; jsonb: no
    batch.insert(20, result("tz", "positive", 0.9, created_at=far_offset))
    outcome = ResultStore(engine, publish_results=True).write(batch)
    assert outcome.inserted == 30 and not outcome.duplicates
    refused = {r.event_id: r for r in outcome.refused}
    assert set(refused) == {"inf", "tz"}
    assert all(r.sqlstate.startswith("22") for r in refused.values()), refused
    assert rows_of(engine, "select count(*) from feedback_results") == 30
    assert rows_of(engine, "select count(*) from escalation_outbox where kind = 'result'") == 30
    rejection = refused["inf"].rejection()
    assert rejection.error_class == "store_rejected" and "some text" not in rejection.message
    assert dict(rejection.extra_headers)["triage.error.sqlstate"] == refused["inf"].sqlstate
    again = ResultStore(engine, publish_results=True).write(batch)  # a replay: nothing new, the same refusals
    assert again.inserted == 0 and len(again.duplicates) == 30 and {r.event_id for r in again.refused} == {"inf", "tz"}
    engine.dispose()


def rows_of(engine: Engine, sql: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql)).scalar_one())


@pytest.mark.parametrize(
    ("setup", "sqlstate"),
    [
        ("alter database {db} set default_transaction_read_only = on", "25006"),  # a failover onto a replica
        ("alter database {db} set statement_timeout = '1ms'", "57014"),  # a role's or database's timeout
    ],
    ids=["read_only", "statement_timeout"],
)
def test_a_database_that_cannot_take_writes_now_is_an_outage(database_url: str, setup: str, sqlstate: str) -> None:
    engine = create_engine(database_url)
    name = make_url(database_url).database
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(setup.format(db=f'"{name}"')))
    engine.dispose()  # new sessions take the database's setting
    engine = create_engine(database_url)
    batch = [result(f"w-{i}", "negative", 0.9, text_="x " * 4000) for i in range(200)]
    with pytest.raises(Unavailable, match=sqlstate):
        ResultStore(engine).write(batch)
    engine.dispose()
    admin = create_engine(
        database_url, connect_args={"options": "-c statement_timeout=0 -c default_transaction_read_only=off"}
    )
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f'alter database "{name}" reset all'))
    admin.dispose()
    engine = create_engine(database_url)
    assert ResultStore(engine).write(batch).inserted == 200  # the same batch, once the database takes writes
    engine.dispose()


def test_a_privilege_problem_stops_the_worker_naming_the_sqlstate(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("create role triage_reader login"))
        connection.execute(text("grant select on all tables in schema public to triage_reader"))
    reader = create_engine(make_url(database_url).set(username="triage_reader"))
    with pytest.raises(DatabaseMisconfigured, match="SQLSTATE 42501") as raised:
        ResultStore(reader).write([result("p-1", "negative", 0.9)])
    assert raised.value.exit_status == 2
    reader.dispose()
    with engine.begin() as connection:
        connection.execute(text("revoke all on all tables in schema public from triage_reader"))
        connection.execute(text("drop role triage_reader"))
    engine.dispose()

"""Every verb answers an outage of what it needs in one line, exit 2, within 15 s, never a traceback:
a database that cannot be reached, a database nobody migrated, a broker that cannot be reached, a
topic the broker does not have. Against real services (embedded PostgreSQL, Tansu), stopped or bare."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_startup import bare_database  # noqa: F401 - a fixture
from worker.cli import main
from worker.devtools.local_services import LocalBroker, free_port

pytestmark = pytest.mark.integration
DEADLINE_S = 15.0
DATABASE_VERBS = {
    "report": ["report"],
    "report --plot": ["report", "--plot", "chart.png"],
    "ack": ["ack", "evt-1", "--label", "negative"],
    "export": ["export"],
    "forget": ["forget", "--event-id", "evt-1"],
    "compare": ["compare"],
    "adapt --from-database": ["adapt", "--from-database", "--out", "adapted"],
}
BROKER_VERBS = {
    "send": ["send", "events.jsonl"],
    "deadletters stats": ["deadletters", "stats"],
    "deadletters replay": ["deadletters", "replay", "--error-class", "invalid_json"],
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events.jsonl").write_text('{"event_id": "e1", "text": "fine"}\n')
    for name in ("TRIAGE_DATABASE_URL", "TRIAGE_KAFKA_BOOTSTRAP_SERVERS", "TRIAGE_SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


def answered_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the verb; it must exit 2 within the deadline and say one line. Returns the line."""
    capsys.readouterr()
    started = time.monotonic()
    status = main(argv)  # an exception here would be the traceback the operator saw
    took = time.monotonic() - started
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]  # JSON logs aside
    assert status == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("triage-worker: "), (argv, err)
    assert "Traceback" not in err and took < DEADLINE_S, (argv, took)
    return lines[0]


@pytest.mark.parametrize("verb", sorted([*DATABASE_VERBS, "migrate"]))
def test_a_database_that_cannot_be_reached(
    verb: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"postgresql://triage:S3cret@127.0.0.1:{free_port()}/triage")
    line = answered_in_one_line(DATABASE_VERBS.get(verb, ["migrate"]), capsys)
    assert "cannot reach the database at 127.0.0.1" in line and "TRIAGE_DATABASE_URL" in line
    assert "S3cret" not in line


@pytest.mark.parametrize("verb", sorted(DATABASE_VERBS))
def test_a_database_nobody_migrated(
    verb: str,
    bare_database: str,  # noqa: F811 - the fixture
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`report` and `compare` once ended in a 50-line SQLAlchemy traceback (relation ... does not exist)."""
    monkeypatch.setenv("TRIAGE_DATABASE_URL", bare_database)
    line = answered_in_one_line(DATABASE_VERBS[verb], capsys)
    assert "triage-worker migrate" in line


@pytest.mark.parametrize("verb", sorted(BROKER_VERBS))
def test_a_broker_that_cannot_be_reached(
    verb: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`deadletters stats` once printed nothing for 31 s, then a KafkaTimeoutError traceback."""
    monkeypatch.setenv("TRIAGE_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    line = answered_in_one_line(BROKER_VERBS[verb], capsys)
    assert "cannot reach the broker at 127.0.0.1" in line and "TRIAGE_KAFKA_BOOTSTRAP_SERVERS" in line


@pytest.mark.parametrize(
    "verb",
    [
        pytest.param(
            "send",
            marks=pytest.mark.skip(
                reason="Tansu creates any topic a producer asks for, whatever allow_auto_topic_creation says; "
                "Apache Kafka with auto.create.topics.enable=false refuses, and test_cli's fake producer holds "
                "send's one line for it"
            ),
        ),
        "deadletters stats",
        "deadletters replay",
    ],
)
def test_a_topic_the_broker_does_not_have(
    verb: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalBroker() as broker:  # no topics at all
        monkeypatch.setenv("TRIAGE_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        line = answered_in_one_line(BROKER_VERBS[verb], capsys)
    assert "feedback.events" in line or "feedback.deadletter" in line
    assert "does not exist" in line or "has no topic" in line


def test_report_with_nothing_in_the_window_says_when_the_newest_is(
    database_url: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """24 rows dated two days back made `report` say only 'no feedback in this window'."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import create_engine

    from tests.integration.test_store import result
    from worker.runtime.postgres.store import ResultStore

    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2, hours=3)
    engine = create_engine(database_url)
    items = [result(f"old-{i}", "negative", 0.9, created_at=two_days_ago) for i in range(24)]
    ResultStore(engine).write(items)
    engine.dispose()
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    assert main(["report", "--since", "24h"]) == 0
    out = capsys.readouterr().out
    assert "no feedback in the last 1d; the newest is from" in out and "try --since 3d" in out
    assert main(["report", "--since", "7d"]) == 0 and "old" not in capsys.readouterr().out.lower()

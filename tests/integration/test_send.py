"""`triage-worker send` publishes every line of a JSON-lines file as-is, keyed by event_id."""

from pathlib import Path

import pytest

from tests.services import INPUT
from worker.cli import main
from worker.devtools.local_services import LocalBroker, read_topic

pytestmark = pytest.mark.integration


def test_send_publishes_each_line_unchanged(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [b'{"event_id": "a", "text": "hello"}', b"not json", b'{"text": "no id"}']
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines[:2]) + b"\n\n" + lines[2] + b"\n")  # blank lines are skipped
    monkeypatch.setenv("TRIAGE_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    assert main(["send", str(path)]) == 0
    assert "sent 3 events" in capsys.readouterr().err
    records = read_topic(broker.bootstrap_servers, INPUT)
    assert sorted(r.value for r in records) == sorted(lines)
    assert {r.value: r.key for r in records}[lines[0]] == b"a"


def test_send_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err

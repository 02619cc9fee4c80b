"""`triage-worker demo` end to end on its own embedded Postgres and Tansu, with a tiny checkpoint."""

from pathlib import Path

import pytest

from worker.cli import main

pytestmark = pytest.mark.integration


def test_demo_runs_and_prints_every_section(
    checkpoint_label_n: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", str(checkpoint_label_n)]) == 0
    out = capsys.readouterr().out
    for section in (
        "== feedback_results (24)",
        "== escalations on feedback.escalations",
        "== dead letters on feedback.deadletter (4)",
        "== sentiment_daily",
        "demo OK",
    ):
        assert section in out

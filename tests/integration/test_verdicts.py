"""Reviewers' verdicts and calibration against the real database: migration 0003 with data, `ack --label`,
the agreement view, `export --reviewed` into `evaluate`, and a worker that applies a calibration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.checkpoints import CORPUS
from tests.integration.test_store import result
from tests.integration.test_trends import DOCS_TEXT, QUERY
from tests.services import WorkerProcess, produce, rows, wait_until
from worker.cli import main
from worker.devtools.local_services import LocalBroker
from worker.model.calibration import Calibration, load
from worker.ops import migrate
from worker.ops.quality.evaluate import score
from worker.ops.quality.labelled import Example
from worker.runtime.postgres.store import ResultStore
from worker.runtime.wiring import build_classifier
from worker.settings import Settings

pytestmark = pytest.mark.integration

VERDICT_COLUMNS = {"calibration", "reviewed_label", "reviewed_by", "reviewed_at"}


@pytest.fixture
def stored(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """neg-0..5 escalated as negative, unsure-0 escalated as low confidence, pos-0..3 not escalated;
    neg-5 stored without text."""
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    engine = create_engine(database_url)
    items = [result(f"neg-{i}", "negative", 0.9, text_=f"{CORPUS[1]} {i}") for i in range(5)]
    items += [
        result("unsure-0", "positive", 0.55, text_=CORPUS[6]),
        *(result(f"pos-{i}", "positive", 0.9) for i in range(4)),
    ]
    ResultStore(engine).write(items)
    ResultStore(engine, store_text="none").write([result("neg-5", "negative", 0.8)])
    engine.dispose()
    return database_url


def test_ack_label_records_verdicts_and_refuses_unknown_and_unescalated(
    stored: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ack", "neg-0", "neg-1", "--label", "negative", "--by", "rita"]) == 0
    assert "neg-0: acknowledged, verdict negative" in capsys.readouterr().out
    assert main(["ack", "neg-2"]) == 0  # a plain ack stays valid, and a verdict may come later
    assert main(["ack", "neg-2", "unsure-0", "--label", "positive", "--by", "sam"]) == 0
    out = capsys.readouterr().out
    assert "neg-2: already acknowledged, verdict positive" in out and "unsure-0: acknowledged, verdict positive" in out
    assert main(["ack", "neg-2", "--label", "negative", "--by", "rita"]) == 0
    assert "neg-2: already acknowledged, verdict changed from positive to negative" in capsys.readouterr().out
    assert main(["ack", "pos-0", "nope", "--label", "negative"]) == 1
    err = capsys.readouterr().err
    assert "pos-0: not escalated" in err and "nope: unknown event id" in err
    assert rows(stored, "select event_id, reviewed_label, reviewed_by from feedback_results "
                        "where reviewed_label is not null order by event_id") == [
        ("neg-0", "negative", "rita"), ("neg-1", "negative", "rita"), ("neg-2", "negative", "rita"),
        ("unsure-0", "positive", "sam"),
    ]  # fmt: skip
    assert rows(stored, "select count(*) from feedback_results where event_id = 'pos-0' and acknowledged_at is null")[
        0
    ] == (1,)
    # Agreement per day and model: 4 verdicts, the model said negative, negative, negative, positive: all agree.
    assert rows(stored, "select model, reviewed, agreed, agreement, reviewed_negative from review_agreement_daily") == [
        ("tiny-model", 4, 4, 1, 3)
    ]
    assert main(["ack", "unsure-0", "--label", "negative"]) == 0
    assert rows(stored, "select agreed, model_positive_reviewer_negative from review_agreement_daily") == [(3, 1)]
    readme_query = dict(QUERY.findall(DOCS_TEXT))["review-agreement"]
    assert [(m, n, a) for _, m, _, n, a, _ in rows(stored, readme_query)] == [("tiny-model", 4, 3)]


def test_export_round_trips_into_evaluate(
    stored: str, checkpoint_pos_neg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ack", "neg-0", "neg-1", "neg-5", "--label", "negative"]) == 0
    assert main(["ack", "unsure-0", "--label", "positive"]) == 0
    capsys.readouterr()
    assert main(["export", "--reviewed", "--since", "30d"]) == 0
    out, err = capsys.readouterr()
    assert "exported 3 reviewed results" in err and "left out 1 reviewed results stored without text" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(r["event_id"], r["label"], r["model_label"]) for r in lines} == {
        ("neg-0", "negative", "negative"), ("neg-1", "negative", "negative"), ("unsure-0", "positive", "positive"),
    }  # fmt: skip
    labelled = tmp_path / "reviewed.jsonl"
    labelled.write_text(out)
    summary = tmp_path / "figures.json"
    assert main(["evaluate", "--data", str(labelled), "--model", str(checkpoint_pos_neg), "--json", str(summary)]) == 0
    assert json.loads(summary.read_text())["n"] == 3
    assert main(["export", "--since", "30d"]) == 0  # --reviewed is what export writes, said or not
    with pytest.raises(SystemExit) as exited:
        main(["export", "--reviewed", "--since", "soon"])
    assert exited.value.code == 2


def test_migration_0003_goes_down_and_up_with_data(stored: str) -> None:
    assert main(["ack", "neg-0", "--label", "negative"]) == 0
    before = rows(stored, "select count(*), count(text) from feedback_results")
    migrate.downgrade(stored, "0002_trends_and_acks")
    engine = create_engine(stored)
    assert not VERDICT_COLUMNS & {c["name"] for c in inspect(engine).get_columns("feedback_results")}
    assert "review_agreement_daily" not in inspect(engine).get_view_names()
    assert rows(stored, "select count(*), count(text) from feedback_results") == before
    migrate.upgrade(stored)
    assert VERDICT_COLUMNS <= {c["name"] for c in inspect(engine).get_columns("feedback_results")}
    assert rows(stored, "select count(*) from feedback_results where reviewed_label is not null") == [(0,)]
    engine.dispose()
    with pytest.raises(Exception, match="reviewed_label_check"):
        rows(stored, "update feedback_results set reviewed_label = 'meh'")


def test_the_worker_stores_the_calibrated_score_that_evaluate_gives(
    broker: LocalBroker,
    database_url: str,
    checkpoint_pos_neg: Path,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    calibration_path = tmp_path / "calibration.json"
    calibration_path.write_text(Calibration(temperature=2.7, model=str(checkpoint_pos_neg)).to_json())
    calibration = load(calibration_path)
    texts = [f"{line} {i}" for i, line in enumerate(CORPUS * 2)]
    produce(broker.bootstrap_servers, [(f"c-{i}".encode(), json.dumps({"event_id": f"c-{i}", "text": t}).encode())
                                       for i, t in enumerate(texts)])  # fmt: skip
    worker = start_worker(TRIAGE_CALIBRATION=str(calibration_path), TRIAGE_MAX_BATCH_SIZE="8")
    wait_until(lambda: len(rows(database_url, "select 1 from feedback_results")) == len(texts), 120, "rows stored")
    worker.stop()
    assert f'"calibration": "{calibration.id}"' in worker.logs() or f"calibration={calibration.id}" in worker.logs()
    stored = {r[0]: r[1:] for r in rows(database_url, "select text, score, label, calibration from feedback_results")}
    settings = Settings(model=str(checkpoint_pos_neg), device="cpu", calibration=str(calibration_path))
    evaluated = score(build_classifier(settings), [Example(t, "positive", 0) for t in texts], show_progress=False)
    uncalibrated = score(
        build_classifier(settings, calibrated=False), [Example(t, "positive", 0) for t in texts], show_progress=False
    )
    for text_, answer, plain in zip(texts, evaluated.predictions, uncalibrated.predictions, strict=True):
        stored_score, stored_label, stored_calibration = stored[text_]
        assert stored_score == pytest.approx(answer.score, abs=1e-5) and stored_label == answer.label
        assert stored_calibration == calibration.id
        assert abs(answer.score - 0.5) <= abs(plain.score - 0.5) + 1e-9  # the temperature did soften it

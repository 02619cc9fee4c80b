"""The learning loop against the real PostgreSQL and broker: a shadow candidate and an audit sample in
a running worker, `compare` checked by hand, model identity on every row, and `adapt --from-database`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tests.checkpoints import BERT_MLM_FT, CORPUS, build_checkpoint
from tests.integration.test_store import result
from tests.services import ESCALATIONS, WorkerProcess, produce, rows, scalar, wait_until
from worker.cli import main
from worker.contracts.values import ClassifiedItem, Prediction, ShadowAnswer, TriageDecision
from worker.devtools.local_services import LocalBroker, read_topic
from worker.model.identity import directory_digest
from worker.ops.learning.compare import comparisons
from worker.runtime.postgres.store import ResultStore

pytestmark = pytest.mark.integration

EVENTS = 90


def test_a_shadow_candidate_and_an_audit_sample_in_a_running_worker(
    broker: LocalBroker,
    database_url: str,
    checkpoint_pos_neg: Path,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    candidate = build_checkpoint(tmp_path / "candidate", BERT_MLM_FT, seed=11)
    values = [
        (f"e-{i}".encode(), json.dumps({"event_id": f"e-{i}", "text": f"{CORPUS[i % len(CORPUS)]} {i}"}).encode())
        for i in range(EVENTS)
    ]
    produce(broker.bootstrap_servers, values)
    worker = start_worker(TRIAGE_SHADOW_MODEL=str(candidate), TRIAGE_AUDIT_SAMPLE_RATE="0.5")
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == EVENTS, 120, "all stored")
    assert worker.stop() == 0

    served = f"dir:{directory_digest(checkpoint_pos_neg)}"
    shadow = f"dir:{directory_digest(candidate)}"
    assert rows(database_url, "select distinct model_revision from feedback_results") == [(served,)]
    assert rows(database_url, "select count(*), min(model_revision), max(model) from shadow_results") == [
        (EVENTS, shadow, str(candidate))
    ]  # a shadow row for every stored row
    # The served model alone decides: escalated exactly when negative or unsure, whatever the shadow said.
    assert rows(
        database_url,
        "select count(*) from feedback_results where escalated <> (label = 'negative' or score < 0.6)",
    ) == [(0,)]
    differ = scalar(
        database_url, "select count(*) from shadow_results s join feedback_results r using (event_id) "
        "where s.escalated <> r.escalated",
    )  # fmt: skip
    assert differ > 0, "the two tiny models should disagree somewhere, or this test shows nothing"

    # The audit sample: about half the items not escalated, sent with reason `audit`, never counted as escalated.
    escalated, audited, not_escalated = rows(
        database_url,
        "select count(*) filter (where escalated), count(*) filter (where audit_sample), "
        "count(*) filter (where not escalated) from feedback_results",
    )[0]
    assert 0 < audited < not_escalated  # type: ignore[operator]
    assert scalar(database_url, "select count(*) from feedback_results where audit_sample and escalated") == 0
    reasons = Counter(json.loads(r.value)["reason"] for r in read_topic(broker.bootstrap_servers, ESCALATIONS))
    assert reasons["audit"] == audited
    assert reasons["negative"] + reasons["low_confidence"] == escalated
    messages = [json.loads(r.value) for r in read_topic(broker.bootstrap_servers, ESCALATIONS)]
    assert {m["model_revision"] for m in messages} == {served}
    started = next(json.loads(line) for line in worker.logs().splitlines() if '"worker_started"' in line)
    assert started["revision"] == served and started["shadow_revision"] == shadow
    assert started["audit_sample_rate"] == 0.5


def shadowed(event_id: str, label: str, score: float, shadow_label: str, shadow_score: float) -> ClassifiedItem:
    served = result(event_id, label, score)
    negative_prob = shadow_score if shadow_label == "negative" else 1 - shadow_score
    prediction = Prediction(shadow_label, shadow_score, negative_prob, shadow_label.upper())  # type: ignore[arg-type]
    escalate = shadow_label == "negative" or shadow_score < 0.6
    decision = TriageDecision(
        escalate, ("negative" if shadow_label == "negative" else "low_confidence") if escalate else None
    )  # type: ignore[arg-type]
    return ClassifiedItem(
        served.item,
        served.prediction,
        served.decision,
        served.model,
        3.5,
        1,
        model_revision="dir:served000000",
        shadow=ShadowAnswer("candidate", "dir:shadow000000", None, prediction, decision),
    )


def test_compare_figures_checked_by_hand(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    engine = create_engine(database_url)
    items = [
        shadowed("q1", "negative", 0.9, "negative", 0.8),  # queue; truly negative; both catch it
        shadowed("q2", "negative", 0.7, "positive", 0.9),  # queue; truly negative; shadow misses it
        shadowed("q3", "negative", 0.8, "positive", 0.95),  # queue; truly positive; shadow right
        shadowed("p1", "positive", 0.95, "positive", 0.9),  # not escalated; no verdict
        shadowed("p2", "positive", 0.97, "negative", 0.7),  # not escalated; no verdict
    ]
    ResultStore(engine).write(items)
    audits = [shadowed("a1", "positive", 0.9, "negative", 0.9), shadowed("a2", "positive", 0.9, "positive", 0.9)]
    ResultStore(engine).write([
        ClassifiedItem(**{**vars(a), "decision": TriageDecision(False, None, audit=True)}) for a in audits
    ])  # fmt: skip
    assert main(["ack", "q1", "q2", "a1", "--label", "negative"]) == 0
    assert main(["ack", "q3", "a2", "--label", "positive"]) == 0
    capsys.readouterr()
    [found] = comparisons(engine, None)
    assert (found.compared, found.agreed, found.served_escalated, found.shadow_escalated) == (7, 3, 3, 3)
    queue, audit = found.reviewed["escalation queue"], found.reviewed["audit: misses"]
    # queue: q1 q2 q3, negatives q1 q2; served right on q1 q2, shadow on q1 q3; caught: served 2, shadow 1
    assert (queue.items, queue.negatives, queue.served_correct, queue.shadow_correct) == (3, 2, 2, 2)
    assert (queue.served_caught, queue.shadow_caught) == (2, 1)
    # audit: a1 negative (served said positive, shadow negative), a2 positive (both right)
    assert (audit.items, audit.negatives, audit.served_correct, audit.shadow_correct) == (2, 1, 1, 2)
    assert (audit.served_caught, audit.shadow_caught) == (0, 1)
    assert main(["compare", "--since", "30d"]) == 0  # processed now: inside the window
    out = capsys.readouterr().out
    assert "agree on 42.9% (4 differ)" in out and "audit: misses" in out
    day = rows(database_url, "select compared, agreed, escalated, shadow_escalated, reviewed, reviewed_correct, "
                             "reviewed_shadow_correct from shadow_comparison_daily")  # fmt: skip
    assert day == [(7, 3, 3, 3, 5, 3, 4)]
    assert rows(database_url, "select sampled, reviewed, model_agreed, reviewed_negative from audit_sample_daily") == [
        (2, 2, 1, 1)
    ]
    exported = tmp_export(capsys)
    assert {(e["event_id"], e["audit"]) for e in exported} == {
        ("q1", False),
        ("q2", False),
        ("q3", False),
        ("a1", True),
        ("a2", True),
    }
    engine.dispose()


def tmp_export(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["export"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_adapt_reads_the_stored_feedback(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    engine = create_engine(database_url)
    ResultStore(engine).write(
        [result(f"t-{i}", "positive", 0.9, text_=f"{CORPUS[i % len(CORPUS)]} {i}") for i in range(120)]
    )
    ResultStore(engine, store_text="none").write([result("hidden", "positive", 0.9)])
    engine.dispose()
    base = build_checkpoint(tmp_path / "base", BERT_MLM_FT, trainable=True)
    out = tmp_path / "adapted"
    assert (
        main(["adapt", "--from-database", "--since", "90d", "--model", str(base), "--out", str(out), "--epochs", "1"])
        == 0
    )
    card = json.loads((out / "triage-card.json").read_text())
    assert card["texts"]["source"] == "the stored feedback of the last 90d"
    assert card["texts"]["training"] + card["texts"]["held_out"] == 120  # the text-less row is skipped
    assert main(["adapt", "--data", str(tmp_path / "x.jsonl"), "--since", "1d", "--out", str(tmp_path / "o")]) == 2
    assert "--since applies to --from-database" in capsys.readouterr().err

"""The ResultWriter contract: what the store stage relies on from the store (see ports.ResultWriter)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Protocol

import pytest

from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord
from worker.runtime.ports import ResultWriter
from worker.runtime.retry import Unavailable
from worker.runtime.triage import TriagePolicy

POLICY = TriagePolicy(0.60, audit_sample_rate=0.0)


class WriterHarness(Protocol):
    def writer(self) -> ResultWriter:
        """A writer over a fresh, empty store."""

    def stored(self) -> set[str]:
        """The event ids stored so far."""

    def outage(self) -> AbstractContextManager[ResultWriter]:
        """A writer of the same store while the database cannot be reached."""


def item(
    event_id: str, label: str = "positive", score: float = 0.9, offset: int = 0, **metadata: object
) -> ClassifiedItem:
    prediction = Prediction(label, score, score if label == "negative" else 1 - score, label.upper())  # type: ignore[arg-type]
    feedback = FeedbackItem(
        record=RawRecord("feedback.events", 0, offset, event_id.encode(), b"{}", timestamp_ms=1_763_000_000_000),
        event_id=event_id,
        text="some feedback",
        product="web",
        source="survey",
        created_at=datetime(2026, 11, 20, 12, tzinfo=timezone.utc),
        metadata=dict(metadata) or None,
    )
    return ClassifiedItem(feedback, prediction, POLICY.decide(prediction, event_id), "tiny-model", 3.5, 1)


class WriterContract:
    """Subclass with a `harness` fixture."""

    def test_new_results_are_stored_and_escalations_counted(self, harness: WriterHarness) -> None:
        writer = harness.writer()
        batch = [item("a"), item("b", "negative", 0.95), item("c", "positive", 0.55), item("d", offset=3)]
        outcome = writer.write(batch)
        assert (outcome.inserted, outcome.escalations, outcome.duplicates, outcome.refused) == (4, 2, (), ())
        assert harness.stored() == {"a", "b", "c", "d"}

    def test_a_replay_stores_nothing_twice_and_says_which(self, harness: WriterHarness) -> None:
        writer = harness.writer()
        writer.write([item("a"), item("b", "negative")])
        again = writer.write([item("a"), item("b", "negative"), item("c")])
        assert (again.inserted, again.escalations, sorted(again.duplicates)) == (1, 0, ["a", "b"])
        assert harness.stored() == {"a", "b", "c"}

    def test_within_a_batch_the_first_of_an_id_wins(self, harness: WriterHarness) -> None:
        writer = harness.writer()
        outcome = writer.write([item("a", "negative"), item("a", "positive", offset=1)])
        assert (outcome.inserted, outcome.escalations, outcome.duplicates) == (1, 1, ("a",))

    def test_a_value_the_database_refuses_comes_back_and_the_rest_is_stored(self, harness: WriterHarness) -> None:
        writer = harness.writer()
        batch = [item(f"ok-{i}") for i in range(5)]
        batch.insert(2, item("inf", x=float("inf")))  # JSONB holds no infinity
        outcome = writer.write(batch)
        assert outcome.inserted == 5 and [r.event_id for r in outcome.refused] == ["inf"]
        [refusal] = outcome.refused
        assert refusal.sqlstate.startswith("22") and refusal.record == batch[2].item.record
        assert harness.stored() == {f"ok-{i}" for i in range(5)}

    def test_an_outage_raises_unavailable_and_stores_nothing(self, harness: WriterHarness) -> None:
        harness.writer()
        with harness.outage() as down, pytest.raises(Unavailable):
            down.write([item("a")])
        assert harness.stored() == set()

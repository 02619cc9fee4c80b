"""The shadow candidate in the infer stage: an answer for every item, decisions from the served model only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.unit.fakes import FakeModel
from worker.contracts.inference import Answer, Inference, InferenceStats
from worker.contracts.values import ClassificationFailure, FeedbackItem, Prediction, RawRecord
from worker.runtime.batches import Decoded, Polled, Tokenized
from worker.runtime.stages import InferStage, Shadow
from worker.runtime.triage import TriagePolicy


class Contrarian(FakeModel):
    """Says the opposite of FakeModel, and cannot take a text with 'odd' in it."""

    model_name = "contrarian"
    revision = "dir:contra000000"

    def classify(self, encoded: list[str]) -> Inference:
        answers: list[Answer] = []
        for text in encoded:
            if "odd" in text:
                answers.append(ClassificationFailure("the candidate cannot take it"))
            else:
                negative = "bad" not in text
                answers.append(Prediction("negative" if negative else "positive", 0.9, 0.9 if negative else 0.1, "X"))
        return Inference(answers, InferenceStats(len(encoded), 1, 0, 0, inference_ms=1.0))


def batch(texts: Sequence[str]) -> Tokenized[list[str]]:
    items = tuple(FeedbackItem(RawRecord("t", 0, i, None, b"{}"), f"e-{i}", text) for i, text in enumerate(texts))
    return Tokenized(Decoded(Polled((), 0), items, (), ()), list(texts), ())


def test_the_shadow_answers_every_item_and_decides_nothing() -> None:
    served = FakeModel()
    stage = InferStage(served, TriagePolicy(0.6), Shadow(Contrarian(), TriagePolicy(0.6)))
    inferred = stage.process(batch(["fine", "bad one", "odd but fine", "unsure"]))
    by_id = {c.item.event_id: c for c in inferred.classified}
    assert [(c.decision.escalate, c.decision.reason) for c in by_id.values()] == [
        (False, None),
        (True, "negative"),
        (False, None),
        (True, "low_confidence"),
    ]  # fmt: skip  (the served model's policy alone)
    assert by_id["e-0"].shadow is not None and by_id["e-0"].shadow.prediction.label == "negative"
    assert by_id["e-0"].shadow.decision.escalate and by_id["e-0"].shadow.model_revision == "dir:contra000000"
    assert by_id["e-1"].shadow is not None and not by_id["e-1"].shadow.decision.escalate
    assert by_id["e-2"].shadow is None  # the candidate failed on it: no shadow row, the result is stored as ever
    assert all(c.model_revision == "dir:fake00000000" for c in inferred.classified)
    assert not inferred.rejections


def test_without_a_shadow_nothing_is_attached() -> None:
    inferred = InferStage(FakeModel(), TriagePolicy(0.6)).process(batch(["fine", "bad"]))
    assert [c.shadow for c in inferred.classified] == [None, None]


class Broken(Contrarian):
    """A candidate whose runtime fails on every batch, as ONNX Runtime did: `RuntimeError [ONNXRuntimeError]`."""

    def classify(self, encoded: list[str]) -> Inference:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")


def test_a_shadow_that_fails_leaves_serving_alone_and_is_counted() -> None:
    failures: list[BaseException] = []
    stage = InferStage(FakeModel(), TriagePolicy(0.6), Shadow(Broken(), TriagePolicy(0.6), failures.append))
    inferred = stage.process(batch(["fine", "bad one"]))
    assert [c.prediction.label for c in inferred.classified] == ["positive", "negative"]  # served as ever
    assert [c.shadow for c in inferred.classified] == [None, None]  # no shadow rows for this batch
    assert len(failures) == 1 and isinstance(failures[0], RuntimeError)


def test_a_shadow_candidate_that_cannot_load_leaves_the_worker_serving(tmp_path: Path) -> None:
    from worker.runtime.service.metrics import Metrics
    from worker.runtime.wiring import build_shadow
    from worker.settings import Settings

    metrics = Metrics()
    shadow, reason = build_shadow(Settings(shadow_model=str(tmp_path / "no-such-model"), device="cpu"), metrics)
    assert shadow is None and reason is not None and "no such model directory" in reason
    assert metrics.shadow_loaded._value.get() == 0  # noqa: SLF001 - the gauge /metrics serves

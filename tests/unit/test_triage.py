import pytest

from worker.contracts.values import Prediction
from worker.runtime.triage import TriagePolicy


def prediction(label: str, score: float) -> Prediction:
    negative = score if label == "negative" else 1 - score
    return Prediction(label=label, score=score, negative_prob=negative, raw_label=label.upper())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "score", "escalate", "reason"),
    [
        ("negative", 0.99, True, "negative"),
        ("negative", 0.51, True, "negative"),  # negative wins over low confidence
        ("positive", 0.59, True, "low_confidence"),
        ("positive", 0.5999, True, "low_confidence"),
        ("positive", 0.60, False, None),  # the cards' rule: under 0.60 is uncertain
        ("positive", 0.98, False, None),
    ],
)
def test_policy(label: str, score: float, escalate: bool, reason: str | None) -> None:
    decision = TriagePolicy(0.60).decide(prediction(label, score))
    assert (decision.escalate, decision.reason) == (escalate, reason)


def test_threshold_bounds() -> None:
    with pytest.raises(ValueError):
        TriagePolicy(1.5)
    assert not TriagePolicy(0.0).decide(prediction("positive", 0.5)).escalate

"""Triage policy: decide which results a human must see.

Escalate when the label is negative, or when the model is unsure (score under the threshold;
the model cards put it at 0.60). Negative wins as the reason when both hold.
"""

from __future__ import annotations

from worker.contracts.values import Prediction, TriageDecision


class TriagePolicy:
    def __init__(self, low_confidence_threshold: float = 0.60) -> None:
        if not 0.0 <= low_confidence_threshold <= 1.0:
            raise ValueError("low_confidence_threshold must be within [0, 1]")
        self.threshold = low_confidence_threshold

    def decide(self, prediction: Prediction) -> TriageDecision:
        if prediction.label == "negative":
            return TriageDecision(escalate=True, reason="negative")
        if prediction.score < self.threshold:
            return TriageDecision(escalate=True, reason="low_confidence")
        return TriageDecision(escalate=False, reason=None)

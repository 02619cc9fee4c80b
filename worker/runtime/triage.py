"""Triage policy: decide which results a human must see.

Escalate when the label is negative, or when the model is unsure (score under the threshold;
the model cards put it at 0.60). Negative wins as the reason when both hold.

Verdicts on escalations describe the escalation queue, not the stream. With an audit sample
(TRIAGE_AUDIT_SAMPLE_RATE), a share of the items that are not escalated goes to the reviewers as
well, with reason `audit`: an unbiased sample for measuring the model. The draw is a function of
the event id (its BLAKE2 digest read as a number in [0, 1)), so a replayed event is drawn the same
way and every worker process agrees.

With categories (a Router, see routing), every decision also carries the item's route: the team an
escalation goes to, or `general`. Items that are not escalated keep theirs for the trends.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from worker.contracts.values import Prediction, TriageDecision
from worker.runtime.routing import Router

DRAW_SCALE = float(1 << 64)


class TriagePolicy:
    def __init__(
        self,
        low_confidence_threshold: float = 0.60,
        audit_sample_rate: float = 0.0,
        audit_scope: str = "not_escalated",
        router: Router | None = None,
    ) -> None:
        if not 0.0 <= low_confidence_threshold <= 1.0:
            raise ValueError("low_confidence_threshold must be within [0, 1]")
        if not 0.0 <= audit_sample_rate <= 1.0:
            raise ValueError("audit_sample_rate must be within [0, 1]")
        if audit_scope not in ("not_escalated", "all"):
            raise ValueError("audit_scope must be not_escalated or all")
        self.threshold = low_confidence_threshold
        self.audit_sample_rate = audit_sample_rate
        self.audit_scope = audit_scope
        self.router = router

    def decide(self, prediction: Prediction, event_id: str = "") -> TriageDecision:
        decision = self._decide(prediction, event_id)
        if self.router is None:
            return decision
        return replace(decision, route=self.router.route(prediction))

    def _decide(self, prediction: Prediction, event_id: str) -> TriageDecision:
        every = self.audit_scope == "all"
        if prediction.label == "negative":
            return TriageDecision(escalate=True, reason="negative", audit=every and self.drawn(event_id))
        if prediction.score < self.threshold:
            return TriageDecision(escalate=True, reason="low_confidence", audit=every and self.drawn(event_id))
        return TriageDecision(escalate=False, reason=None, audit=self.drawn(event_id))

    def drawn(self, event_id: str) -> bool:
        """Whether `event_id` falls in the audit sample."""
        if self.audit_sample_rate <= 0.0:
            return False
        digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") / DRAW_SCALE < self.audit_sample_rate

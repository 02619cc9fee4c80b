"""Routing: which team an escalation goes to, from the category head's answer (TRIAGE_CATEGORIES).

An item is routed to its predicted category's team when all of these hold; otherwise it stays in
`general`, the queue everyone reads:
- the category is defined in the category file (the model's head may know fewer);
- it is not gated: its held-out F1 (measured by `finetune`, refreshed by `calibrate`) reaches
  TRIAGE_CATEGORY_F1_FLOOR. A category never measured is gated too, until it passes;
- its calibrated score reaches the threshold: the one `calibrate --target-routed-accuracy` chose,
  else TRIAGE_CATEGORY_THRESHOLD.

Under `routing: topic` the route is the topic the escalation goes to instead of
TRIAGE_ESCALATION_TOPIC; under `routing: key` every escalation stays on that topic and the route
rides in the `triage.route` header for a router downstream. Either way the message key stays the
event id. The decision is a function of the answer alone, so every worker process agrees.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.contracts.categories import GENERAL, CategoryList
from worker.contracts.values import Prediction, Route


class Router:
    def __init__(
        self,
        categories: CategoryList,
        *,
        threshold: float,
        f1_floor: float,
        figures: Mapping[str, Mapping[str, float]],
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("the category threshold must be within [0, 1]")
        self.categories = categories
        self.threshold = threshold
        self.f1_floor = f1_floor
        self.gated = {name: why for name in categories.names if (why := gated_because(figures.get(name), f1_floor))}

    def route(self, prediction: Prediction) -> Route | None:
        """The route of an answer; None when the model answers no category (it has no head)."""
        if prediction.category is None or prediction.category_score is None:
            return None
        name, score = prediction.category, prediction.category_score
        defined = self.categories.by_name.get(name)
        if defined is None or name in self.gated or score < self.threshold:
            return Route(GENERAL, name, score, None)
        return Route(name, name, score, defined.route)

    def describe(self) -> dict[str, object]:
        return {
            "categories": self.categories.names,
            "routing": self.categories.routing,
            "category_threshold": self.threshold,
            "category_f1_floor": self.f1_floor,
            "gated": dict(self.gated) or "none",
        }


def gated_because(figures: Mapping[str, float] | None, floor: float) -> str | None:
    """Why a category is not routed yet (None: it may be): never measured, or its F1 under the floor."""
    if not figures or "f1" not in figures:
        return "no held-out F1 yet (train or calibrate with tags of it)"
    if figures["f1"] < floor:
        return f"held-out F1 {figures['f1']:.2f} < floor {floor:.2f} (support {int(figures.get('support', 0))})"
    return None

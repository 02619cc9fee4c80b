"""Routing by category, in memory: which answers go to a team, the figures that gate a category, the
relay's lane per category topic, the labelled files' tags, and the keywords of `categories suggest`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from worker.contracts.categories import parse
from worker.contracts.values import Prediction
from worker.ops.quality import category_measures
from worker.ops.quality.category_measures import Tagged
from worker.ops.quality.labelled import LabelledFileError, read_examples
from worker.runtime.ports import Message, OutboxRow, Published
from worker.runtime.relay import OutboxRelay
from worker.runtime.routing import Router
from worker.runtime.triage import TriagePolicy

CATEGORIES = parse(
    {
        "categories": [
            {"name": "billing", "route": "support.billing"},
            {"name": "delivery", "route": "support.delivery"},
            {"name": "app", "route": "support.app"},
        ]
    }
)
MEASURED = {"billing": {"f1": 0.8, "support": 40}, "delivery": {"f1": 0.4, "support": 30}}  # app: never measured


def answer(category: str, score: float, label: str = "negative") -> Prediction:
    return Prediction(label, 0.9, 0.9 if label == "negative" else 0.1, label, 2.0, category, score)  # type: ignore[arg-type]


def test_only_a_measured_category_above_its_floor_and_the_threshold_is_routed() -> None:
    router = Router(CATEGORIES, threshold=0.7, f1_floor=0.6, figures=MEASURED)
    billing = router.route(answer("billing", 0.71))
    assert billing is not None and (billing.category, billing.destination) == ("billing", "support.billing")
    under = router.route(answer("billing", 0.69))
    assert under is not None and (under.category, under.predicted, under.destination) == ("general", "billing", None)
    assert router.route(answer("delivery", 0.99)).category == "general"  # type: ignore[union-attr]  # F1 0.4
    assert router.route(answer("app", 0.99)).category == "general"  # type: ignore[union-attr]  # never measured
    assert router.route(answer("general", 0.99)).category == "general"  # type: ignore[union-attr]
    assert set(router.gated) == {"delivery", "app"} and "0.40 < floor 0.60" in router.gated["delivery"]
    assert router.route(Prediction("negative", 0.9, 0.9, "NEG")) is None  # a model without a head


def test_the_policy_keeps_the_route_of_items_it_does_not_escalate() -> None:
    policy = TriagePolicy(0.6, router=Router(CATEGORIES, threshold=0.5, f1_floor=0.0, figures=MEASURED))
    kept = policy.decide(answer("billing", 0.9, label="positive"))
    assert not kept.escalate and kept.route is not None and kept.route.category == "billing"
    assert TriagePolicy(0.6).decide(answer("billing", 0.9)).route is None


def tagged(tag: str, top: int, negative: bool = True, strength: float = 4.0) -> Tagged:
    logits = [0.0] * 4  # billing, delivery, app, general
    logits[top] = strength
    return Tagged(tag, negative, tuple(logits))


def test_category_figures_counted_by_hand() -> None:
    names = ["billing", "delivery", "app", "general"]
    examples = [
        tagged("billing", 0),
        tagged("billing", 0),
        tagged("billing", 1),  # delivery said for a billing item
        tagged("delivery", 1),
        tagged("general", 0, strength=1.0),  # unsure billing for a general item: under the threshold
        tagged("general", 3, negative=False),
    ]
    found = category_measures.measure(examples, names, temperature=1.0, threshold=0.8, f1_floor=0.6)
    # billing: tp 2, said 3 (incl. the general one), support 3 -> p 2/3 r 2/3 f1 0.667
    assert found.per_category["billing"]["f1"] == pytest.approx(0.6667, abs=1e-4)
    # delivery: tp 1, said 2, support 1 -> p 0.5 r 1 f1 0.667; app: no support, left out of the mean
    assert found.macro_f1 == pytest.approx(2 / 3, abs=1e-4) and found.per_category["app"]["gated"]
    # softmax of [4, 0, 0, 0] is 0.948 (routed); of [1, 0, 0, 0] 0.475 (not): 4 of the 5 negatives routed
    assert found.routed_share == pytest.approx(4 / 5)
    assert found.routed_accuracy == pytest.approx(3 / 4) and found.general_routed == 0.0
    chosen = category_measures.choose_threshold(examples, names, temperature=1.0, f1_floor=0.0, target=0.75)
    assert chosen.routed_accuracy is not None and chosen.routed_accuracy >= 0.75
    with pytest.raises(Exception, match="reaches a routed accuracy of 1.0"):
        category_measures.choose_threshold(examples, names, temperature=1.0, f1_floor=0.0, target=1.0)


def test_the_category_temperature_undoes_an_overconfident_head() -> None:
    names = ["billing", "delivery", "app", "general"]
    right = [tagged("billing", 0, strength=8.0) for _ in range(60)]
    wrong = [tagged("delivery", 0, strength=8.0) for _ in range(40)]  # as sure when wrong
    assert category_measures.fit_temperature(right + wrong, names) > 3.0


class Lanes:
    """An outbox whose rows name their topics, claimed per (kind, topic) as the real table does."""

    def __init__(self, topics: dict[int, str]) -> None:
        self.rows = {
            i: (topic, OutboxRow(i, f"e{i}", "{}", {"triage.category": topic}, None)) for i, topic in topics.items()
        }
        self.published: set[int] = set()

    @contextmanager
    def claim(self, kind: str, topic: str, limit: int) -> Iterator[Any]:
        outbox, mine = self, [r for i, (t, r) in sorted(self.rows.items()) if t == topic and i not in self.published]

        class Claim:
            rows = mine[:limit]

            def published(self, ids: list[int], at: datetime) -> None:
                outbox.published |= set(ids)

            def failed(self, ids: list[int], error: str | None) -> None: ...

            def parked(self, reasons: dict[int, str], at: datetime) -> None: ...

        yield Claim()


class Broker:
    def __init__(self, down: set[str]) -> None:
        self.down, self.sent = down, []  # type: ignore[var-annotated]

    def publish(self, topic: str, messages: list[Message]) -> Published:
        if topic in self.down:
            return Published([], [m.ref for m in messages], "unknown topic")
        self.sent += [(topic, m.key) for m in messages]
        return Published([m.ref for m in messages], [], None)


def test_each_category_topic_is_a_lane_that_fails_alone() -> None:
    outbox = Lanes({0: "esc", 1: "support.billing", 2: "support.app", 3: "support.billing"})
    broker = Broker(down={"support.app"})
    relay = OutboxRelay(outbox, broker, {"escalation": "esc"}, routes=CATEGORIES.topics())  # type: ignore[arg-type]
    assert relay.publish_all() == {"escalation": 3}  # by kind, lanes summed (what the metrics count)
    assert sorted(broker.sent) == [("esc", b"e0"), ("support.billing", b"e1"), ("support.billing", b"e3")]
    assert outbox.published == {0, 1, 3}  # the app team's topic is missing: its row waits, the others flow


def test_labelled_rows_carry_a_checked_category(tmp_path: Path) -> None:
    data = tmp_path / "tags.jsonl"
    data.write_text(
        json.dumps({"text": "charged twice", "label": "negative", "category": "billing"})
        + "\n"
        + json.dumps({"text": "lovely", "label": "positive"})
        + "\n"
    )
    first, second = read_examples(data, categories=CATEGORIES)
    assert (first.category, second.category) == ("billing", None)
    data.write_text(json.dumps({"text": "late", "label": "negative", "category": "delivry"}) + "\n")
    with pytest.raises(LabelledFileError, match=r"tags.jsonl:1: category 'delivry'.*did you mean 'delivery'"):
        read_examples(data, categories=CATEGORIES)


def test_class_tfidf_keeps_the_words_of_each_cluster() -> None:
    pytest.importorskip("numpy")
    import numpy as np

    from worker.ops.learning.suggest import class_tfidf_keywords

    words = ["refund", "charged", "parcel", "late", "the"]
    counts = np.array([[5, 4, 0, 0, 4], [0, 0, 6, 3, 4]], dtype=float)
    first, second = class_tfidf_keywords(counts, words, top=2)
    assert (first, second) == (["refund", "charged"], ["parcel", "late"])  # `the` is everywhere: weighed down


def test_a_round_report_that_raises_does_not_end_the_background_loop() -> None:
    import threading

    from worker.runtime.background import Periodic
    from worker.runtime.batches import StageName

    rounds = threading.Semaphore(0)

    def job() -> dict[str, int]:
        rounds.release()
        return {"escalation": 1}

    def observer(report: object) -> None:
        raise KeyError("escalation@support.app")  # what once killed the relay thread

    loop = Periodic("relay", StageName.RELAY, job, 0.01)
    loop.start(observer)
    assert all(rounds.acquire(timeout=5) for _ in range(3)), "the loop stopped after the first report failed"
    loop.stop(final_round=False, timeout_s=5)


def test_an_unmet_routed_accuracy_target_is_said_and_the_configured_threshold_kept() -> None:
    names = ["billing", "delivery", "app", "general"]
    confused = [tagged("billing", 1) for _ in range(20)] + [tagged("delivery", 0) for _ in range(20)]
    with pytest.raises(Exception, match="no category threshold"):
        category_measures.fit(confused, confused, names, f1_floor=0.0, threshold=0.8, target=0.9)
    section, figures = category_measures.fit(
        confused, confused, names, f1_floor=0.0, threshold=0.8, target=0.9, keep_unmet=True
    )
    assert section.threshold is None and section.threshold_rule is None  # the worker's setting applies
    assert figures.threshold == 0.8 and figures.unmet and "no category threshold" in figures.as_dict()["unmet"]
    assert any("target not met" in line for line in category_measures.render(figures))

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


def test_the_audit_sample_draws_a_share_of_the_items_not_escalated_by_their_ids() -> None:
    policy = TriagePolicy(0.60, audit_sample_rate=0.2)
    ids = [f"evt-{i}" for i in range(20_000)]
    drawn = [policy.decide(prediction("positive", 0.95), event_id) for event_id in ids]
    share = sum(d.audit for d in drawn) / len(ids)
    assert 0.19 < share < 0.21
    assert all(not d.escalate and d.reason is None for d in drawn)  # an audit is not an escalation
    again = TriagePolicy(0.60, audit_sample_rate=0.2)  # another process, or a replay: the same draw
    assert [again.decide(prediction("positive", 0.95), i).audit for i in ids] == [d.audit for d in drawn]
    escalated = policy.decide(prediction("negative", 0.9), ids[0])
    assert escalated.escalate and not escalated.audit
    assert not any(TriagePolicy(0.60).decide(prediction("positive", 0.95), i).audit for i in ids[:1000])
    assert all(TriagePolicy(0.60, 1.0).decide(prediction("positive", 0.95), i).audit for i in ids[:1000])
    with pytest.raises(ValueError):
        TriagePolicy(0.6, audit_sample_rate=1.5)


def test_an_audit_of_the_whole_stream_marks_escalated_items_drawn_too() -> None:
    """By default the sample is drawn among the items not escalated (the model's misses); with the
    scope `all`, an escalated item drawn is marked as well, so the marked items sample every item."""
    from worker.contracts.values import Prediction
    from worker.runtime.triage import TriagePolicy

    negative, positive = Prediction("negative", 0.9, 0.9, "NEGATIVE"), Prediction("positive", 0.9, 0.1, "POSITIVE")
    ids = [f"e{i}" for i in range(2_000)]
    misses = TriagePolicy(0.6, audit_sample_rate=0.1)
    whole = TriagePolicy(0.6, audit_sample_rate=0.1, audit_scope="all")
    assert not any(misses.decide(negative, i).audit for i in ids)
    drawn = [whole.decide(negative, i) for i in ids]
    assert all(d.escalate and d.reason == "negative" for d in drawn)
    assert 150 < sum(d.audit for d in drawn) < 250  # about a tenth
    assert [whole.decide(positive, i).audit for i in ids] == [misses.decide(positive, i).audit for i in ids]

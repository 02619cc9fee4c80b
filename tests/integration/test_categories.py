"""Categories end to end, through the real broker and PostgreSQL, run by the worker: tags given by `ack`,
`export`, `finetune` of a category head on a tiny checkpoint, a shadow run, `compare` with category
figures, escalations on each category's topic with the category header, and `report --group-by category`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.checkpoints import BERT_FINETUNED_IMDB, build_checkpoint
from tests.services import ESCALATIONS, WorkerProcess, produce, rows, scalar, wait_until
from worker.cli import main
from worker.devtools.local_services import LocalBroker, read_topic

pytestmark = pytest.mark.integration

TOPICS = {"delivery": "support.delivery", "billing": "support.billing", "app": "support.app"}
TEXTS = {  # words of the tiny checkpoint's vocabulary (tests/checkpoints.py)
    "delivery": "shipping lost my order",
    "billing": "charged twice costs",
    "app": "app crashes froze page",
}
CATEGORY_FILE = "routing: topic\ncategories:\n" + "".join(
    f"  - name: {name}\n    description: {name} problems\n    route: {route}\n" for name, route in TOPICS.items()
)


def events(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"{prefix}-{i}".encode(),
            json.dumps({"event_id": f"{prefix}-{i}", "text": text(i), "product": "shop"}).encode(),
        )
        for i in range(count)
    ]


def text(i: int) -> str:
    """Even items are complaints, odd ones thanks: both the label and the category follow the words."""
    mood = "awful terrible dishonest" if i % 2 == 0 else "great thank you wonderful"
    return f"{mood} {TEXTS[list(TEXTS)[i % 3]]} {i}"


def category_of(event_id: str) -> str:
    return list(TEXTS)[int(event_id.rsplit("-", 1)[1]) % 3]


def test_tags_train_a_head_that_routes_escalations_to_each_team(
    broker: LocalBroker,
    database_url: str,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker.create_topics(dict.fromkeys(TOPICS.values(), 1))
    categories = tmp_path / "categories.yaml"
    categories.write_text(CATEGORY_FILE)
    base = build_checkpoint(tmp_path / "base", BERT_FINETUNED_IMDB, trainable=True)
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("TRIAGE_CATEGORIES", str(categories))
    # Every item goes to the reviewers (escalated or audited), and every head's answer is routed:
    # the machinery is under test here, not a tiny model's quality (see worker/docs/categories.md).
    routing = {"TRIAGE_CATEGORIES": str(categories), "TRIAGE_CATEGORY_F1_FLOOR": "0", "TRIAGE_CATEGORY_THRESHOLD": "0"}

    # 1. The base model (no head) serves; reviewers tag every item in the act of the verdict.
    produce(broker.bootstrap_servers, events("t", 150))
    worker = start_worker(TRIAGE_MODEL=str(base), TRIAGE_AUDIT_SAMPLE_RATE="1", **routing)
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 150, 120, "all stored")
    assert worker.stop() == 0
    assert scalar(database_url, "select count(*) from feedback_results where category is not null") == 0
    for name in TEXTS:
        for label, parity in (("negative", 0), ("positive", 1)):
            ids = [f"t-{i}" for i in range(150) if category_of(f"t-{i}") == name and i % 2 == parity]
            assert main(["ack", *ids, "--label", label, "--category", name, "--by", "rita"]) == 0
    assert main(["ack", "t-0", "--label", "negative", "--category", "delivry"]) == 2  # misspelt: refused
    assert "did you mean 'delivery'" in capsys.readouterr().err

    # 2. export, 3. finetune a category head beside the sentiment head.
    assert main(["export"]) == 0
    exported = capsys.readouterr().out
    data = tmp_path / "tagged.jsonl"
    data.write_text(exported)
    lines = [json.loads(line) for line in exported.splitlines()]
    assert len(lines) == 150 and {line["category"] for line in lines} == set(TEXTS)
    candidate = tmp_path / "candidate"
    finetune = ["finetune", "--data", str(data), "--model", str(base), "--out", str(candidate), "--epochs", "5"]
    assert main([*finetune, "--learning-rate", "3e-3", "--batch-size", "16", "--head-learning-rate", "1e-2"]) == 0
    out = capsys.readouterr().out
    assert "category head (joint)" in out and "macro-F1" in out
    head_card = json.loads((candidate / "triage-categories.json").read_text())
    assert head_card["names"] == [*TEXTS, "general"]
    calibration = json.loads((candidate / "triage-calibration.json").read_text())
    assert set(calibration["category"]["figures"]) == set(TEXTS)

    # 4. A shadow run: the candidate answers categories beside the served base; reviewers tag some.
    produce(broker.bootstrap_servers, events("s", 60))
    worker = start_worker(TRIAGE_MODEL=str(base), TRIAGE_SHADOW_MODEL=str(candidate), **routing)
    wait_until(lambda: scalar(database_url, "select count(*) from shadow_results") == 60, 120, "shadowed")
    assert worker.stop() == 0
    assert scalar(database_url, "select count(*) from shadow_results where category is null") == 0
    shadowed = [r[0] for r in rows(database_url, "select event_id from feedback_results where event_id like 's-%' "
                                                 "and (escalated or audit_sample)")]  # fmt: skip
    for event_id in shadowed:
        assert main(["ack", event_id, "--label", "negative", "--category", category_of(event_id)]) == 0

    # 5. compare shows the category figures of the shadow.
    capsys.readouterr()
    assert main(["compare", "--since", "1d", "--format", "json"]) == 0
    [found] = [c for c in json.loads(capsys.readouterr().out) if c["shadow_revision"].startswith("dir:")]
    routed_by_shadow = sum(n["shadow_routed"] for n in found["categories"].values())
    assert routed_by_shadow == 60 and all(n["served_routed"] == 0 for n in found["categories"].values())
    tagged = sum(n["tagged"] for n in found["categories"].values())
    assert tagged == len(shadowed)
    right, routed = found["routed"]["shadow"]
    assert routed == sum(1 for _ in shadowed) - sum(
        1
        for (c,) in rows(
            database_url,
            "select s.category from shadow_results s join feedback_results r "
            "using (event_id) where r.reviewed_category is not null",
        )  # fmt: skip
        if c == "general"
    )
    assert 0 <= right <= routed

    # 6. The candidate serves: each escalation lands on its category's topic, with the header.
    produce(broker.bootstrap_servers, events("p", 45))
    worker = start_worker(TRIAGE_MODEL=str(candidate), TRIAGE_AUDIT_SAMPLE_RATE="1", **routing)
    wait_until(
        lambda: (
            scalar(
                database_url,
                "select count(*) from escalation_outbox where event_id like 'p-%' and published_at is not null",
            )
            == 45
        ),  # fmt: skip
        120,
        "published",
    )
    assert worker.stop() == 0
    stored = dict(rows(database_url, "select event_id, category from feedback_results where event_id like 'p-%'"))
    on_topics = {}
    for name, topic in TOPICS.items():
        for record in read_topic(broker.bootstrap_servers, topic):
            headers = dict(record.headers)
            message = json.loads(record.value)
            assert headers["triage.category"] == name.encode() and headers["triage.route"] == topic.encode()
            assert headers["triage.schema"] == b"escalation-event.v3" and record.key == message["event_id"].encode()
            assert message["category"] == name and message["category_source"] == "model"
            on_topics[message["event_id"]] = name
    general = [json.loads(r.value) for r in read_topic(broker.bootstrap_servers, ESCALATIONS)]
    general_p = {m["event_id"]: m["category"] for m in general if m["event_id"].startswith("p-")}
    assert set(general_p.values()) <= {"general"}
    assert {**on_topics, **general_p} == stored  # every item exactly once, where its category sends it
    assert on_topics, "the candidate routed nothing: the test shows nothing"

    # A reviewer re-tags one of them for another team: it is sent again there, from the reviewer.
    moved = next(event_id for event_id, name in on_topics.items() if name == "billing")
    assert main(["ack", moved, "--label", "negative", "--category", "app"]) == 0
    assert "re-routed to app (support.app)" in capsys.readouterr().out
    worker = start_worker(TRIAGE_MODEL=str(candidate), **routing)
    wait_until(
        lambda: (
            scalar(
                database_url,
                "select count(*) from escalation_outbox where kind = 'reroute' and published_at is not null",
            )
            == 1
        ),  # fmt: skip
        120,
        "rerouted",
    )
    assert worker.stop() == 0
    [again] = [r for r in read_topic(broker.bootstrap_servers, "support.app") if r.key == moved.encode()]
    message = json.loads(again.value)
    assert (message["category"], message["category_source"], message["category_score"]) == ("app", "reviewer", None)
    assert dict(again.headers)["triage.category"] == b"app"

    # 7. The trends by category, with the time to acknowledge.
    capsys.readouterr()
    assert main(["report", "--group-by", "category", "--since", "1d", "--format", "json"]) == 0
    report = {row["group"]: row for row in json.loads(capsys.readouterr().out)}
    counted = dict(rows(database_url, "select coalesce(category, '(none)'), count(*) from feedback_results group by 1"))
    assert {group: row["total"] for group, row in report.items()} == counted
    assert report["(none)"]["acknowledged"] == 150 + len(shadowed)  # tagged before the head existed


def test_categories_suggest_clusters_what_stayed_in_general(
    database_url: str, checkpoint_pos_neg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    from dataclasses import replace

    from sqlalchemy import create_engine

    from tests.integration.test_store import result
    from worker.contracts.values import Route
    from worker.runtime.postgres.store import ResultStore

    engine = create_engine(database_url)
    topics = {"shipping": "shipping lost my order twice", "app": "app crashes froze page checkout"}
    items = []
    for i in range(40):
        base = result(f"g-{i}", "negative", 0.9, text_=f"{topics['shipping' if i % 2 else 'app']} {i}")
        routed = replace(base.decision, route=Route("general", "general", 0.4, None))
        items.append(replace(base, decision=routed))
    items.append(replace(result("team-0", "negative", 0.9, text_="charged"), decision=replace(
        items[0].decision, route=Route("billing", "billing", 0.95, "support.billing"))))  # fmt: skip
    ResultStore(engine, route_by_topic=True).write(items)
    engine.dispose()
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("TRIAGE_MODEL", str(checkpoint_pos_neg))
    assert main(["categories", "suggest", "--since", "3650d", "--clusters", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("40 escalations left in `general`")  # the routed one is not among them
    sizes = [int(line.split()[2]) for line in out.splitlines() if line.startswith("cluster ")]
    assert sum(sizes) == 40 and len(sizes) == 2
    assert out.count("  - name: ") == 2 and "keywords:" in out
    assert main(["categories", "suggest", "--since", "3650d", "--clusters", "20"]) == 2  # too few texts: one line
    assert "too few for 20 clusters" in capsys.readouterr().err

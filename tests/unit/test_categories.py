"""The category file (TRIAGE_CATEGORIES) and the category head: what is refused at start and how, and
that the second head adds answers without changing the first head's or needing a second pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.checkpoints import with_category_head
from worker.contracts.categories import GENERAL, CategoryError, load, parse

GOOD = {
    "routing": "topic",
    "categories": [
        {"name": "late_delivery", "description": "parcels late or lost", "route": "support.delivery"},
        {"name": "billing", "description": "charges and refunds", "route": "support.billing", "examples": ["twice"]},
    ],
}


def test_a_good_file_reads_in_order_with_its_topics(tmp_path: Path) -> None:
    path = tmp_path / "categories.json"
    path.write_text(json.dumps(GOOD))
    categories = load(path)
    assert categories.names == ["late_delivery", "billing"] and categories.routing == "topic"
    assert categories.topics() == ["support.billing", "support.delivery"]
    assert categories.by_name["billing"].examples == ("twice",)
    assert categories.check("billing") == "billing" and categories.check(GENERAL) == GENERAL


def test_yaml_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "categories.yaml"
    path.write_text(
        "routing: key\ncategories:\n  - name: billing\n    description: charges\n    route: billing-queue\n"
    )
    categories = load(path)
    assert categories.routing == "key" and categories.names == ["billing"] and categories.topics() == []


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d["categories"][0].update(descripton="x"), "field 'descripton' (did you mean 'description'?)"),
        (lambda d: d.update(routeing="topic"), "unknown field 'routeing' (did you mean 'routing'?)"),
        (lambda d: d["categories"].append(dict(d["categories"][0])), "category 'late_delivery' is defined twice"),
        (lambda d: d["categories"][0].update(name="Late Delivery"), "name must be lower-case letters"),
        (lambda d: d["categories"][0].update(name="general"), "'general' is reserved"),
        (lambda d: d["categories"][0].pop("route"), "'late_delivery' has no route"),
        (lambda d: d["categories"][0].update(route="support/delivery"), "is not a Kafka topic name"),
        (lambda d: d.update(routing="queue"), "routing must be `topic` or `key`"),
        (lambda d: d.update(categories=[]), "at least one category"),
    ],
)
def test_what_the_worker_could_misread_is_refused_in_one_line(change, said: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(json.dumps(GOOD))
    change(document)
    with pytest.raises(CategoryError) as refused:
        parse(document, "cats.json")
    message = str(refused.value)
    assert said in message and "\n" not in message and message.startswith("cats.json")


def test_a_misspelt_name_is_refused_with_the_nearest_one() -> None:
    categories = parse(GOOD)
    with pytest.raises(CategoryError, match="'biling' is not in .*did you mean 'billing'"):
        categories.check("biling")


def test_an_unreadable_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(CategoryError, match="cannot read the category file .*missing.json"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: [\n")
    with pytest.raises(CategoryError, match="is not valid YAML at line"):
        load(bad)


# --- the head --------------------------------------------------------------------------------


def test_the_head_answers_a_category_beside_an_unchanged_sentiment(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    from worker.model.classifier import SentimentClassifier

    texts = ["the product is great and i love it", "i was charged twice and nobody answers my emails"] * 3
    plain = SentimentClassifier(str(checkpoint_pos_neg), device="cpu")
    model = with_category_head(checkpoint_pos_neg, tmp_path / "two", ["billing", "late_delivery"])
    both = SentimentClassifier(str(model), device="cpu")
    before, after = plain.predict(texts), both.predict(texts)
    assert [(a.label, round(a.score, 6)) for a in before] == [(a.label, round(a.score, 6)) for a in after]  # type: ignore[union-attr]
    assert all(a.category is None for a in before)  # type: ignore[union-attr]
    assert {a.category for a in after} <= {"billing", "late_delivery", GENERAL}  # type: ignore[union-attr]
    assert all(0.0 < a.category_score <= 1.0 for a in after)  # type: ignore[union-attr,operator]
    assert both.describe()["categories"] == ["billing", "late_delivery", GENERAL]
    # One encoder pass for both heads: the same number of forward passes as the plain model.
    passes = [model.classify(model.encode(texts)).stats.forward_passes for model in (plain, both)]
    assert passes[0] == passes[1]


def test_the_heads_weights_are_part_of_the_models_revision(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    from worker.model.identity import directory_digest

    one = with_category_head(checkpoint_pos_neg, tmp_path / "one", ["billing"])
    other = with_category_head(checkpoint_pos_neg, tmp_path / "other", ["refunds"])
    assert directory_digest(one) != directory_digest(other) != directory_digest(checkpoint_pos_neg)


def test_a_card_that_does_not_fit_the_model_is_refused(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    from worker.model.classifier import SentimentClassifier
    from worker.model.loading import ModelLoadError

    model = with_category_head(checkpoint_pos_neg, tmp_path / "two", ["billing"])
    card = json.loads((model / "triage-categories.json").read_text())
    (model / "triage-categories.json").write_text(json.dumps({**card, "hidden_size": 999}))
    with pytest.raises(ModelLoadError, match="train the categories again"):
        SentimentClassifier(str(model), device="cpu")
    (model / "triage-categories.json").write_text(json.dumps({**card, "names": ["billing"]}))
    with pytest.raises(ModelLoadError, match="last category of the head must be 'general'"):
        SentimentClassifier(str(model), device="cpu")


def test_the_onnx_engine_serves_both_heads(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from worker.model.classifier import SentimentClassifier

    model = with_category_head(checkpoint_pos_neg, tmp_path / "two", ["billing", "late_delivery"])
    texts = ["checkout was quick and painless, thank you", "awful experience, the page froze"]
    torch_answers = SentimentClassifier(str(model), device="cpu").predict(texts)
    onnx_answers = SentimentClassifier(
        str(model), device="cpu", engine="onnx", onnx_cache_dir=tmp_path / "onnx"
    ).predict(texts)
    assert [a.category for a in onnx_answers] == [a.category for a in torch_answers]  # type: ignore[union-attr]
    for mine, theirs in zip(onnx_answers, torch_answers, strict=True):
        assert abs(mine.category_score - theirs.category_score) < 1e-4  # type: ignore[union-attr,operator]


@pytest.mark.model
def test_sequential_training_leaves_the_sentiment_answers_of_a_plain_finetune(tmp_path: Path) -> None:
    """ "sequential": the sentiment fine-tune as without categories, then the head alone on the frozen
    encoder; "joint" moves the encoder with both losses, so its sentiment answers differ."""
    import torch

    from tests.checkpoints import BERT_MLM_FT, build_checkpoint
    from worker.model.training.finetune import LabelledTexts, finetune
    from worker.model.training.loop import Recipe

    base = build_checkpoint(tmp_path / "base", BERT_MLM_FT, seed=5, trainable=True)
    texts = [
        f"{mood} {topic} {i}" for i in range(48) for mood, topic in [("awful", "charged twice"), ("great", "app works")]
    ]
    labels = ["negative" if t.startswith("awful") else "positive" for t in texts]
    tags = ["billing" if "charged" in t else "app" for t in texts]
    data = LabelledTexts(texts, labels, None, tags)  # type: ignore[arg-type]
    recipe = Recipe(epochs=2, learning_rate=3e-3, batch_size=16, max_length=16, head_learning_rate=1e-2)
    common = {"recipe": recipe, "weighting": "none", "truncation": "head_tail", "device": torch.device("cpu")}
    plain = finetune(str(base), data, data, **common)  # type: ignore[arg-type]
    sequential = finetune(
        str(base), data, data, **common, category_names=["billing", "app"], category_training="sequential"
    )  # type: ignore[arg-type]
    joint = finetune(str(base), data, data, **common, category_names=["billing", "app"], category_training="joint")  # type: ignore[arg-type]
    inputs = plain.tokenizer(texts[:6], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = plain.model(**inputs).logits
        assert torch.equal(sequential.model(**inputs).sentiment_logits, expected)
        assert not torch.allclose(joint.model(**inputs).sentiment_logits, expected)
    assert sequential.category_names == ["billing", "app", GENERAL] and sequential.category_log is not None
    out = tmp_path / "saved"
    sequential.save(out, recipe="sequential")
    assert json.loads((out / "triage-categories.json").read_text())["names"] == ["billing", "app", GENERAL]

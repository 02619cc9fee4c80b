"""`finetune` and `adapt` end to end on tiny checkpoints, and the model identity they rest on.

The labelled file is separable by words the tiny vocabulary holds (praise against complaints),
so a working training loop must learn it: the held-out accuracy rises well above the base's.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from tests.checkpoints import BERT_FINETUNED_IMDB, BERT_MLM_FT, build_checkpoint
from worker.cli import main
from worker.contracts.errors import OperatorError
from worker.model.calibration import CalibrationError, load
from worker.model.classifier import SentimentClassifier
from worker.model.identity import directory_digest
from worker.model.training.finetune import class_weights
from worker.ops.quality.labelled import read_examples, read_texts
from worker.runtime.wiring import build_classifier
from worker.settings import Settings

PRAISE = ["great", "love", "wonderful", "excellent", "beautiful", "quick", "thank"]
COMPLAINT = ["terrible", "awful", "crashes", "charged", "froze", "boring", "dishonest"]
RECIPE = ["--epochs", "5", "--learning-rate", "3e-3", "--batch-size", "16", "--seed", "3"]  # learns the words
FILLER = ["the", "product", "service", "app", "order", "it", "was", "and", "is", "my"]
pytestmark = pytest.mark.model  # trains or scores a model end to end


def labelled_file(path: Path, n: int, *, negative_share: float = 0.3, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            negative = rng.random() < negative_share
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
            words.insert(rng.randrange(len(words) + 1), rng.choice(COMPLAINT if negative else PRAISE))
            handle.write(json.dumps({"text": " ".join(words), "label": "negative" if negative else "positive"}) + "\n")
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    """(base, labelled file, fine-tuned output, what finetune printed)."""
    root = tmp_path_factory.mktemp("finetune")
    base = build_checkpoint(root / "base", BERT_MLM_FT, seed=5, trainable=True)
    data = labelled_file(root / "verdicts.jsonl", 600)
    out = root / "tuned"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["finetune", "--data", str(data), "--model", str(base), "--out", str(out), *RECIPE])
    assert status == 0
    return base, data, out, printed.getvalue()


def test_finetune_learns_and_writes_a_model_the_worker_loads(tuned: tuple[Path, Path, Path, str]) -> None:
    base, data, out, printed = tuned
    card = json.loads((out / "triage-card.json").read_text())
    held = card["held_out"]
    assert held["new"]["accuracy"] >= 0.9 > held["base"]["accuracy"], held
    assert held["new"]["negatives_caught"] >= 0.9
    losses = card["training"]["validation_losses"]
    assert min(losses) < losses[0]
    assert "accuracy" in printed and "held-out part" in printed

    new = build_classifier(Settings(model=str(out), device="cpu"))  # TRIAGE_CALIBRATION=auto: the one beside it
    old = SentimentClassifier(str(base), device="cpu", calibration=None)
    assert new.raw_labels == old.raw_labels == BERT_MLM_FT  # label names kept
    assert new.tokenizer("charged twice")["input_ids"] == old.tokenizer("charged twice")["input_ids"]
    assert [a.label for a in new.predict(["my order was awful", "wonderful service"])] == ["negative", "positive"]  # type: ignore[union-attr]

    calibration = load(out / "triage-calibration.json")
    assert calibration.revision == new.revision == f"dir:{directory_digest(out)}"
    assert new.calibration_id == calibration.id
    assert card["data"]["sha256"] and card["data"]["examples"] == 600
    assert card["base_model"] == str(base) and card["base_revision"].startswith("dir:")
    assert card["split"]["held_out"] == 120  # --holdout 0.2 of 600
    assert (out / "README.md").read_text().startswith(f"# Fine-tuned from {base}")


def test_finetune_is_deterministic_with_a_seed(tuned: tuple[Path, Path, Path, str], tmp_path: Path) -> None:
    base, data, out, _ = tuned
    again = tmp_path / "again"
    args = ["finetune", "--data", str(data), "--model", str(base), "--out", str(again), *RECIPE]
    assert main(args) == 0
    assert directory_digest(again) == directory_digest(out)


def test_a_calibration_fitted_on_other_weights_is_refused(tuned: tuple[Path, Path, Path, str], tmp_path: Path) -> None:
    _, _, out, _ = tuned
    copy = tmp_path / "changed"
    shutil.copytree(out, copy)
    with (copy / "vocab.txt").open("a") as handle:  # any change to what the model is
        handle.write("extra\n")
    with pytest.raises(CalibrationError, match="fitted on revision dir:"):
        SentimentClassifier(str(copy), device="cpu", calibration=load(copy / "triage-calibration.json"))
    assert main(["classify", "--model", str(copy), "hello"]) == 2


def test_adapt_lowers_the_masked_lm_loss_and_keeps_the_classifier_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from safetensors.torch import load_file

    base = build_checkpoint(tmp_path / "base", BERT_FINETUNED_IMDB, seed=2, trainable=True)
    texts = labelled_file(tmp_path / "texts.jsonl", 300, seed=4)
    out = tmp_path / "adapted"
    args = ["--epochs", "3", "--learning-rate", "3e-3", "--batch-size", "16"]
    assert main(["adapt", "--data", str(texts), "--model", str(base), "--out", str(out), *args]) == 0
    card = json.loads((out / "triage-card.json").read_text())
    assert card["masked_lm_loss"]["after"] < card["masked_lm_loss"]["before"]
    assert "masked-LM loss" in capsys.readouterr().out
    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head and labels kept
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        after["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert SentimentClassifier(str(out), device="cpu").raw_labels == BERT_FINETUNED_IMDB
    tuned = tmp_path / "tuned"
    data = labelled_file(tmp_path / "labelled.jsonl", 200)
    assert main(["finetune", "--data", str(data), "--model", str(out), "--out", str(tuned), "--epochs", "1"]) == 0


def test_a_plain_encoder_gets_a_new_negative_positive_head(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    donor = build_checkpoint(tmp_path / "donor", BERT_FINETUNED_IMDB, trainable=True)
    plain = tmp_path / "plain"
    config = BertConfig.from_pretrained(donor)
    config.architectures = None
    BertForMaskedLM(config).save_pretrained(plain)
    AutoTokenizer.from_pretrained(donor).save_pretrained(plain)
    data = labelled_file(tmp_path / "labelled.jsonl", 200)
    out = tmp_path / "tuned"
    assert main(["finetune", "--data", str(data), "--model", str(plain), "--out", str(out), "--epochs", "1"]) == 0
    assert SentimentClassifier(str(out), device="cpu").raw_labels == {0: "NEGATIVE", 1: "POSITIVE"}


def test_finetune_refuses_a_used_folder_and_one_label_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = build_checkpoint(tmp_path / "base", BERT_FINETUNED_IMDB)
    data = labelled_file(tmp_path / "labelled.jsonl", 100)
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    assert main(["finetune", "--data", str(data), "--model", str(base), "--out", str(used)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert (
        main(["finetune", "--data", str(data), "--model", str(base), "--out", str(tmp_path / "o"), "--epochs", "0"])
        == 2
    )
    assert "--epochs must be at least 1" in capsys.readouterr().err
    positives = labelled_file(tmp_path / "positive.jsonl", 100, negative_share=0.0)
    assert main(["finetune", "--data", str(positives), "--model", str(base), "--out", str(tmp_path / "p")]) == 2
    assert "both labels" in capsys.readouterr().err


def test_class_weights_balance_or_half_balance_the_labels() -> None:
    labels = ["negative"] * 10 + ["positive"] * 90
    balanced = class_weights(labels, "balanced")  # type: ignore[arg-type]
    assert balanced["negative"] * 10 == pytest.approx(balanced["positive"] * 90)  # each class weighs the same
    assert sum(balanced[label] for label in labels) / len(labels) == pytest.approx(1.0)  # type: ignore[index]
    sqrt = class_weights(labels, "sqrt")  # type: ignore[arg-type]
    assert sqrt["negative"] / sqrt["positive"] == pytest.approx(3.0)  # sqrt(90 / 10)
    assert class_weights(labels, "none") == {"negative": 1.0, "positive": 1.0}  # type: ignore[arg-type]


def test_ratings_stand_for_labels_and_threes_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("text,rating\nawful,1\nmeh,2\nfine,3\ngood,4\ngreat,5.0\n")
    examples = read_examples(path, rating_column="rating")
    assert [(e.text, e.label) for e in examples] == [
        ("awful", "negative"),
        ("meh", "negative"),
        ("good", "positive"),
        ("great", "positive"),
    ]
    path.write_text("text,rating\nodd,6\n")
    with pytest.raises(Exception, match="not a whole number from 1 to 5"):
        read_examples(path, rating_column="rating")
    assert read_texts(tmp_path / "reviews.csv") == ["odd"]


def test_the_directory_digest_ignores_the_files_the_worker_writes_beside_a_model(tmp_path: Path) -> None:
    model = build_checkpoint(tmp_path / "m", BERT_FINETUNED_IMDB)
    digest = directory_digest(model)
    (model / "triage-calibration.json").write_text("{}")
    (model / "README.md").write_text("card")
    assert directory_digest(model) == digest
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    assert directory_digest(model) != digest


def test_repeated_texts_are_merged_before_the_split_with_their_majority_label() -> None:
    """83% of the held-out texts were once also trained on: repeats fell on both sides of the split."""
    from worker.ops.learning.finetune import deduplicated, split_three
    from worker.ops.quality.labelled import Example

    texts = [f"text {i % 200}" for i in range(1_600)]  # 200 texts, 8 copies each
    examples = [Example(t, "negative" if (i % 200) < 20 or i % 8 == 0 else "positive", i) for i, t in enumerate(texts)]
    unique, merged = deduplicated(examples)
    assert len(unique) == 200 and merged == 1_400
    assert {e.text: e.label for e in unique}["text 3"] == "negative" and {e.text: e.label for e in unique}[
        "text 30"
    ] == "positive"
    training, validation, held = split_three(unique, 0.3, seed=1)
    assert not {e.text for e in held} & {e.text for e in training + validation}


def test_a_failure_after_training_leaves_no_half_written_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.ops.learning import finetune

    base = build_checkpoint(tmp_path / "base", BERT_MLM_FT, seed=5, trainable=True)
    data = labelled_file(tmp_path / "labelled.jsonl", 300)
    out = tmp_path / "candidate"

    def fails(*args: object, **kwargs: object) -> None:
        raise finetune.OperatorError("the disk filled up while writing the calibration")

    monkeypatch.setattr(finetune.calibrate, "write", fails)
    argv = ["finetune", "--data", str(data), "--model", str(base), "--out", str(out), *RECIPE[:2], "--epochs", "1"]
    assert main(argv) == 2
    assert "disk filled up" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["base", "labelled.jsonl"]  # no scratch
    monkeypatch.undo()
    assert main(argv) == 0 and (out / "triage-calibration.json").exists()  # the same --out, again


def test_a_held_out_half_with_one_label_is_refused_before_training() -> None:
    """A held-out half with one class made cross-fitting raise after the whole training run."""
    from worker.ops.learning.finetune import check_halves
    from worker.ops.quality.labelled import Example

    mixed = [Example(f"t{i}", "negative" if i % 3 == 0 else "positive", i) for i in range(40)]
    check_halves(mixed)
    one_sided = [
        Example(f"t{i}", "negative" if i % 2 == 0 else "positive", i) for i in range(40)
    ]  # even half: negative only
    with pytest.raises(OperatorError, match="only \\['negative'\\] labels in its even half"):
        check_halves(one_sided)


def test_the_threshold_is_judged_on_the_half_that_did_not_choose_it() -> None:
    from worker.ops.learning.finetune import cross_judged
    from worker.ops.quality.fitting import choose_threshold

    rng = random.Random(4)
    truths = ["negative" if rng.random() < 0.3 else "positive" for _ in range(400)]
    probs = [min(max(rng.gauss(0.75 if t == "negative" else 0.25, 0.2), 0.0), 1.0) for t in truths]
    chosen, _ = choose_threshold(truths, probs, min_precision=0.7)  # type: ignore[arg-type]
    judged = cross_judged(truths, probs, None, 0.7, None, chosen)  # type: ignore[arg-type]
    assert judged.threshold == chosen.threshold
    # Judged on the data that chose it, the precision meets the target by construction; judged on the
    # other half it need not: the figure that is reported is the honest one.
    assert chosen.escalation_precision is not None and chosen.escalation_precision >= 0.7
    assert judged.escalation_precision is not None and judged.escalation_precision != chosen.escalation_precision

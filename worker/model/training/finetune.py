"""Fine-tune: train a sequence-classification model on labelled feedback (`triage-worker finetune`).

The texts are cut exactly as the worker cuts them (its truncation strategy, at the recipe's
length), the tokenizer and the label names are the base model's, and the output is a model
directory the worker loads like any other. A checkpoint without a classification head (one that
`adapt` wrote from a plain encoder) gets a new two-label head, NEGATIVE and POSITIVE.

Feedback labels are rarely balanced (reviewers' verdicts are mostly negatives; a review stream
mostly positives). The loss weighs each class by `weighting`: "balanced" (inverse frequency),
"sqrt" (its square root: half way) or "none".

With categories (`category_names`), a category head is trained beside the sentiment head on the same
encoder (see worker/model/category_head.py), on the examples that carry a tag (`general` included);
untagged ones teach sentiment only. Two recipes, measured against each other in
worker/docs/categories.md ("joint" is the default: its categories were far better):
- "joint": one run, the loss the sum of both heads' losses; the new head learns at its own, higher
  rate (`head_learning_rate`), the encoder at the recipe's;
- "sequential": the sentiment fine-tune first, unchanged, then the category head alone on the
  frozen result, so the sentiment answers are exactly those of a run without categories.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from worker.contracts.categories import GENERAL
from worker.contracts.values import Sentiment
from worker.model import category_head
from worker.model.encoding import Truncation
from worker.model.labels import LabelMappingError, normalise_labels
from worker.model.loading import ModelLoadError, load_trainable
from worker.model.training.loop import (
    Batch,
    Recipe,
    TrainingLog,
    has_classification_head,
    length_grouped,
    seed_everything,
    train,
    training_encoder,
)

Weighting = Literal["balanced", "sqrt", "none"]
CategoryTraining = Literal["joint", "sequential"]
UNTAGGED = -100  # cross-entropy's ignore_index: an example without a category tag
WEIGHTINGS: tuple[Weighting, ...] = ("balanced", "sqrt", "none")
NEW_HEAD_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


@dataclass(frozen=True)
class LabelledTexts:
    texts: Sequence[str]
    labels: Sequence[Sentiment]
    weights: Sequence[float] | None = None  # per example (audit-sample verdicts may count more); None: all 1
    categories: Sequence[str | None] | None = None  # per example, the category tag; None: untagged


@dataclass(frozen=True)
class FineTuned:
    model: Any  # the trained transformers model, in eval mode
    tokenizer: Any
    log: TrainingLog
    class_weights: dict[Sentiment, float]
    category_names: list[str] | None = None  # the head's categories (`general` last); None: no head
    category_log: TrainingLog | None = None  # the head-only stage of "sequential"

    def save(self, out: Path, **trained: Any) -> None:
        """The transformers files, and with categories the head and its card (`trained`: what the card says)."""
        out.mkdir(parents=True, exist_ok=True)
        plain = self.model.model if isinstance(self.model, category_head.TwoHeads) else self.model
        plain.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if isinstance(self.model, category_head.TwoHeads) and self.category_names:
            card = category_head.card_of(self.model, self.category_names[:-1], trained=trained)
            category_head.save(self.model, card, out)


def class_weights(labels: Sequence[Sentiment], weighting: Weighting) -> dict[Sentiment, float]:
    """Loss weight per class, so that the mean weight over the examples is 1."""
    counts = {c: sum(label == c for label in labels) for c in ("negative", "positive")}
    if min(counts.values()) == 0:
        raise ValueError(f"fine-tuning needs examples of both labels, got {counts}")
    power = {"balanced": 1.0, "sqrt": 0.5, "none": 0.0}[weighting]
    raw: dict[Sentiment, float] = {c: (len(labels) / counts[c]) ** power for c in ("negative", "positive")}  # type: ignore[misc]
    mean = sum(raw[label] for label in labels) / len(labels)
    return {c: w / mean for c, w in raw.items()}


def finetune(
    base: str,
    training: LabelledTexts,
    validation: LabelledTexts,
    *,
    recipe: Recipe,
    weighting: Weighting,
    truncation: Truncation,
    device: torch.device,
    label_map: Mapping[str, str] | None = None,
    revision: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    category_names: Sequence[str] | None = None,
    category_training: CategoryTraining = "joint",
) -> FineTuned:
    """Fine-tune `base`; with `category_names` (the defined categories, `general` added last) a category
    head is trained too, by `category_training`."""
    seed_everything(recipe.seed)
    tokenizer, model = load_trainable(base, "classification", revision)
    index_of = _label_indexes(model, label_map)
    encoder = training_encoder(tokenizer, recipe, truncation, 8 if device.type == "cuda" else None)
    weights = class_weights(training.labels, weighting)
    weight_tensor = torch.zeros(len(index_of))
    for sentiment, index in index_of.items():
        weight_tensor[index] = weights[sentiment]
    weight_tensor = weight_tensor.to(device)
    names = [*category_names, GENERAL] if category_names else None
    category_weights = _category_weights(training.categories, names, weighting).to(device) if names else None

    def tensors_of(data: LabelledTexts) -> dict[str, Any]:
        n = len(data.labels)
        tags = data.categories if names and data.categories is not None else [None] * n
        return {
            "ids": encoder.token_ids(list(data.texts)),
            "labels": torch.tensor([index_of[label] for label in data.labels]),
            "weights": torch.tensor(list(data.weights) if data.weights is not None else [1.0] * n),
            "categories": torch.tensor([names.index(t) if names and t is not None else UNTAGGED for t in tags]),
        }

    train_data, valid_data = tensors_of(training), tensors_of(validation)

    def batch(data: dict[str, Any], indexes: list[int]) -> Batch:
        padded = encoder.pad([data["ids"][i] for i in indexes])
        return {**padded, **{k: data[k][indexes] for k in ("labels", "weights", "categories")}}

    def training_batches(rng: random.Random) -> Iterator[Batch]:
        for indexes in length_grouped([len(r) for r in train_data["ids"]], recipe.batch_size, rng):
            yield batch(train_data, indexes)

    def validation_batches() -> Iterator[Batch]:
        order = sorted(range(len(valid_data["ids"])), key=lambda i: len(valid_data["ids"][i]))
        size = recipe.batch_size * 2
        for start in range(0, len(order), size):
            yield batch(valid_data, order[start : start + size])

    def sentiment_loss(logits: torch.Tensor, inputs: Batch) -> torch.Tensor:
        """Cross-entropy weighted by class and by example, normalised by the weights (as torch's own)."""
        labels, weights = inputs["labels"], inputs["weights"]
        per_example = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        combined = weight_tensor[labels] * weights
        return (per_example * combined).sum() / combined.sum()

    def category_loss(logits: torch.Tensor, inputs: Batch) -> torch.Tensor:
        """Cross-entropy over the tagged examples of the batch (zero when none is tagged)."""
        tags = inputs["categories"]
        if not bool((tags != UNTAGGED).any()):
            return logits.sum() * 0.0
        return torch.nn.functional.cross_entropy(logits.float(), tags, weight=category_weights, ignore_index=UNTAGGED)

    def inputs_of(batch: Batch) -> dict[str, torch.Tensor]:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def plain_loss(model: Any, inputs: Batch) -> torch.Tensor:
        return sentiment_loss(model(**inputs_of(inputs)).logits, inputs)

    def joint_loss(model: Any, inputs: Batch) -> torch.Tensor:
        out = model(**inputs_of(inputs))
        return sentiment_loss(out.sentiment_logits, inputs) + category_loss(out.category_logits, inputs)

    def head_loss(model: Any, inputs: Batch) -> torch.Tensor:
        return category_loss(model(**inputs_of(inputs)).category_logits, inputs)

    def run(model: Any, loss_of: Callable[[Any, Batch], torch.Tensor], recipe: Recipe) -> TrainingLog:
        return train(
            model,
            examples=len(train_data["ids"]),
            batches=training_batches,
            validation=validation_batches,
            loss_of=loss_of,
            recipe=recipe,
            device=device,
            on_step=on_step,
        )

    category_log = None
    if names is None:
        log = run(model, plain_loss, recipe)
    elif category_training == "joint":
        model = category_head.new_head(model, names[:-1], seed=recipe.seed)
        log = run(model, joint_loss, recipe)
    else:
        log = run(model, plain_loss, replace(recipe, head_learning_rate=None))
        model = category_head.new_head(model, names[:-1], seed=recipe.seed)
        for parameter in model.model.parameters():
            parameter.requires_grad_(False)
        category_log = run(model, head_loss, recipe)
        for parameter in model.model.parameters():
            parameter.requires_grad_(True)
    if not math.isfinite(log.validation_losses[log.best_at] if log.validation_losses else math.nan):
        raise ModelLoadError(f"fine-tuning {base!r} diverged: the validation loss is not a number")
    return FineTuned(model.cpu(), tokenizer, log, weights, names, category_log)


def _category_weights(tags: Sequence[str | None] | None, names: list[str], weighting: Weighting) -> torch.Tensor:
    """Loss weight per category from the tagged examples' counts, as `class_weights` does for labels
    (a category with no tag in training weighs the mean; it cannot be learned, and the figures say so)."""
    counts = [sum(t == name for t in tags or []) for name in names]
    tagged = sum(counts)
    if tagged == 0:
        raise ValueError("training a category head needs tagged examples; none of the training part has a tag")
    power = {"balanced": 1.0, "sqrt": 0.5, "none": 0.0}[weighting]
    raw = [(tagged / c) ** power if c else 0.0 for c in counts]
    mean = sum(r * c for r, c in zip(raw, counts, strict=True)) / tagged
    return torch.tensor([r / mean if r else 1.0 for r in raw])


def _label_indexes(model: Any, label_map: Mapping[str, str] | None) -> dict[Sentiment, int]:
    """{sentiment: class index} from the checkpoint's labels; a fresh head is named NEGATIVE/POSITIVE."""
    config = model.config
    if config.num_labels != 2:
        raise ModelLoadError(f"expected a two-label model, the checkpoint has {config.num_labels} labels")
    if not has_classification_head(config):
        config.id2label, config.label2id = dict(NEW_HEAD_LABELS), {v: k for k, v in NEW_HEAD_LABELS.items()}
    try:
        labels = normalise_labels({int(k): v for k, v in config.id2label.items()}, label_map)
    except LabelMappingError as exc:
        raise ModelLoadError(str(exc)) from exc
    return {sentiment: index for index, sentiment in labels.items()}

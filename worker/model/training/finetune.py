"""Fine-tune: train a sequence-classification model on labelled feedback (`triage-worker finetune`).

The texts are cut exactly as the worker cuts them (its truncation strategy, at the recipe's
length), the tokenizer and the label names are the base model's, and the output is a model
directory the worker loads like any other. A checkpoint without a classification head (one that
`adapt` wrote from a plain encoder) gets a new two-label head, NEGATIVE and POSITIVE.

Feedback labels are rarely balanced (reviewers' verdicts are mostly negatives; a review stream
mostly positives). The loss weighs each class by `weighting`: "balanced" (inverse frequency),
"sqrt" (its square root: half way) or "none".
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from worker.contracts.values import Sentiment
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
WEIGHTINGS: tuple[Weighting, ...] = ("balanced", "sqrt", "none")
NEW_HEAD_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


@dataclass(frozen=True)
class LabelledTexts:
    texts: Sequence[str]
    labels: Sequence[Sentiment]
    weights: Sequence[float] | None = None  # per example (audit-sample verdicts may count more); None: all 1


@dataclass(frozen=True)
class FineTuned:
    model: Any  # the trained transformers model, in eval mode
    tokenizer: Any
    log: TrainingLog
    class_weights: dict[Sentiment, float]

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)


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
) -> FineTuned:
    seed_everything(recipe.seed)
    tokenizer, model = load_trainable(base, "classification", revision)
    index_of = _label_indexes(model, label_map)
    encoder = training_encoder(tokenizer, recipe, truncation, 8 if device.type == "cuda" else None)
    weights = class_weights(training.labels, weighting)
    weight_tensor = torch.zeros(len(index_of))
    for sentiment, index in index_of.items():
        weight_tensor[index] = weights[sentiment]
    weight_tensor = weight_tensor.to(device)

    def tensors_of(data: LabelledTexts) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        targets = torch.tensor([index_of[label] for label in data.labels])
        weights = torch.tensor(list(data.weights) if data.weights is not None else [1.0] * len(targets))
        return encoder.token_ids(list(data.texts)), targets, weights

    train_ids, train_targets, train_weights = tensors_of(training)
    valid_ids, valid_targets, valid_weights = tensors_of(validation)

    def batch(data: tuple[list[list[int]], torch.Tensor, torch.Tensor], indexes: list[int]) -> Batch:
        ids, targets, weights = data
        return {**encoder.pad([ids[i] for i in indexes]), "labels": targets[indexes], "weights": weights[indexes]}

    def training_batches(rng: random.Random) -> Iterator[Batch]:
        for indexes in length_grouped([len(r) for r in train_ids], recipe.batch_size, rng):
            yield batch((train_ids, train_targets, train_weights), indexes)

    def validation_batches() -> Iterator[Batch]:
        order = sorted(range(len(valid_ids)), key=lambda i: len(valid_ids[i]))
        size = recipe.batch_size * 2
        for start in range(0, len(order), size):
            yield batch((valid_ids, valid_targets, valid_weights), order[start : start + size])

    def loss_of(model: Any, inputs: Batch) -> torch.Tensor:
        """Cross-entropy weighted by class and by example, normalised by the weights (as torch's own)."""
        labels, weights = inputs["labels"], inputs["weights"]
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
        per_example = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        combined = weight_tensor[labels] * weights
        return (per_example * combined).sum() / combined.sum()

    log = train(
        model,
        examples=len(train_ids),
        batches=training_batches,
        validation=validation_batches,
        loss_of=loss_of,
        recipe=recipe,
        device=device,
        on_step=on_step,
    )
    if not math.isfinite(log.validation_losses[log.best_at] if log.validation_losses else math.nan):
        raise ModelLoadError(f"fine-tuning {base!r} diverged: the validation loss is not a number")
    return FineTuned(model.cpu(), tokenizer, log, weights)


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

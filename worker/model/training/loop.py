"""The training loop `finetune` and `adapt` share: seeded batches, AdamW with warm-up, early stopping.

A step is one batch through `loss_of`, AdamW, and a linear schedule that warms up over the first
tenth of the steps and decays to zero. The loss on a validation set is measured a few times an
epoch; the weights with the lowest one are kept, and training stops when it has not improved for
`patience` measurements after the first epoch (a loss often sits on a plateau before it falls).
Batches group texts of similar length (shuffled, cut in windows of 50 batches, sorted inside each
window), so a short text is not padded to a long one; on a CPU that is most of the cost. On CUDA
the passes run under bf16 autocast, over fp32 weights.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from worker.model.encoding import Encoder, Truncation

Batch = dict[str, torch.Tensor]
LENGTH_WINDOW = 50  # batches sorted by length together


@dataclass(frozen=True)
class Recipe:
    epochs: int
    learning_rate: float
    batch_size: int = 32
    max_length: int = 128
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    checks_per_epoch: int = 4  # validation-loss measurements per epoch
    patience: int = 3  # measurements without improvement before stopping
    seed: int = 0
    head_learning_rate: float | None = None  # a new category head's own rate (parameters named `head.`)


@dataclass
class TrainingLog:
    steps: int = 0
    epochs_run: float = 0.0
    seconds: float = 0.0
    validation_losses: list[float] = field(default_factory=list)  # one per measurement, in order
    best_at: int = -1  # index into validation_losses of the weights kept
    stopped_early: bool = False


def training_encoder(tokenizer: Any, recipe: Recipe, truncation: Truncation, pad_multiple: int | None) -> Encoder:
    """The worker's own tokenization and cut (`truncation`), at the recipe's length and batch size."""
    return Encoder(
        tokenizer,
        max_length=min(recipe.max_length, tokenizer.model_max_length or recipe.max_length),
        max_batch_size=recipe.batch_size,
        max_batch_tokens=recipe.batch_size * recipe.max_length,
        cost=None,
        pad_multiple=pad_multiple,
        pin_memory=False,
        truncation=truncation,
    )


def has_classification_head(config: Any) -> bool:
    """Whether a checkpoint was saved as a sequence classifier (else its head would be new)."""
    return any("ForSequenceClassification" in name for name in config.architectures or [])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def length_grouped(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches for one epoch: shuffled, then sorted by length inside windows, batches shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * LENGTH_WINDOW
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train(
    model: Any,
    *,
    examples: int,
    batches: Callable[[random.Random], Iterator[Batch]],
    validation: Callable[[], Iterator[Batch]],
    loss_of: Callable[[Any, Batch], torch.Tensor],
    recipe: Recipe,
    device: torch.device,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainingLog:
    """Train `model` in place (left with the best weights, in eval mode) and say how it went.

    `batches(rng)` yields one epoch's training batches; `validation()` the validation batches (the
    same every call); `on_step(step, total_steps, loss)` reports progress."""
    import time

    started = time.perf_counter()
    rng = random.Random(recipe.seed)
    steps_per_epoch = max(1, math.ceil(examples / recipe.batch_size))
    total = steps_per_epoch * recipe.epochs
    check_every = max(1, steps_per_epoch // recipe.checks_per_epoch)
    groups = _parameter_groups(model, recipe.weight_decay, recipe.head_learning_rate)
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate)
    warmup = max(1, int(total * recipe.warmup_share))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    log = TrainingLog()
    best_loss, best_state, waited = math.inf, None, 0
    model.to(device)
    for _ in range(recipe.epochs):
        model.train()
        for batch in batches(rng):
            with _autocast(device):
                loss = loss_of(model, _to(batch, device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            log.steps += 1
            if on_step:
                on_step(log.steps, total, float(loss.detach()))
            if log.steps % check_every == 0 or log.steps == total:
                measured = validation_loss(model, validation, loss_of, device)
                log.validation_losses.append(measured)
                model.train()
                if measured < best_loss:
                    best_loss, best_state, waited = measured, _snapshot(model), 0
                    log.best_at = len(log.validation_losses) - 1
                elif log.steps > steps_per_epoch:
                    waited += 1
                if waited >= recipe.patience and log.steps < total:
                    log.stopped_early = True
                    break
        log.epochs_run = log.steps / steps_per_epoch
        if log.stopped_early:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.seconds = time.perf_counter() - started
    return log


def validation_loss(
    model: Any,
    validation: Callable[[], Iterator[Batch]],
    loss_of: Callable[[Any, Batch], torch.Tensor],
    device: torch.device,
) -> float:
    """The mean loss over the validation batches, weighted by their sizes."""
    model.eval()
    total = count = 0.0
    with torch.inference_mode():
        for batch in validation():
            with _autocast(device):
                loss = loss_of(model, _to(batch, device))
            size = len(batch["input_ids"])
            total += float(loss) * size
            count += size
    return total / count if count else math.nan


def _parameter_groups(model: Any, weight_decay: float, head_learning_rate: float | None) -> list[dict[str, Any]]:
    """No weight decay on biases and LayerNorm weights (the BERT recipe); a new category head (its
    parameters named `head.`) learns at its own rate when one is given."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            plain = parameter.ndim < 2 or "LayerNorm" in name
            head = head_learning_rate is not None and name.startswith("head.")
            groups.setdefault((plain, head), []).append(parameter)
    return [
        {
            "params": parameters,
            "weight_decay": 0.0 if plain else weight_decay,
            **({"lr": head_learning_rate} if head else {}),
        }
        for (plain, head), parameters in sorted(groups.items())
    ]


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in copy.copy(model.state_dict()).items()}


def _to(batch: Batch, device: torch.device) -> Batch:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)

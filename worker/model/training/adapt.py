"""Adapt: masked-language-model training on unlabelled feedback (`triage-worker adapt`).

Stage 1 of the recipe in `sm3455/bert-mlm-ft`'s card: before fine-tuning, let the encoder read the
domain's own texts. A seventh of the word pieces (15%) are picked, not counting special tokens;
of those, 80% become [MASK], 10% a random word piece and 10% stay, and the model learns to
recover them. The held-out loss is measured with the same masks before and after.

The output is what `finetune --model DIR` starts from. A base with a classification head (a
sentiment model) keeps that head and its label names: the adapted encoder is put under it, so
the checkpoint still classifies. A plain encoder is written as a masked-language model, and
`finetune` gives it a new head.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.model.encoding import Truncation
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
    validation_loss,
)

MASK_SHARE = 0.15


@dataclass(frozen=True)
class Adapted:
    model: Any  # a masked-language model, or a classifier when the base had a classification head
    tokenizer: Any
    log: TrainingLog
    loss_before: float  # held-out masked-LM loss of the base
    loss_after: float

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)


def mask(
    ids: torch.Tensor,
    attention: torch.Tensor,
    special: torch.Tensor,
    mask_id: int,
    vocab: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): -100 where nothing is to be recovered."""
    candidates = (attention == 1) & ~torch.isin(ids, special)
    picked = (torch.rand(ids.shape, generator=generator) < MASK_SHARE) & candidates
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    draw = torch.rand(ids.shape, generator=generator)
    masked = ids.clone()
    masked[picked & (draw < 0.8)] = mask_id
    swap = picked & (draw >= 0.8) & (draw < 0.9)
    masked[swap] = torch.randint(vocab, ids.shape, generator=generator)[swap]
    return masked, labels


def adapt(
    base: str,
    texts: Sequence[str],
    held_out: Sequence[str],
    *,
    recipe: Recipe,
    truncation: Truncation,
    device: torch.device,
    revision: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> Adapted:
    seed_everything(recipe.seed)
    tokenizer, model = load_trainable(base, "masked_lm", revision)
    if tokenizer.mask_token_id is None:
        raise ModelLoadError(f"the tokenizer of {base!r} has no mask token, so it cannot be trained as a masked LM")
    encoder = training_encoder(tokenizer, recipe, truncation, None)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    vocab = model.config.vocab_size
    train_ids, held_ids = encoder.token_ids(list(texts)), encoder.token_ids(list(held_out))
    masking = torch.Generator().manual_seed(recipe.seed)

    def batch(ids: list[list[int]], indexes: list[int], generator: torch.Generator) -> Batch:
        padded = encoder.pad([ids[i] for i in indexes])
        masked, labels = mask(
            padded["input_ids"], padded["attention_mask"], special, tokenizer.mask_token_id, vocab, generator
        )
        return {"input_ids": masked, "attention_mask": padded["attention_mask"], "labels": labels}

    def training_batches(rng: random.Random) -> Iterator[Batch]:
        for indexes in length_grouped([len(r) for r in train_ids], recipe.batch_size, rng):
            yield batch(train_ids, indexes, masking)

    def held_out_batches() -> Iterator[Batch]:
        same_masks = torch.Generator().manual_seed(recipe.seed + 1)  # the same masks on every call
        for start in range(0, len(held_ids), recipe.batch_size * 2):
            yield batch(held_ids, list(range(start, min(start + recipe.batch_size * 2, len(held_ids)))), same_masks)

    def loss_of(model: Any, inputs: Batch) -> torch.Tensor:
        return masked_lm_loss(model, inputs)

    before = validation_loss(model.to(device), held_out_batches, loss_of, device)
    log = train(
        model,
        examples=len(train_ids),
        batches=training_batches,
        validation=held_out_batches,
        loss_of=loss_of,
        recipe=recipe,
        device=device,
        on_step=on_step,
    )
    after = validation_loss(model, held_out_batches, loss_of, device)
    return Adapted(_with_head_of(base, model.cpu(), revision), tokenizer, log, before, after)


def masked_lm_loss(model: Any, inputs: Batch) -> torch.Tensor:
    """The loss over the masked positions. For BERT-family models (a `cls` head) only those positions
    go through the vocabulary projection: a seventh of the work of projecting every position, which
    was as costly as the encoder itself for MiniLM. Other models take their own full path."""
    labels = inputs["labels"]
    head = getattr(model, "cls", None)
    if head is None:
        return model(**inputs).loss  # type: ignore[no-any-return]
    hidden = model.base_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    picked = labels != -100
    logits = head(hidden[picked]).float()
    return torch.nn.functional.cross_entropy(logits, labels[picked])


def _with_head_of(base: str, adapted: Any, revision: str | None) -> Any:
    """The base's classifier over the adapted encoder, when the base has one; else `adapted` itself."""
    if not has_classification_head(adapted.config):
        return adapted
    _, classifier = load_trainable(base, "classification", revision)
    missing, unexpected = classifier.base_model.load_state_dict(adapted.base_model.state_dict(), strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise ModelLoadError(f"cannot put the adapted encoder under {base!r}'s head: {missing + unexpected}")
    return classifier.eval()

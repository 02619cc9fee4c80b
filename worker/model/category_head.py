"""Category head: a second classifier on the features the sentiment head reads, in the same forward pass.

A model directory that `finetune` trained with categories holds, beside the transformers files,
`triage-categories.json` (the category names in head order, `general` last; where the head reads
its features; the held-out figures of each category) and `triage-category-head.safetensors` (one
linear layer). Both are part of the model: its revision digest covers them.

The features are the input of the sentiment head's last linear layer (the one with `num_labels`
outputs: BERT's `classifier`, RoBERTa's `classifier.out_proj`, DistilBERT's `classifier`), read by
a forward pre-hook, so any sequence-classification architecture gets the second head without
knowing its layout. `TwoHeads` returns both heads' logits in one tensor, [sentiment | categories],
so the classifier copies one tensor per pass and the ONNX export holds both heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.contracts.categories import GENERAL
from worker.model.category_card import CARD_FILE, WEIGHTS_FILE, HeadCard, read_card
from worker.model.errors import ModelLoadError

__all__ = ["CARD_FILE", "WEIGHTS_FILE", "HeadCard", "TwoHeads", "attach", "card_of", "new_head", "read_card", "save"]


@dataclass
class TwoHeadOutput:
    logits: torch.Tensor  # [sentiment | categories]
    sentiment_logits: torch.Tensor
    category_logits: torch.Tensor


def feature_layer(model: Any) -> tuple[str, torch.nn.Linear]:
    """The sentiment head's last linear layer: the last `Linear` with `num_labels` outputs."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features == model.config.num_labels
    ]
    if not found:
        raise ModelLoadError(
            f"cannot find the sentiment head of {type(model).__name__}: no linear layer with "
            f"{model.config.num_labels} outputs, so a category head has no features to read"
        )
    return found[-1]


class TwoHeads(torch.nn.Module):
    """A sequence classifier with a category head reading its sentiment head's features."""

    def __init__(self, model: Any, head: torch.nn.Linear, features: str) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.features = features
        self.num_labels = model.config.num_labels
        self._seen: list[torch.Tensor] = []
        dict(model.named_modules())[features].register_forward_pre_hook(self._capture)

    @property
    def config(self) -> Any:
        return self.model.config

    def _capture(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self._seen.append(args[0])

    def forward(self, **inputs: torch.Tensor) -> TwoHeadOutput:
        self._seen.clear()
        sentiment = self.model(**inputs).logits
        features = self._seen.pop()
        if features.dim() == 3:  # a head that takes the whole sequence reads its first token
            features = features[:, 0]
        categories = self.head(features.to(self.head.weight.dtype))
        return TwoHeadOutput(torch.cat([sentiment, categories.to(sentiment.dtype)], dim=-1), sentiment, categories)


def new_head(model: Any, categories: list[str], seed: int = 0) -> TwoHeads:
    """`model` with a fresh category head over `categories` + `general` (for `finetune`)."""
    features, layer = feature_layer(model)
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(layer.in_features, len(categories) + 1)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=generator)  # the BERT initialisation
        head.bias.zero_()
    head.to(device=layer.weight.device, dtype=layer.weight.dtype)
    return TwoHeads(model, head, features)


def card_of(model: TwoHeads, categories: list[str], **extra: Any) -> HeadCard:
    return HeadCard([*categories, GENERAL], model.features, model.head.in_features, **extra)


def save(model: TwoHeads, card: HeadCard, out: Path) -> None:
    """Write the head and its card into the model directory `out` (beside `save_pretrained`'s files)."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.head.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    (out / CARD_FILE).write_text(card.to_json(), encoding="utf-8")


def attach(model: Any, directory: Path) -> tuple[Any, HeadCard | None]:
    """`model` with the category head saved in `directory` (a TwoHeads), or unchanged when there is none."""
    card = read_card(directory)
    if card is None:
        return model, None
    from safetensors.torch import load_file

    features, layer = feature_layer(model)
    if card.features != features or card.hidden_size != layer.in_features:
        raise ModelLoadError(
            f"{directory / CARD_FILE} was trained on {card.features} ({card.hidden_size} features), but this "
            f"model's sentiment head is {features} ({layer.in_features}): train the categories again"
        )
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the category head {directory / WEIGHTS_FILE}: {exc}") from None
    head = torch.nn.Linear(layer.in_features, len(card.names))
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"{directory / WEIGHTS_FILE} does not match its card's {len(card.names)} names") from exc
    head.to(device=layer.weight.device, dtype=layer.weight.dtype).eval()
    return TwoHeads(model, head, features), card

"""Classifier: owns the model. Tokenizer, device, dtype, batching by token budget, label mapping.

Nothing else in the worker imports torch. Texts are tokenized once, sorted by length, cut into
batches whose padded size fits `max_batch_tokens` (and at most `max_batch_size` texts), padded
per batch, run under `torch.inference_mode`, and returned in the caller's order.
On CUDA the weights run in bf16 (fp16 where bf16 is missing); on the CPU in fp32.
A batch that runs out of memory is split in halves and retried; a single text that still
fails comes back as a ClassificationFailure for the dead-letter topic.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from worker.labels import normalise_labels
from worker.records import Prediction

UNBOUNDED_LENGTH = 1_000_000  # tokenizers without a limit report a huge sentinel
# Padded tokens per forward pass when not configured, measured with `triage-worker bench` on the
# worker's own 64-event micro-batches: on the CPU small, tightly sorted passes win (cache-sized
# activations, little padding: 2,048 beat 4,096 by 11% on MiniLM and 13% on BERT-base); on a GPU
# large ones do (the H100 anchor is 131k tokens).
DEFAULT_BATCH_TOKENS = {"cpu": 2_048, "cuda": 131_072}
# A new forward pass starts when a text is shorter than this share of the batch's longest. On the
# CPU padding is paid in full (attention grows with the padded length), so a few extra passes are
# cheaper than padding a short review to a long one; on a GPU fewer, larger launches win.
DEFAULT_MIN_FILL = {"cpu": 0.7, "cuda": 0.0}


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded, or its labels cannot be mapped."""


@dataclass(frozen=True)
class ClassificationFailure:
    """One text the model could not classify even alone (e.g. out of memory)."""

    message: str


@dataclass(frozen=True)
class Encoded:
    """Texts tokenized and cut into padded forward passes, ready for the device."""

    ids: list[list[int]]
    lengths: list[int]
    passes: list[tuple[list[int], dict[str, torch.Tensor]]]
    tokenize_ms: float


@dataclass(frozen=True)
class BatchStats:
    """What the last `predict` call did, for logs and benchmarks."""

    texts: int
    forward_passes: int
    padded_tokens: int
    real_tokens: int
    tokenize_ms: float
    inference_ms: float


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("TRIAGE_DEVICE=cuda but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def plan_batches(
    lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int, min_fill: float = 0.0
) -> list[list[int]]:
    """Group text indexes, longest first, so each batch's padded size stays within the budget.

    A batch costs len(batch) * (longest length in it) tokens. A single text longer than the
    budget still gets a batch of its own. With `min_fill`, a text shorter than that share of the
    batch's longest starts a new batch (length bucketing).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (
            len(current) + 1 > max_batch_size
            or (len(current) + 1) * longest > max_batch_tokens
            or lengths[index] < min_fill * longest
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class SentimentClassifier:
    """A Hugging Face sequence-classification model with positive/negative labels."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        label_map: Mapping[str, str] | None = None,
        max_batch_size: int = 64,
        max_batch_tokens: int | None = None,
        compile_model: bool = False,
    ) -> None:
        hf_logging.set_verbosity_error()  # our logs are JSON lines; keep library chatter off stderr
        hf_logging.disable_progress_bar()
        self.model_name = model
        self.device = resolve_device(device)
        self.dtype = self._pick_dtype(self.device)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens or DEFAULT_BATCH_TOKENS[self.device.type]
        self.min_fill = DEFAULT_MIN_FILL[self.device.type]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model {model!r}: {exc}") from exc
        self.model.to(self.device).eval()
        if self.device.type == "cuda":
            # cuDNN's attention builds a plan for every new (batch, length) shape, and ours vary
            # with every batch: measured on an H100, fresh shapes ran at 4,800 reviews/s with it
            # and 7,700 without (PyTorch then picks its memory-efficient kernel).
            torch.backends.cuda.enable_cudnn_sdp(False)
        if compile_model:  # shapes vary per batch: compile once for dynamic batch and length
            self.model = torch.compile(self.model, dynamic=True)
        self.compiled = compile_model
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        try:
            self.labels = normalise_labels(id2label, label_map)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.raw_labels = id2label
        self.negative_index = next(i for i, s in self.labels.items() if s == "negative")
        limits = [getattr(self.model.config, "max_position_embeddings", UNBOUNDED_LENGTH)]
        if self.tokenizer.model_max_length < UNBOUNDED_LENGTH:
            limits.append(self.tokenizer.model_max_length)
        self.max_length = int(min(limits))
        self.pad_multiple = 8 if self.device.type == "cuda" else None
        self.last_stats: BatchStats | None = None

    @staticmethod
    def _pick_dtype(device: torch.device) -> torch.dtype:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_length": self.max_length,
            "max_batch_tokens": self.max_batch_tokens,
            "compiled": self.compiled,
            "labels": {self.raw_labels[i]: s for i, s in self.labels.items()},
        }

    def predict(self, texts: Sequence[str]) -> list[Prediction | ClassificationFailure]:
        """Classify `texts`; the answers come back in the same order."""
        return self.classify(self.encode(texts))

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Tokenize, plan the forward passes and pad each one into tensors (CPU work only).

        Kept apart from `classify` so the worker can prepare the next batch while the device
        runs this one. On CUDA the tensors are in pinned memory, so the copy does not block.
        """
        started = time.perf_counter()
        if not texts:
            return Encoded([], [], [], 0.0)
        # Only the ids cross from the Rust tokenizer into Python; the attention mask follows from
        # the lengths and token types are all 0 for single texts (this halves the tokenize time).
        ids = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths = [len(row) for row in ids]
        plan = plan_batches(lengths, self.max_batch_size, self.max_batch_tokens, self.min_fill)
        passes = [(indexes, self._pad([ids[i] for i in indexes])) for indexes in plan]
        return Encoded(ids, lengths, passes, (time.perf_counter() - started) * 1000)

    def classify(self, encoded: Encoded) -> list[Prediction | ClassificationFailure]:
        """Run the planned forward passes; answers in the order of the texts given to `encode`.

        Every pass is launched before any result is copied back, so on a GPU the host queues the
        next pass while the device still runs the last one; the copies happen once, at the end.
        """
        started = time.perf_counter()
        results: list[Prediction | ClassificationFailure | None] = [None] * len(encoded.lengths)
        launched: list[tuple[list[int], torch.Tensor | list[ClassificationFailure]]] = []
        padded = 0
        for batch, tensors in encoded.passes:
            for indexes, outcome in self._run_splitting_on_oom(batch, encoded.ids, tensors):
                padded += len(indexes) * max(encoded.lengths[i] for i in indexes)
                launched.append((indexes, outcome))
        for indexes, outcome in launched:
            answers = self._predictions(outcome) if isinstance(outcome, torch.Tensor) else outcome
            for index, answer in zip(indexes, answers, strict=True):
                results[index] = answer
        self.last_stats = BatchStats(
            texts=len(encoded.lengths),
            forward_passes=len(launched),
            padded_tokens=padded,
            real_tokens=sum(encoded.lengths),
            tokenize_ms=encoded.tokenize_ms,
            inference_ms=(time.perf_counter() - started) * 1000,
        )
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """Pad one forward pass to its longest text (rounded up to `pad_multiple` on CUDA)."""
        longest = max(len(row) for row in ids)
        if self.pad_multiple:
            longest = -(-longest // self.pad_multiple) * self.pad_multiple
        input_ids = np.full((len(ids), longest), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for row, values in enumerate(ids):
            span = slice(longest - len(values), longest) if left else slice(0, len(values))
            input_ids[row, span] = values
            mask[row, span] = 1
        arrays = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            arrays["token_type_ids"] = np.zeros_like(input_ids)
        pin = self.device.type == "cuda"
        return {name: torch.from_numpy(a).pin_memory() if pin else torch.from_numpy(a) for name, a in arrays.items()}

    def _run_splitting_on_oom(
        self,
        indexes: list[int],
        ids: list[list[int]],
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> list[tuple[list[int], torch.Tensor | list[ClassificationFailure]]]:
        try:
            if tensors is None:
                tensors = self._pad([ids[i] for i in indexes])
            return [(indexes, self._forward(tensors))]
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(indexes) == 1:
                return [(indexes, [ClassificationFailure(f"out of memory on {self.device}: {exc}")])]
            half = len(indexes) // 2
            return self._run_splitting_on_oom(indexes[:half], ids) + self._run_splitting_on_oom(indexes[half:], ids)

    def _forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Launch one forward pass; returns class probabilities, still on the device."""
        non_blocking = self.device.type == "cuda"
        inputs = {k: v.to(self.device, non_blocking=non_blocking) for k, v in tensors.items()}
        with torch.inference_mode():
            return torch.softmax(self.model(**inputs).logits.float(), dim=-1)

    def _predictions(self, probs: torch.Tensor) -> list[Prediction]:
        probs = probs.cpu()
        scores, best = probs.max(dim=-1)
        negative = probs[:, self.negative_index]
        return [
            Prediction(
                label=self.labels[int(b)],
                score=float(s),
                negative_prob=float(n),
                raw_label=self.raw_labels[int(b)],
            )
            for s, b, n in zip(scores.tolist(), best.tolist(), negative.tolist(), strict=True)
        ]

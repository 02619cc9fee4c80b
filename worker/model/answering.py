"""Answering: what every engine's classifier shares, from encoded passes to the worker's answers.

Every answer comes from the margin, the negative logit minus the positive one: a calibration
(see `calibration`) divides it by its temperature before the sigmoid. A model with a category head
(see `category_card`) answers a category too, from the same pass: its softmax, divided by the
calibration's category temperature. `classify` returns the answers in the caller's order together
with what the passes cost.

`Classifier` holds all of that and leaves two things to its engine: how a pass runs (`_launch`),
and how the model was loaded. `classifier.SentimentClassifier` loads through transformers and runs
torch or ONNX Runtime; `onnx_serving.CachedOnnxClassifier` serves a cached ONNX graph without
importing torch. Nothing here imports torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.contracts.inference import Answer, Inference, InferenceStats
from worker.contracts.values import ClassificationFailure, Prediction
from worker.model import planning
from worker.model.calibration import Calibration, CalibrationError, sigmoid, softmax_top
from worker.model.category_card import HeadCard
from worker.model.encoding import Encoded, Encoder
from worker.model.errors import ModelLoadError
from worker.model.labels import normalise_labels

# What a launched pass gives back: its logits (torch tensor or numpy array), or a failure per text.
Outcome = Any


class Classifier:
    """A sentiment classifier with positive/negative labels, on whichever engine loaded it.

    Implements `worker.contracts.inference.Model[Encoded]`, the protocol the stages use."""

    def __init__(
        self,
        model: str,
        *,
        engine: str,
        revision: str,
        device: Any,
        dtype: Any,
        calibration: Calibration | None,
        raw_labels: Mapping[int, str],
        label_map: Mapping[str, str] | None,
        card: HeadCard | None,
        encoder: Encoder,
        loaded_from: str,
    ) -> None:
        # An int8 (or ONNX) answer is never stored as a torch fp32 one: the engine is part of the name.
        self.model_name = model if engine == "torch" else f"{model} [{engine}]"
        self.engine = engine
        self.revision = revision
        self.device, self.dtype = device, dtype
        self.loaded_from = loaded_from  # "transformers", or "onnx cache" (no torch in the process)
        self.compiled = False
        self.calibration = calibration
        self.calibration_id = calibration.id if calibration else None
        self.temperature = calibration.temperature if calibration else 1.0
        if calibration is not None and calibration.revision and calibration.revision != revision:
            raise CalibrationError(
                f"calibration {calibration.id} was fitted on revision {calibration.revision} of "
                f"{calibration.model or model}, but {model} is revision {revision}; "
                "fit it again with `triage-worker calibrate` "
                "(or set TRIAGE_CALIBRATION=off)"
            )
        self.category_card = card
        self.categories = card.names if card else []
        self.keep_category_logits = False  # evaluate and calibrate set it: they fit and measure on the logits
        category = calibration.category if calibration else None
        self.category_temperature = category.temperature if category else 1.0
        self.raw_labels = dict(raw_labels)
        try:
            self.labels = normalise_labels(self.raw_labels, label_map)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.negative_index = next(i for i, s in self.labels.items() if s == "negative")
        self.positive_index = next(i for i, s in self.labels.items() if s == "positive")
        self.encoder = encoder
        self.max_length = encoder.max_length
        self.max_batch_size = encoder.max_batch_size
        self.max_batch_tokens = encoder.max_batch_tokens
        self.cost_cached = False

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "revision": self.revision,
            "engine": self.engine,
            "loaded_from": self.loaded_from,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_length": self.max_length,
            "max_batch_tokens": self.max_batch_tokens,
            "compiled": self.compiled,
            "pass_cost": {**self.encoder.cost.describe(), "cached": self.cost_cached} if self.encoder.cost else "fill",
            "truncation": self.encoder.truncation,
            "calibration": self.calibration_id or "none",
            "temperature": self.temperature,
            "labels": {self.raw_labels[i]: s for i, s in self.labels.items()},
            "categories": self.categories or "none",
        }

    def predict(self, texts: Sequence[str]) -> list[Answer]:
        """Classify `texts`; the answers come back in the same order."""
        return self.classify(self.encode(texts)).answers

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Tokenize, plan the forward passes and pad each one (CPU work only; see `encoding`)."""
        return self.encoder.encode(texts)

    def classify(self, encoded: Encoded) -> Inference:
        """Run the planned forward passes.

        Every pass is launched before any result is copied back, so on a GPU the host queues the
        next pass while the device still runs the last one; the copies happen once, at the end.
        """
        started = time.perf_counter()
        answers: list[Answer | None] = [None] * len(encoded.lengths)
        launched: list[tuple[list[int], Outcome]] = []
        padded = 0
        for indexes, tensors in encoded.passes:
            for part, outcome in self._launch(indexes, encoded.ids, tensors):
                padded += len(part) * max(encoded.lengths[i] for i in part)
                launched.append((part, outcome))
        for indexes, outcome in launched:
            results: Sequence[Answer] = outcome if isinstance(outcome, list) else self._predictions(outcome)
            for index, answer in zip(indexes, results, strict=True):
                answers[index] = answer
        done = [a for a in answers if a is not None]
        assert len(done) == len(answers)
        stats = InferenceStats(
            texts=len(encoded.lengths),
            forward_passes=len(launched),
            padded_tokens=padded,
            real_tokens=sum(encoded.lengths),
            inference_ms=(time.perf_counter() - started) * 1000,
        )
        return Inference(done, stats)

    def _launch(self, indexes: list[int], ids: list[list[int]], tensors: Any) -> list[tuple[list[int], Outcome]]:
        """Launch one planned pass; the engine may split it (and give up on single texts)."""
        return [(indexes, self._forward(tensors))]

    def _forward(self, tensors: Any) -> Any:
        """One forward pass of padded tensors; the logits, [sentiment | categories] per text."""
        raise NotImplementedError

    def _plan_costs(self, cache_dir: Path, runtime: str) -> None:
        """Time this model's passes on this machine, once, then keep the fit beside the ONNX exports for
        every later start (see planning.cached_cost), so the planner prices its passes truly."""
        identity = f"{self.revision}|{self.engine}|{self.max_length}"
        self.encoder.cost, self.cost_cached = planning.cached_cost(
            cache_dir, identity, runtime, lambda: planning.measure(self._probe, self.max_length)
        )

    def _probe(self, n: int, length: int) -> None:
        """One forward pass of `n` texts of `length` word pieces, for the planner's cost measurement."""
        filler = self.encoder.tokenizer.unk_token_id or 0
        self._forward(self.encoder.pad([[filler] * length] * n))

    def _predictions(self, logits: Any) -> list[Answer]:
        """One copy to Python lists, then plain arithmetic: a pass's answers are a few dozen pairs,
        and every further torch call on them (softmax, max, indexing) cost more than the work (see
        worker/docs/performance.md: the no-model profile). A tie counts as negative (a human sees it)."""
        negative, positive, temperature = self.negative_index, self.positive_index, self.temperature
        sentiments = len(self.raw_labels)
        answers: list[Answer] = []
        for row in logits.tolist():
            category, category_score = self._category(row[sentiments:]) if self.categories else (None, None)
            margin = row[negative] - row[positive]
            if not math.isfinite(margin):  # fp16 overflow on some GPUs: no answer, rather than "positive"
                answers.append(ClassificationFailure(f"the model returned a non-finite logit margin ({margin})"))
                continue
            negative_prob = sigmoid(margin / temperature)
            best = negative if negative_prob >= 0.5 else positive
            answers.append(
                Prediction(
                    label=self.labels[best],
                    score=negative_prob if best == negative else 1.0 - negative_prob,
                    negative_prob=negative_prob,
                    raw_label=self.raw_labels[best],
                    margin=margin,
                    category=category,
                    category_score=category_score,
                    category_logits=tuple(row[sentiments:]) if self.keep_category_logits and self.categories else None,
                )
            )
        return answers

    def _category(self, logits: list[float]) -> tuple[str | None, float | None]:
        """The top category and its probability (softmax over logits / temperature); None if not finite."""
        top, probability = softmax_top(logits, self.category_temperature)
        if not math.isfinite(logits[top] / self.category_temperature):
            return None, None
        return self.categories[top], probability

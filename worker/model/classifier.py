"""Classifier: the model as the worker sees it. Encode texts, run the planned passes, map the labels.

Every answer comes from the margin, the negative logit minus the positive one: a calibration
(see `calibration`) divides it by its temperature before the sigmoid. On CUDA the weights run in
bf16 (fp16 where bf16 is missing) and the padded tensors sit in pinned memory. On the CPU they run
in fp32, in torch or, with TRIAGE_ENGINE, in ONNX Runtime (fp32 or int8; see `onnx_engine`), and
the planner's pass costs are timed at load (see `planning`). A pass that runs out of memory is
split in halves and retried; a single text that still fails comes back as a ClassificationFailure
for the dead-letter topic. `classify` returns the answers in the caller's order together with what
the passes cost. A model directory with a category head (see `category_head`) answers a category
too, from the same pass: its softmax, divided by the calibration's category temperature.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from worker.contracts.inference import Answer, Inference, InferenceStats
from worker.contracts.values import ClassificationFailure, Prediction
from worker.logs import get_logger
from worker.model import category_head, onnx_engine, planning
from worker.model.calibration import Calibration, CalibrationError, sigmoid, softmax_top
from worker.model.encoding import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TOKENS,
    Encoded,
    Encoder,
    Truncation,
    max_length_of,
)
from worker.model.identity import revision_of
from worker.model.labels import normalise_labels
from worker.model.loading import ModelLoadError, load, resolve_device

# How long a single text that ran out of memory waits before each new try (then it is dead-lettered).
log = get_logger("worker.model")
OOM_WAITS_S = (0.25, 1.0, 4.0)


class SentimentClassifier:
    """A Hugging Face sequence-classification model with positive/negative labels.

    Implements `worker.contracts.inference.Model[Encoded]`, the protocol the stages use."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        label_map: Mapping[str, str] | None = None,
        max_batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        compile_model: bool = False,
        calibration: Calibration | None = None,
        truncation: Truncation = "head_tail",
        revision: str | None = None,
        engine: str = "torch",
        onnx_cache_dir: Path = Path("~/.cache/triage-worker/onnx"),
    ) -> None:
        # An int8 (or ONNX) answer is never stored as a torch fp32 one: the engine is part of the name.
        self.model_name = model if engine == "torch" else f"{model} [{engine}]"
        self.engine = engine
        self.calibration = calibration
        self.calibration_id = calibration.id if calibration else None
        self.temperature = calibration.temperature if calibration else 1.0
        resolved = resolve_device(device)
        onnx_engine.check_applies(engine, resolved)
        log.info("model_loading", model=model, device=str(resolved), engine=engine)
        loaded = load(model, resolved, revision=revision)
        self.revision = revision_of(model, loaded.model.config)
        if calibration is not None and calibration.revision and calibration.revision != self.revision:
            raise CalibrationError(
                f"calibration {calibration.id} was fitted on revision {calibration.revision} of "
                f"{calibration.model or model}, but {model} is revision {self.revision}; "
                "fit it again with `triage-worker calibrate` "
                "(or set TRIAGE_CALIBRATION=off)"
            )
        self.device, self.dtype, self.tokenizer = loaded.device, loaded.dtype, loaded.tokenizer
        self.model, self.category_card = category_head.attach(loaded.model, Path(model).expanduser())
        self.categories = self.category_card.names if self.category_card else []
        self.keep_category_logits = False  # evaluate and calibrate set it: they fit and measure on the logits
        category = calibration.category if calibration else None
        self.category_temperature = category.temperature if category else 1.0
        if self.device.type == "cuda":
            # cuDNN's attention builds a plan for every new (batch, length) shape, and ours vary
            # with every batch: measured on an H100, fresh shapes ran at 4,800 reviews/s with it
            # and 7,700 without (PyTorch then picks its memory-efficient kernel).
            torch.backends.cuda.enable_cudnn_sdp(False)
        if compile_model:  # shapes vary per batch: compile once for dynamic batch and length
            self.model = torch.compile(self.model, dynamic=True)
        self.compiled = compile_model
        self.oom_waits_s = OOM_WAITS_S
        self.raw_labels = {int(k): v for k, v in loaded.model.config.id2label.items()}
        try:
            self.labels = normalise_labels(self.raw_labels, label_map)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.negative_index = next(i for i, s in self.labels.items() if s == "negative")
        self.positive_index = next(i for i, s in self.labels.items() if s == "positive")
        self.encoder = Encoder(
            self.tokenizer,
            max_length=max_length_of(self.tokenizer, getattr(loaded.model.config, "max_position_embeddings", None)),
            max_batch_size=max_batch_size or DEFAULT_BATCH_SIZE[self.device.type],
            max_batch_tokens=max_batch_tokens or DEFAULT_BATCH_TOKENS[self.device.type],
            cost=None,
            pad_multiple=8 if self.device.type == "cuda" else None,
            pin_memory=self.device.type == "cuda",
            truncation=truncation,
        )
        self.onnx = (
            onnx_engine.build(self.model, self.encoder.input_names, engine, self.revision, onnx_cache_dir)
            if engine != "torch"
            else None
        )
        self.max_length = self.encoder.max_length
        self.max_batch_size = self.encoder.max_batch_size
        self.max_batch_tokens = self.encoder.max_batch_tokens
        self.cost_cached = False
        if self.device.type == "cpu":
            # Timed on this machine and this model, so the planner prices its passes truly; once, then
            # kept beside the ONNX exports for every later start (see planning.cached_cost).
            identity = f"{self.revision}|{engine}|{self.max_length}"
            self.encoder.cost, self.cost_cached = planning.cached_cost(
                onnx_cache_dir, identity, lambda: planning.measure(self._probe, self.max_length)
            )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "revision": self.revision,
            "engine": self.engine,
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
        launched: list[tuple[list[int], torch.Tensor | list[ClassificationFailure]]] = []
        padded = 0
        for indexes, tensors in encoded.passes:
            for part, outcome in self._run_splitting_on_oom(indexes, encoded.ids, tensors):
                padded += len(part) * max(encoded.lengths[i] for i in part)
                launched.append((part, outcome))
        for indexes, outcome in launched:
            results: Sequence[Answer] = self._predictions(outcome) if isinstance(outcome, torch.Tensor) else outcome
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

    def _run_splitting_on_oom(
        self, indexes: list[int], ids: list[list[int]], tensors: dict[str, torch.Tensor] | None = None, attempt: int = 0
    ) -> list[tuple[list[int], torch.Tensor | list[ClassificationFailure]]]:
        try:
            if tensors is None:
                tensors = self.encoder.pad([ids[i] for i in indexes])
            return [(indexes, self._forward(tensors))]
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(indexes) == 1:
                # Alone and still too big: most often the memory is someone else's for a moment (a
                # sibling process's spike), so wait and try again before calling the text unclassifiable.
                if attempt < len(self.oom_waits_s):
                    time.sleep(self.oom_waits_s[attempt])
                    return self._run_splitting_on_oom(indexes, ids, None, attempt + 1)
                return [(indexes, [ClassificationFailure(f"out of memory on {self.device}: {exc}")])]
            half = len(indexes) // 2
            return self._run_splitting_on_oom(indexes[:half], ids) + self._run_splitting_on_oom(indexes[half:], ids)

    def _forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Launch one forward pass; returns the logits in float32, still on the device."""
        if self.onnx is not None:
            return self.onnx(tensors)
        non_blocking = self.device.type == "cuda"
        inputs = {k: v.to(self.device, non_blocking=non_blocking) for k, v in tensors.items()}
        with torch.inference_mode():
            return self.model(**inputs).logits.float()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The features the sentiment head reads (and the category head beside it), one vector per text, in
        order: what `categories suggest` clusters. Always through torch, in the planned passes."""
        plain = self.model.model if isinstance(self.model, category_head.TwoHeads) else self.model
        name, layer = category_head.feature_layer(plain)
        seen: list[torch.Tensor] = []
        hook = layer.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
        vectors: list[list[float]] = [[] for _ in texts]
        try:
            encoded = self.encode(texts)
            for indexes, tensors in encoded.passes:
                padded = tensors if tensors is not None else self.encoder.pad([encoded.ids[i] for i in indexes])
                with torch.inference_mode():
                    plain(**{k: v.to(self.device) for k, v in padded.items()})
                features = seen.pop()
                features = features[:, 0] if features.dim() == 3 else features
                for index, row in zip(indexes, features.float().cpu().tolist(), strict=True):
                    vectors[index] = row
        finally:
            hook.remove()
        return vectors

    def _probe(self, n: int, length: int) -> None:
        """One forward pass of `n` texts of `length` word pieces, for the planner's cost measurement."""
        filler = self.tokenizer.unk_token_id or 0
        self._forward(self.encoder.pad([[filler] * length] * n))

    def _predictions(self, logits: torch.Tensor) -> list[Answer]:
        """One copy to Python lists, then plain arithmetic: a pass's answers are a few dozen pairs,
        and every further torch call on them (softmax, max, indexing) cost more than the work (see
        worker/docs/performance.md: the no-model profile). A tie counts as negative (a human sees it)."""
        negative, positive, temperature = self.negative_index, self.positive_index, self.temperature
        sentiments = len(self.raw_labels)
        answers: list[Answer] = []
        for row in logits.cpu().tolist():
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

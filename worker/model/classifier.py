"""Classifier: the model loaded through transformers, run in torch or, with TRIAGE_ENGINE, ONNX Runtime.

On CUDA the weights run in bf16 (fp16 where bf16 is missing) and the padded tensors sit in pinned
memory. On the CPU they run in fp32, in torch or in ONNX Runtime (fp32 or int8; see `onnx_engine`),
and the planner's pass costs are timed at load (see `planning`). A pass that runs out of memory is
split in halves and retried; a single text that still fails comes back as a ClassificationFailure
for the dead-letter topic. The answers themselves (the margin, the calibration, the category) are
`answering.Classifier`'s, shared with the cached ONNX path (`onnx_serving`), which needs no torch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from worker.contracts.values import ClassificationFailure
from worker.logs import get_logger
from worker.model import category_head, onnx_cache, onnx_engine
from worker.model.answering import Classifier, Outcome
from worker.model.calibration import Calibration
from worker.model.encoding import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TOKENS,
    Encoder,
    Truncation,
    max_length_of,
    rust_backend,
)
from worker.model.identity import revision_of
from worker.model.loading import load, resolve_device

log = get_logger("worker.model")
# How long a single text that ran out of memory waits before each new try (then it is dead-lettered).
OOM_WAITS_S = (0.25, 1.0, 4.0)


class SentimentClassifier(Classifier):
    """A Hugging Face sequence-classification model with positive/negative labels, loaded through
    transformers."""

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
        resolved = resolve_device(device)
        onnx_cache.check_applies(engine, resolved.type)
        log.info("model_loading", model=model, device=str(resolved), engine=engine, loaded_from="transformers")
        loaded = load(model, resolved, revision=revision)
        self.tokenizer = loaded.tokenizer
        self.model, card = category_head.attach(loaded.model, Path(model).expanduser())
        config = loaded.model.config
        on_cuda = resolved.type == "cuda"
        encoder = Encoder(
            self.tokenizer,
            max_length=max_length_of(self.tokenizer, getattr(config, "max_position_embeddings", None)),
            max_batch_size=max_batch_size or DEFAULT_BATCH_SIZE[resolved.type],
            max_batch_tokens=max_batch_tokens or DEFAULT_BATCH_TOKENS[resolved.type],
            cost=None,
            pad_multiple=8 if on_cuda else None,
            pin_memory=on_cuda,
            truncation=truncation,
            tensors="torch" if engine == "torch" else "numpy",
        )
        super().__init__(
            model,
            engine=engine,
            revision=revision_of(model, loaded.commit),
            device=loaded.device,
            dtype=loaded.dtype,
            calibration=calibration,
            raw_labels={int(k): v for k, v in config.id2label.items()},
            label_map=label_map,
            card=card,
            encoder=encoder,
            loaded_from="transformers",
        )
        if on_cuda:
            # cuDNN's attention builds a plan for every new (batch, length) shape, and ours vary
            # with every batch: measured on an H100, fresh shapes ran at 4,800 reviews/s with it
            # and 7,700 without (PyTorch then picks its memory-efficient kernel).
            torch.backends.cuda.enable_cudnn_sdp(False)
        if compile_model:  # shapes vary per batch: compile once for dynamic batch and length
            self.model = torch.compile(self.model, dynamic=True)
        self.compiled = compile_model
        self.oom_waits_s = OOM_WAITS_S
        self.onnx = (
            onnx_engine.build(
                self.model, encoder.input_names, engine, self.revision, onnx_cache_dir, self._serving_facts()
            )
            if engine != "torch"
            else None
        )
        if not on_cuda:
            runtime = (
                self.onnx.runtime() if self.onnx else f"torch={torch.__version__}|threads={torch.get_num_threads()}"
            )
            self._plan_costs(onnx_cache_dir, runtime)

    def _serving_facts(self) -> tuple[onnx_cache.ServingFacts, str] | None:
        """What the cached ONNX path needs to serve this model without transformers (see onnx_serving):
        None for a slow (pure Python) tokenizer, which only transformers can run."""
        backend = rust_backend(self.tokenizer)
        if backend is None:
            return None
        facts = onnx_cache.ServingFacts(
            input_names=self.encoder.input_names,
            model_input_names=list(self.tokenizer.model_input_names),
            pad_token_id=self.tokenizer.pad_token_id or 0,
            unk_token_id=self.tokenizer.unk_token_id,
            padding_side=self.tokenizer.padding_side,
            max_length=self.max_length,
            labels=self.raw_labels,
        )
        return facts, backend.to_str()

    def _launch(self, indexes: list[int], ids: list[list[int]], tensors: Any) -> list[tuple[list[int], Outcome]]:
        return self._run_splitting_on_oom(indexes, ids, tensors)

    def _run_splitting_on_oom(
        self, indexes: list[int], ids: list[list[int]], tensors: dict[str, Any] | None = None, attempt: int = 0
    ) -> list[tuple[list[int], Outcome]]:
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

    def _forward(self, tensors: dict[str, Any]) -> Any:
        """Launch one forward pass; returns the logits in float32, still on the device (a numpy
        array from ONNX Runtime)."""
        if self.onnx is not None:
            return self.onnx(tensors)
        with torch.inference_mode():
            return self.model(**self._on_device(tensors)).logits.float()

    def _on_device(self, tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A pass's inputs on the model's device (numpy arrays, as the ONNX engines encode, become tensors)."""
        non_blocking = self.device.type == "cuda"
        return {k: torch.as_tensor(v).to(self.device, non_blocking=non_blocking) for k, v in tensors.items()}

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
                    plain(**self._on_device(padded))
                features = seen.pop()
                features = features[:, 0] if features.dim() == 3 else features
                for index, row in zip(indexes, features.float().cpu().tolist(), strict=True):
                    vectors[index] = row
        finally:
            hook.remove()
        return vectors

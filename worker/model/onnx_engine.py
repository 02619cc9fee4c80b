"""ONNX Runtime engine: the classifier's forward pass on the CPU through ONNX Runtime, in fp32 or int8.

TRIAGE_ENGINE=onnx or onnx-int8 (the `onnx` extra). The loaded model is exported to ONNX once per
revision, with attention, GELU and layer norms fused by ONNX Runtime's transformer optimizer for
BERT-shaped encoders, and kept in TRIAGE_ONNX_CACHE_DIR with a manifest of what each file was made
from and its digest, checked at every load. int8 is ONNX Runtime's dynamic
quantization (int8 weights, activations quantized as each pass runs), with a scale per output
channel, of the encoder layers' remaining weight products: the feed-forward pair and attention's
output projection. The fused attention (its query, key and value projections included), the pooler
and the classifier head stay in fp32. Whole-model dynamic int8 (one scale per matrix, attention's
products of two activations too) lost 5.6 points of negatives caught on the clothing reviews; this
recipe's cost is measured in worker/docs/performance.md. Encoding, planning and the answers stay
the classifier's. Beside the graphs it keeps what serving needs of the tokenizer and the config, so
the next start serves from the cache without torch (see `onnx_cache` and `onnx_serving`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from worker.model.errors import ModelLoadError
from worker.model.onnx_cache import (
    ENGINES,
    GRAPHS,
    RECIPE,
    SERVING_FILE,
    TOKENIZER_FILE,
    Manifest,
    OnnxForward,
    ServingFacts,
    check_applies,
    file_digest,
    folder_for,
    log,
)

__all__ = ["ENGINES", "RECIPE", "Manifest", "OnnxForward", "build", "check_applies", "export", "file_digest"]

OPSET = 17


class LogitsOnly(torch.nn.Module):
    """The model with plain tensors in and the logits out, the shape an ONNX graph can hold."""

    def __init__(self, model: Any, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True))).logits  # type: ignore[no-any-return]


def build(
    model: Any,
    input_names: list[str],
    engine: str,
    revision: str,
    cache_dir: Path,
    serving: tuple[ServingFacts, str] | None = None,
) -> OnnxForward:
    """The session for `engine`, exporting (and quantizing) `model` first unless the cache holds a
    graph made from these very weights (see onnx_cache.Manifest). `serving` (the facts and the fast
    tokenizer's JSON) is kept beside the graph, so the next start can serve without torch."""
    try:  # the extra's two packages: onnx reads the graph to fuse and quantize it, onnxruntime runs it
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"TRIAGE_ENGINE={engine} needs ONNX Runtime: pip install 'feedback-triage-worker[onnx]' ({exc})"
        ) from exc
    source = revision if not revision.endswith(":unknown") else f"weights:{weights_digest(model)}"
    folder = folder_for(cache_dir, source)
    fp32, graph = folder / GRAPHS["onnx"], folder / GRAPHS[engine]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(folder, source)
        if not manifest.holds(fp32):
            export(model, input_names, fp32)
            manifest.record(fp32)
        if graph != fp32 and not manifest.holds(graph):
            _quantize(fp32, graph)
            manifest.record(graph)
        if serving is not None and source == revision:  # served without torch only under a known revision
            facts, tokenizer_json = serving
            for name, text in ((SERVING_FILE, facts.to_json()), (TOKENIZER_FILE, tokenizer_json)):
                if not manifest.holds(folder / name) or (folder / name).read_text() != text:
                    manifest.write(name, text)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot write the ONNX export to {folder}: {exc}; set TRIAGE_ONNX_CACHE_DIR to a writable directory"
        ) from exc
    return OnnxForward(graph, input_names)


def weights_digest(model: Any) -> str:
    """The identity of a model that has no revision: a digest of its parameters' names and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def export(model: Any, input_names: list[str], target: Path, *, fuse: bool = True) -> None:
    """Export with the TorchScript-based exporter (1.7 s for MiniLM against 13 s for the dynamo one,
    whose int8 graph also ran slower), then, with `fuse`, let ONNX Runtime's transformer optimizer
    fuse attention, GELU and layer norms. Written beside the target and renamed into place, so a
    sibling process never reads half a file."""
    log.info("onnx_export_started", target=str(target))
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in input_names)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = Path(scratch) / target.name
        try:
            with eager_attention(model if fuse else None):
                torch.onnx.export(
                    LogitsOnly(model, input_names).eval(),
                    example,
                    str(partial),
                    dynamo=False,
                    input_names=input_names,
                    output_names=["logits"],
                    dynamic_axes={name: {0: "texts", 1: "length"} for name in input_names},
                    opset_version=OPSET,
                )
        except Exception as exc:  # the exporter raises many kinds; any of them means this model cannot go
            raise ModelLoadError(
                f"cannot export the model to ONNX ({type(exc).__name__}: {exc}); use TRIAGE_ENGINE=torch"
            ) from exc
        fused = _fuse(partial, getattr(model, "config", None)) if fuse else {}
        os.replace(partial, target)
    log.info("onnx_export_finished", target=str(target), bytes=target.stat().st_size, fused=fused)


@contextmanager
def eager_attention(model: Any | None) -> Iterator[None]:
    """Trace attention as plain matrix products (the pattern the optimizer fuses into one Attention
    operator: on MiniLM 400-word-piece passes ran 1.5x faster), then give the model back its own."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if model is None or before in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


# BERT-shaped encoders ONNX Runtime's "bert" optimizer knows, and where their configs keep the sizes.
FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"}


def _fuse(path: Path, config: Any) -> dict[str, int]:
    """Fuse the graph in place for a BERT-shaped encoder; what was fused (empty: left as it was)."""
    if config is None or getattr(config, "model_type", None) not in FUSABLE:
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    try:
        optimized = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden)
        optimized.save_model_to_file(str(path))
    except Exception as exc:  # an unfused graph still runs: say so and keep it
        log.warning("onnx_fusion_skipped", reason=f"{type(exc).__name__}: {exc}")
        return {}
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


def _quantize(fp32: Path, target: Path) -> None:
    """Dynamic int8 of the encoder layers' weight products, a scale per output channel (see the
    module's docstring for what stays in fp32, and why)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    kept = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm") and keeps_fp32(node, weights)]
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        with quiet_quantizer():
            quantize_dynamic(
                fp32,
                partial,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=kept,
                op_types_to_quantize=["MatMul", "Gemm"],
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused operators hide some types
            )
        os.replace(partial, target)
    log.info("onnx_quantized", target=str(target), kept_fp32=len(kept))


@contextmanager
def quiet_quantizer() -> Iterator[None]:
    """The quantizer's warning that advises pre-processing (for static quantization) goes to the root
    logger as plain text, among our JSON lines; it is held back while it runs."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def keeps_fp32(node: Any, weights: set[str]) -> bool:
    """Whether a matrix product stays in fp32: a product of two activations (attention's), or one
    outside the encoder layers (the pooler, the classifier head)."""
    if len(node.input) < 2 or node.input[1] not in weights:
        return True
    return "layer." not in node.name and "layers." not in node.name

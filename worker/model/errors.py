"""Errors of the model package, importable without torch (the cached ONNX path never loads it)."""

from __future__ import annotations

from worker.contracts.errors import OperatorError


class ModelLoadError(OperatorError):
    """The model or tokenizer could not be loaded, or its labels cannot be mapped."""

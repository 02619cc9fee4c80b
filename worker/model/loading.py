"""Loading: resolve the device and dtype, and load a tokenizer and model the way users name them.

A model is a Hugging Face id (downloaded into the cache on first use) or a local directory.
Every way loading can fail becomes one `ModelLoadError` with a readable reason. When the id is
not cached and the hub cannot be reached, that is said within seconds: without the check,
transformers retries for about 50 s before its own error.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from worker.model.errors import ModelLoadError
from worker.model.identity import hub_commit, hub_offline

__all__ = ["LoadedModel", "ModelLoadError", "load", "load_trainable", "pick_dtype", "resolve_device"]

HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class LoadedModel:
    tokenizer: PreTrainedTokenizerBase
    model: Any  # a transformers PreTrainedModel for sequence classification, in eval mode on `device`
    device: torch.device
    dtype: torch.dtype
    commit: str | None  # the hub commit both were loaded from; None for a local directory (or unknown)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("TRIAGE_DEVICE=cuda but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is missing); fp32 on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load(model: str, device: torch.device, revision: str | None = None) -> LoadedModel:
    """`revision` pins a hub model to a branch, tag or commit (TRIAGE_MODEL_REVISION)."""
    hf_logging.set_verbosity_error()  # our logs are JSON lines; keep library chatter off stderr
    hf_logging.disable_progress_bar()
    local_only = _check_reachable(model)
    dtype = pick_dtype(device)
    commit = None if Path(model).expanduser().is_dir() else hub_commit(model, revision, local_only=local_only)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_only, revision=commit or revision)
        loaded = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=dtype, local_files_only=local_only, revision=commit or revision
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {model!r}: {exc}") from exc
    loaded.to(device).eval()
    commit = commit or getattr(loaded.config, "_commit_hash", None)  # transformers 4 still said it
    return LoadedModel(tokenizer, loaded, device, dtype, commit)


def load_trainable(
    model: str, head: str = "classification", revision: str | None = None
) -> tuple[PreTrainedTokenizerBase, Any]:
    """The tokenizer and the model in fp32 on the CPU, in train mode, for `finetune` or `adapt`:
    `head` is "classification" (a two-label head, new when the checkpoint has none) or "masked_lm"."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    local_only = _check_reachable(model)
    kind = AutoModelForSequenceClassification if head == "classification" else AutoModelForMaskedLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_only, revision=revision)
        loaded = kind.from_pretrained(model, dtype=torch.float32, local_files_only=local_only, revision=revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {model!r}: {exc}") from exc
    return tokenizer, loaded.train()


def _check_reachable(model: str) -> bool:
    """Fail fast when `model` can be found nowhere; True when it must come from the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return True
    if path.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise ModelLoadError(f"cannot load model {model!r}: no such model directory")
    if hub_offline():
        return True
    from huggingface_hub import constants, try_to_load_from_cache

    reason = _hub_unreachable(constants.ENDPOINT)
    if reason is None:
        return False
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return True  # downloaded before: load it from the cache without asking the hub
    raise ModelLoadError(
        f"cannot load model {model!r}: it is not a local directory, not in the Hugging Face cache, and the hub "
        f"({constants.ENDPOINT}) cannot be reached ({reason}); pass --model DIR (or set TRIAGE_MODEL) to a "
        "downloaded model directory"
    )


def _hub_unreachable(endpoint: str) -> str | None:
    """None when the hub answers at all (any HTTP status); otherwise why it did not."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None

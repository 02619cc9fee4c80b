"""ONNX serving from the cache: start an ONNX engine without importing torch or transformers.

Importing torch and transformers' BERT took about 4.5 of the 6.5 to 7.8 s that `classify` of one
text needed here, for a pass that takes milliseconds. An ONNX engine does not need either once its
cache folder holds the graph and what serving needs besides it (`onnx_cache`: the fast tokenizer
and `ServingFacts`), all vouched for by the manifest for this model's revision. `open_cached`
serves from there when it can, and says None when it cannot; the caller then loads through
transformers (`classifier.SentimentClassifier`), which exports, writes those files, and so warms
the cache for the next start.

The revision is known without transformers for a local directory (its content digest) and for a hub
id read from the local cache offline (HF_HUB_OFFLINE: the snapshot's commit). A hub id with the hub
reachable goes through transformers, which asks the hub for the revision's newest commit. The
answers are the same either way (tested): the same graph, the same tokenizer, the same planner.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.logs import get_logger
from worker.model import onnx_cache
from worker.model.answering import Classifier
from worker.model.calibration import Calibration
from worker.model.category_card import read_card
from worker.model.encoding import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, Encoder, Truncation
from worker.model.identity import hub_commit, hub_offline, revision_of

log = get_logger("worker.model")
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees


class CachedOnnxClassifier(Classifier):
    """An ONNX engine served from its cache folder; torch is never imported."""

    def __init__(
        self,
        model: str,
        folder: Path,
        *,
        engine: str,
        revision: str,
        label_map: Mapping[str, str] | None = None,
        max_batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        calibration: Calibration | None = None,
        truncation: Truncation = "head_tail",
        onnx_cache_dir: Path,
    ) -> None:
        log.info("model_loading", model=model, device="cpu", engine=engine, loaded_from="onnx cache")
        facts = onnx_cache.ServingFacts.from_json((folder / onnx_cache.SERVING_FILE).read_text(encoding="utf-8"))
        self.tokenizer = CachedTokenizer(facts, (folder / onnx_cache.TOKENIZER_FILE).read_text(encoding="utf-8"))
        encoder = Encoder(
            self.tokenizer,  # type: ignore[arg-type]  # the part of a fast tokenizer the encoder reads
            max_length=facts.max_length,
            max_batch_size=max_batch_size or DEFAULT_BATCH_SIZE["cpu"],
            max_batch_tokens=max_batch_tokens or DEFAULT_BATCH_TOKENS["cpu"],
            cost=None,
            pad_multiple=None,
            pin_memory=False,
            truncation=truncation,
            tensors="numpy",
        )
        directory = Path(model).expanduser()
        super().__init__(
            model,
            engine=engine,
            revision=revision,
            device="cpu",
            dtype="float32",
            calibration=calibration,
            raw_labels=facts.labels,
            label_map=label_map,
            card=read_card(directory) if directory.is_dir() else None,
            encoder=encoder,
            loaded_from="onnx cache",
        )
        self.onnx = onnx_cache.OnnxForward(folder / onnx_cache.GRAPHS[engine], facts.input_names)
        self._plan_costs(onnx_cache_dir, self.onnx.runtime())

    def _forward(self, tensors: dict[str, Any]) -> Any:
        return self.onnx(tensors)


class CachedTokenizer:
    """The fast tokenizer's Rust backend with the few facts the encoder reads of a transformers
    tokenizer (the same backend transformers loaded, saved as JSON beside the graph)."""

    is_fast = True

    def __init__(self, facts: onnx_cache.ServingFacts, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_str(tokenizer_json)
        self.model_input_names = facts.model_input_names
        self.pad_token_id = facts.pad_token_id
        self.unk_token_id = facts.unk_token_id
        self.padding_side = facts.padding_side
        self.model_max_length = facts.max_length

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        """One text's ids, as a transformers tokenizer gives them (for `special_token_counts`)."""
        backend = copy.deepcopy(self.backend_tokenizer)
        backend.no_padding()
        backend.no_truncation()
        return {"input_ids": backend.encode(text, add_special_tokens=add_special_tokens).ids}


def open_cached(
    model: str,
    *,
    engine: str,
    device: str,
    revision: str | None,
    onnx_cache_dir: Path,
    **options: Any,
) -> CachedOnnxClassifier | None:
    """The classifier served from the ONNX cache, or None when this start must go through transformers:
    the torch engine, a GPU that may be used, a revision only the hub can name, or a cache folder that
    does not hold a graph, a tokenizer and the facts, each vouched for, for this revision."""
    if engine not in onnx_cache.GRAPHS or not _cpu_only(device):
        return None
    source = _known_revision(model, revision)
    if source is None:
        return None
    folder = onnx_cache.folder_for(onnx_cache_dir, source)
    manifest = onnx_cache.Manifest(folder, source)
    needed = (onnx_cache.GRAPHS[engine], onnx_cache.SERVING_FILE, onnx_cache.TOKENIZER_FILE)
    if not all(manifest.holds(folder / name) for name in needed):
        return None
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return None  # the transformers path says what to install
    return CachedOnnxClassifier(model, folder, engine=engine, revision=source, onnx_cache_dir=onnx_cache_dir, **options)


def _cpu_only(device: str) -> bool:
    """Whether this process runs on the CPU: asked for, or `auto` where the driver sees no GPU (torch
    would find none either; with a GPU, `auto` goes through transformers, which refuses ONNX there)."""
    if device == "cpu":
        return True
    return device == "auto" and not (NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir()))


def _known_revision(model: str, revision: str | None) -> str | None:
    """The revision transformers would load under (identity.revision_of) when it is known locally, else None."""
    if Path(model).expanduser().is_dir():
        return revision_of(model, None)
    commit = hub_commit(model, revision, local_only=True) if hub_offline() else None
    return revision_of(model, commit) if commit else None

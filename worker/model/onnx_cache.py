"""ONNX cache: the exported graphs of a model revision, and the session that runs one, without torch.

TRIAGE_ONNX_CACHE_DIR holds a folder per model revision and export recipe. In it:
`model.onnx` (fp32, fused), `model-int8.onnx` (when onnx-int8 ran), and what serving needs besides
the graph: `tokenizer.json` (the model's fast tokenizer, as transformers loaded it) and
`serving.json` (`ServingFacts`: input names, padding, length limit, raw labels). `manifest.json`
vouches for each file: the weights it was made from and the SHA-256 of its bytes, checked at every
load. A file it does not vouch for (planted, truncated, another model's) is never served.

`onnx_engine` writes the folder from a model loaded through transformers; `onnx_serving` serves
from it without importing torch or transformers at all. Both run the graph through `OnnxForward`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.logs import get_logger
from worker.model.errors import ModelLoadError

log = get_logger("worker.model.onnx")

ENGINES = ("torch", "onnx", "onnx-int8")
# Bumped when the export or the quantization recipe changes, so an old cached file is not reused.
RECIPE = "3"
GRAPHS = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
SERVING_FILE, TOKENIZER_FILE = "serving.json", "tokenizer.json"


def check_applies(engine: str, device_type: str) -> None:
    """Refuse an ONNX engine where it does not apply, with the line an operator needs."""
    if engine not in ENGINES:
        raise ModelLoadError(f"TRIAGE_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "torch" and device_type != "cpu":
        raise ModelLoadError(
            f"TRIAGE_ENGINE={engine} runs on the CPU only, and this process would use {device_type}; "
            "on a GPU use TRIAGE_ENGINE=torch (bf16), or set TRIAGE_DEVICE=cpu"
        )


def folder_for(cache_dir: Path, source: str) -> Path:
    """The cache folder of the weights named `source` (a revision, or a digest of the weights)."""
    return cache_dir.expanduser() / f"{re.sub(r'[^A-Za-z0-9._-]', '-', source)}-r{RECIPE}"


def session_threads() -> int:
    """Threads for ONNX Runtime's operators: OMP_NUM_THREADS when set (the tests set 1), else 0, which
    ONNX Runtime reads as one per physical core, as torch does. Decided without torch, so a cached
    start and a start through transformers run (and time their passes) alike."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "0")), 0)
    except ValueError:
        return 0


class OnnxForward:
    """One ONNX Runtime session; called with a pass's padded arrays, returns fp32 logits."""

    def __init__(self, path: Path, input_names: list[str]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = session_threads()
        options.log_severity_level = 3  # errors only: its warnings are not JSON lines
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = input_names
        self.path = path

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: arrays[name] for name in self.input_names}
        return np.asarray(self.session.run(["logits"], feed)[0], dtype=np.float32)

    @staticmethod
    def runtime() -> str:
        """What a pass's timing depends on besides the processor (see planning.cached_cost)."""
        import onnxruntime

        return f"onnxruntime={onnxruntime.__version__}|threads={session_threads()}"


@dataclass(frozen=True)
class ServingFacts:
    """What the encoder and the answers need of the tokenizer and the config, kept beside the graph."""

    input_names: list[str]  # the graph's inputs, in order
    model_input_names: list[str]  # the tokenizer's
    pad_token_id: int
    unk_token_id: int | None
    padding_side: str
    max_length: int  # the longest input the model takes (encoding.max_length_of)
    labels: dict[int, str]  # the config's id2label: the sentiment head's raw labels

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServingFacts:
        fields: dict[str, Any] = json.loads(text)
        fields["labels"] = {int(k): str(v) for k, v in fields["labels"].items()}
        return cls(**fields)


class Manifest:
    """What the cache folder's files were made from: `manifest.json` names, for each file, the weights
    it was made from (the model's revision, or a digest of its weights when it has none) and the
    SHA-256 of its own bytes. A file it does not vouch for (planted, truncated, another model's, written
    before manifests) is made again, never served under this model's name."""

    def __init__(self, folder: Path, source: str) -> None:
        self.path = folder / "manifest.json"
        self.source = source
        try:
            self.files: dict[str, dict[str, str]] = json.loads(self.path.read_text()).get("files", {})
        except (OSError, ValueError):
            self.files = {}

    def holds(self, file: Path) -> bool:
        entry = self.files.get(file.name)
        if not file.exists():
            return False
        if entry and entry.get("source") == self.source and entry.get("sha256") == file_digest(file):
            return True
        log.warning("onnx_cache_refused", file=str(file), reason="not made from these weights, or changed since")
        return False

    def record(self, file: Path) -> None:
        self.files[file.name] = {"source": self.source, "sha256": file_digest(file)}
        write_atomically(self.path, json.dumps({"recipe": RECIPE, "files": self.files}, indent=2))

    def write(self, name: str, text: str) -> None:
        """Write a small file into the folder and vouch for it."""
        target = self.path.parent / name
        write_atomically(target, text)
        self.record(target)


def write_atomically(path: Path, text: str) -> None:
    """Write beside `path` and rename into place, so a sibling process never reads half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

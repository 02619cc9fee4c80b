"""Identity: which exact weights a model name stands for, so a score can be traced to them.

A hub id resolves to the commit transformers downloaded (`config._commit_hash`, pinned with
TRIAGE_MODEL_REVISION); a local directory to a content hash: the SHA-256 of its files' names and
bytes (the weights, the config, the tokenizer), without the files the worker writes beside them
(its calibration and card), so calibrating a model does not change what it is. Both are cut to 12
hex digits: `sha:0a1b2c3d4e5f` for a hub commit, `dir:0a1b2c3d4e5f` for a directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

OWN_FILES = ("triage-calibration.json", "triage-card.json", "README.md")
CHUNK = 1 << 20


def directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in OWN_FILES):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def revision_of(model: str, config: Any) -> str:
    """`sha:...` for a hub model (the commit loaded), `dir:...` for a local directory."""
    directory = Path(model).expanduser()
    if directory.is_dir():
        return f"dir:{directory_digest(directory)}"
    commit = getattr(config, "_commit_hash", None)
    return f"sha:{commit[:12]}" if commit else "sha:unknown"

"""Identity: which exact weights a model name stands for, so a score can be traced to them.

A hub id resolves to the commit its revision points to (TRIAGE_MODEL_REVISION, else the default
branch), and is loaded at that commit; a local directory to a content hash: the SHA-256 of its files' names and
bytes (the weights, the config, the tokenizer), without the files the worker writes beside them
(its calibration and card), so calibrating a model does not change what it is. Both are cut to 12
hex digits: `sha:0a1b2c3d4e5f` for a hub commit, `dir:0a1b2c3d4e5f` for a directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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


def revision_of(model: str, commit: str | None) -> str:
    """`sha:...` for a hub model (the commit loaded, see `hub_commit`), `dir:...` for a local directory."""
    directory = Path(model).expanduser()
    if directory.is_dir():
        return f"dir:{directory_digest(directory)}"
    return f"sha:{commit[:12]}" if commit else "sha:unknown"


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids asking the hub (models come from the local cache only)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def hub_commit(model: str, revision: str | None, *, local_only: bool) -> str | None:
    """The commit a hub id's `revision` (None: its default branch) points to: asked of the hub, or with
    `local_only` read from the local cache's refs. None when it cannot be told (then transformers'
    own loading reports why). The model is then loaded at that very commit, so its name and its files
    agree; transformers 5 no longer says which commit it loaded (`config._commit_hash` is gone)."""
    try:
        from huggingface_hub import HfApi

        return str(HfApi().resolve_revision(model, revision=revision, local_files_only=local_only).resolved)
    except Exception:  # noqa: BLE001 - an older huggingface_hub, an unknown repo, no network: not ours to say
        return None

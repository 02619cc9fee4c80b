"""The stage chain is typed: mypy rejects stages in the wrong order, and accepts the worker's own chain.

Runs mypy on two small programs that build a chain from the real stages; `mypy` on the whole of
`worker/` is a step of `.ci/run`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
from worker.contracts.inference import Model
from worker.runtime.batches import Polled, Stored
from worker.runtime.decode import Decoder
from worker.runtime.pipeline import Chain
from worker.runtime.stages import DecodeStage, InferStage, StoreStage, TokenizeStage
from worker.runtime.triage import TriagePolicy


def chain(model: Model[list[str]], store: StoreStage) -> Chain[Polled, Stored]:
    return (
        Chain.of(DecodeStage(Decoder(1_000)))
        .then({first})
        .then({second})
        .then(store)
    )
"""


def check(tmp_path: Path, first: str, second: str) -> tuple[str, int]:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM.format(first=first, second=second))
    out, _, status = api.run(
        [str(program), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / ".mypy_cache")]
    )
    return out, status


def test_mypy_accepts_the_stages_in_order_and_rejects_them_swapped(tmp_path: Path) -> None:
    out, status = check(tmp_path, "TokenizeStage(model)", "InferStage(model, TriagePolicy(0.6))")
    assert status == 0, out
    out, status = check(tmp_path, "InferStage(model, TriagePolicy(0.6))", "TokenizeStage(model)")
    assert status == 1 and 'Argument 1 to "then" of "Chain"' in out, out

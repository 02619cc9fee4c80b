"""Progress: a bar on stderr for the operator tools that read large files (`send`, `evaluate`, `calibrate`)
and for training steps (`finetune`, `adapt`).

tqdm draws it when installed (the `tools` extra); without it, a plain line every tenth of the way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None, unit: str, desc: str, enabled: bool = True) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _plain(items, total, unit, desc)
        return
    yield from tqdm(items, total=total, unit=unit, desc=desc)


def _plain(items: Iterable[T], total: int | None, unit: str, desc: str) -> Iterator[T]:
    step = max((total or 0) // 10, 1)
    done = 0
    for item in items:
        yield item
        done += 1
        if total and done % step == 0:
            print(f"{desc}: {done:,}/{total:,} {unit}", file=sys.stderr)


class StepBar:
    """Training progress on stderr: a tqdm bar when installed, else a line every tenth of the way."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, step: int, total: int, loss: float) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            if step % max(1, total // 10) == 0:
                print(f"training: step {step:,}/{total:,}, loss {loss:.4f}", file=sys.stderr)
            return
        if self.bar is None:
            self.bar = tqdm(total=total, unit="step", desc="training")
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

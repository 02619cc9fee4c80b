"""Planning: cut a micro-batch's texts, sorted by length, into the forward passes that cost least.

A pass pads every text to its longest, so it costs `n x longest` tokens of work, plus a fixed
overhead that does not depend on its size (on the CPU: launching some forty matrix products and
reading the weights, 4-18 ms per pass on MiniLM). Many small passes waste the overhead; one big one
pads a 10-word answer to a 60-word one. `PassCost` prices both, from a few timed passes of the
model on this machine (`measure`), and `plan` finds the cheapest cut by dynamic programming.
Without a cost (the GPU, where one big launch always wins) passes are filled up to the budget.

The timing is done once per model revision, engine and machine (`cached_cost`): kept as a small
JSON file in the cache folder, and read at every later start. Timed on a busy shared machine, three
starts once fitted overheads of 6.7, 161 and 119 ms; read back, every start plans the same, and
`classify` no longer spends most of its start-up timing passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from worker.model.onnx_cache import write_atomically

PROBE_REPEATS = 3
Shape = tuple[int, int]  # (texts, length in word pieces)


@dataclass(frozen=True)
class PassCost:
    """Milliseconds for one forward pass of `n` texts padded to `length` word pieces:
    overhead + n * length * (per_token + length * per_token_position), the last term attention's."""

    overhead_ms: float
    per_token_ms: float
    per_token_position_ms: float = 0.0

    def ms(self, n: int, length: int) -> float:
        return self.overhead_ms + n * length * (self.per_token_ms + length * self.per_token_position_ms)

    def describe(self) -> dict[str, float]:
        return {
            "overhead_ms": round(self.overhead_ms, 3),
            "per_token_us": round(self.per_token_ms * 1000, 3),
            "per_token_position_ns": round(self.per_token_position_ms * 1e6, 3),
        }


def probe_shapes(max_length: int) -> tuple[Shape, Shape, Shape]:
    """The shapes timed to fit the cost, so the three terms separate: a small pass, and two holding
    the same padded tokens, one wide and one long ((1, 16), (16, 32), (4, 128) for BERT's 512)."""
    long = min(128, max_length)
    wide = max(long // 4, 1)
    return (1, max(wide // 2, 1)), (16, wide), (4, long)


def measure(run: Callable[[int, int], None], max_length: int) -> PassCost:
    """Fit a PassCost from `run(n, length)`, one forward pass of that shape: the fastest of a few
    repeats of each probe shape (the machine's noise only ever adds), solved for the three terms."""
    shapes = probe_shapes(max_length)
    timings = []
    for n, length in shapes:
        run(n, length)  # the first pass of a shape pays for allocations and kernel choices
        best = float("inf")
        for _ in range(PROBE_REPEATS):
            started = time.perf_counter()
            run(n, length)
            best = min(best, (time.perf_counter() - started) * 1000)
        timings.append(best)
    return fit(shapes, timings)


def machine(runtime: str) -> str:
    """What the timing depends on besides the model: the processor, how many, and `runtime` (the
    library that runs the passes, its version and its threads)."""
    model = platform.processor()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        )
    except (OSError, StopIteration):
        pass
    return f"{model}|cpus={os.cpu_count()}|{runtime}"


def cached_cost(folder: Path, identity: str, runtime: str, timed: Callable[[], PassCost]) -> tuple[PassCost, bool]:
    """The cost kept for `identity` (model revision, engine, length) on this machine and `runtime`,
    or `timed()` kept for the next start; and whether it was read back. A folder that cannot be
    written only means timing at every start."""
    where = machine(runtime)
    key = hashlib.sha256(f"{identity}|{where}".encode()).hexdigest()[:16]
    path = folder.expanduser() / "pass-costs" / f"{key}.json"
    try:
        return PassCost(**json.loads(path.read_text())["cost"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cost = timed()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"identity": identity, "machine": where, "cost": asdict(cost)}))
    except OSError:
        pass
    return cost, False


def fit(shapes: Sequence[Shape], timings: Sequence[float]) -> PassCost:
    """The three terms from the probe shapes' times. The wide and the long shape hold the same padded
    tokens at different lengths, so their difference is attention's; the small one gives the
    overhead. A term that noise pushes below zero is taken as zero."""
    (n1, l1), (n2, l2), (n3, l3) = shapes
    small, wide, long = timings
    tokens = n2 * l2
    assert tokens == n3 * l3 and l3 > l2, "the wide and the long shape must hold the same padded tokens"
    position = max((long - wide) / (tokens * (l3 - l2)), 0.0)
    per_token = max((wide - small - position * (tokens * l2 - n1 * l1 * l1)) / (tokens - n1 * l1), 1e-6)
    overhead = max(small - n1 * l1 * (per_token + l1 * position), 0.0)
    return PassCost(overhead, per_token, position)


def plan(
    lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int, cost: PassCost | None = None
) -> list[list[int]]:
    """Group text indexes, longest first, into passes of at most `max_batch_size` texts whose padded
    size (texts x longest) stays within `max_batch_tokens`; a single text over the budget gets a
    pass of its own. With `cost`, the cut with the least total cost; without, each pass is filled.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    if cost is None:
        return _filled(order, lengths, max_batch_size, max_batch_tokens)
    sorted_lengths = [lengths[i] for i in order]
    # cheapest[j]: the least cost of the first j texts (in sorted order); start[j]: where its last pass begins.
    cheapest = [0.0] + [float("inf")] * len(order)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for begin in range(end - 1, -1, -1):
            count, longest = end - begin, sorted_lengths[begin]
            if not fits(count, longest, max_batch_size, max_batch_tokens):
                break  # an earlier begin holds more texts and a longer one: over the budget too
            total = cheapest[begin] + cost.ms(count, longest)
            if total < cheapest[end]:
                cheapest[end], start[end] = total, begin
    passes: list[list[int]] = []
    end = len(order)
    while end > 0:
        passes.append(order[start[end] : end])
        end = start[end]
    return passes[::-1]


def fits(count: int, longest: int, max_batch_size: int, max_batch_tokens: int) -> bool:
    """Whether `count` texts padded to `longest` may share a pass: one text always may."""
    return count == 1 or (count <= max_batch_size and count * longest <= max_batch_tokens)


def _filled(order: list[int], lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    passes: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and not fits(len(current) + 1, longest, max_batch_size, max_batch_tokens):
            passes.append(current)
            current = []
        current.append(index)
    if current:
        passes.append(current)
    return passes

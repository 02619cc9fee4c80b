"""Suite mode: every GPU figure in one call (`bench --mode suite`), one JSON file and one table.

    1. end to end with 1, 2 and 4 worker processes on one device, from a backlog
    2. p99 produce-to-stored at a steady half of the 1-process rate
    3. the model alone (the classifier against `pipeline`), on IMDB-length texts
    4. the model alone on short feedback (10-60 word pieces), the traffic the worker mostly sees
    5. the model alone on IMDB-length texts with torch.compile (last: compiling takes longest)

The model is a randomly initialised BERT-base with a real tokenizer (`--random-bert-base DIR`) whose
head is set from a seed so that about half of the events are escalated (see texts), or any
`--model`. A device is lent for minutes at a time, so the suite must not fail on anything but the
device: `--dry-run` runs every step here on the CPU with a tiny BERT and few events, and a test
runs it. Each step is timed; a step that fails is recorded with its error and the suite goes on,
so one broken step never costs the others' figures. See worker/devtools/bench/gpu_suite.sh for
the run on a lent machine.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from worker.settings import Settings

PROCESSES = (1, 2, 4)
# Figures per step: events (backlog per process, steady seconds, model texts) for a real run and a dry run.
# A dry run's tiny model finishes a batch in milliseconds, so its group joins (which Tansu holds for the
# whole poll interval) can be short.
FULL = {
    "backlog_per_process": 30_000,
    "steady_s": 20,
    "model_texts": 20_000,
    "batch": 1_024,
    "partitions": 8,
    "poll_interval_ms": 15_000,
}
DRY = {
    "backlog_per_process": 96,
    "steady_s": 3,
    "model_texts": 128,
    "batch": 16,
    "partitions": 4,
    "poll_interval_ms": 3_000,
}


def bench_suite(
    settings: Settings,
    texts: list[str],
    *,
    dry_run: bool,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every step in order; `checkpoint` gets the result so far after each one (a lease can end mid-suite)."""
    from worker.devtools.bench.e2e_mode import bench_e2e
    from worker.devtools.bench.model_mode import bench_model
    from worker.devtools.bench.texts import synthetic_feedback

    sizes = DRY if dry_run else FULL
    settings = settings.with_overrides(max_batch_size=sizes["batch"])
    steps: dict[str, Any] = {}

    def result() -> dict[str, Any]:
        return {
            "mode": "suite",
            "dry_run": dry_run,
            "sizes": sizes,
            "versions": versions(),
            "steps": steps,
            "summary": summarise(steps),
        }

    def step(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            steps[name] = run() | {"step_s": round(time.perf_counter() - started, 1)}
        except Exception as exc:  # noqa: BLE001 - record it, keep the other figures
            steps[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        print(f"suite: {name} done in {time.perf_counter() - started:.1f}s", flush=True)
        if checkpoint is not None:
            checkpoint(result())
        return steps[name] if "error" not in steps[name] else None

    def backlog(processes: int) -> Callable[[], dict[str, Any]]:
        events = sizes["backlog_per_process"] * processes
        return lambda: bench_e2e(
            settings, texts, events, sizes["partitions"], 0.0, processes, max_poll_interval_ms=sizes["poll_interval_ms"]
        )

    for processes in PROCESSES:
        step(f"e2e_{processes}p", backlog(processes))
    one = steps.get("e2e_1p", {})
    if "events_per_s" in one:
        rate = max(one["events_per_s"] / 2, 1.0)
        step(
            "steady_half_load",
            lambda: bench_e2e(
                settings,
                texts,
                int(rate * sizes["steady_s"]),
                sizes["partitions"],
                rate,
                1,
                max_poll_interval_ms=sizes["poll_interval_ms"],
            ),
        )
    model_texts = (texts * (sizes["model_texts"] // max(len(texts), 1) + 1))[: sizes["model_texts"]]
    step("model_alone", lambda: bench_model(settings, model_texts, rounds=3))
    step("model_alone_short", lambda: bench_model(settings, synthetic_feedback(sizes["model_texts"]), rounds=3))
    step("model_alone_compiled", lambda: bench_model(settings.with_overrides(torch_compile=True), model_texts, 3))
    return result()


def versions() -> dict[str, str | None]:
    """The packages the figures were taken with: on the GPU machine torch and transformers are the
    image's, the rest the lock's (gpu_suite.sh carries them)."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "tokenizers", "kafka-python", "sqlalchemy", "pydantic"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def summarise(steps: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, read from the steps: rates, scaling, p99 at half load, e2e against model alone."""
    rate = {name: s.get("events_per_s") for name, s in steps.items() if name.startswith("e2e_")}
    one = rate.get("e2e_1p")
    model = steps.get("model_alone", {}).get("ours_per_s")
    return {
        "events_per_s": rate,
        "scaling_vs_1p": {name: round(r / (one * int(name[4])), 3) for name, r in rate.items() if r and one},
        "p99_ms_at_half_load": steps.get("steady_half_load", {}).get("p99_ms"),
        "model_alone_per_s": model,
        "model_alone_compiled_per_s": steps.get("model_alone_compiled", {}).get("ours_per_s"),
        "model_alone_short_per_s": steps.get("model_alone_short", {}).get("ours_per_s"),
        "e2e_1p_vs_model_alone": round(one / model, 3) if one and model else None,
        "stage_share_1p": steps.get("e2e_1p", {}).get("stage_share"),
        "failed_steps": sorted(name for name, s in steps.items() if "error" in s),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'step':24}{'events/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'device':>10}{'took s':>9}"]
    for name, s in result["steps"].items():
        if "error" in s:
            lines.append(f"{name:24}  FAILED: {s['error'][:90]}")
            continue
        per_s = s.get("events_per_s", s.get("ours_per_s"))
        lines.append(
            f"{name:24}{per_s!s:>12}{s.get('p50_ms', '')!s:>10}{s.get('p99_ms', '')!s:>10}"
            f"{s.get('device', '')!s:>10}{s.get('step_s', '')!s:>9}"
        )
    summary = result["summary"]
    lines += [
        "",
        f"scaling vs 1 process (target >= 0.8): {summary['scaling_vs_1p']}",
        f"p99 produce-to-stored at half load (target < 250 ms): {summary['p99_ms_at_half_load']}",
        f"end to end / model alone (target >= 0.9): {summary['e2e_1p_vs_model_alone']}",
        f"failed steps: {summary['failed_steps'] or 'none'}",
    ]
    return "\n".join(lines)

"""Suite mode: every GPU figure in one call (`bench --mode suite`), one JSON file and one table.

    1. end to end with 1, 2 and 4 worker processes on one device, from a backlog of short feedback
       (10-60 word pieces: survey answers, tickets, app reviews, the traffic the worker is for)
    2. end to end with 1 process on IMDB-length reviews (mean 225 word pieces, a tenth cut at 512)
    3. p99 produce-to-stored at a steady half of the 1-process rate, on short feedback
    4. the model alone (the classifier against `pipeline`) on both corpora, each also with a category
       head of CATEGORIES on the same model, to price the second head
    5. the profile of the model alone on IMDB-length reviews (`bench --mode profile`): encode, classify
       and a fixed-shape forward apart, the device's busy share and its kernels

torch.compile is left out: on an H100 it ran at 0.55x of the eager model (it recompiles for every new
shape a micro-batch brings), and compiling alone outlasted the two minutes it was given on the H200.

Each corpus gets its own randomly initialised BERT-base with a real tokenizer (`--random-bert-base
DIR`), whose head is set from a seed so that about half of that corpus's events are escalated (see
texts). A device is lent for minutes at a time, so the suite must not fail on anything but the
device: `--dry-run` runs every step here on the CPU with a tiny BERT and few events, and a test runs
it. Each step is timed; a step that fails is recorded with its error and the suite goes on, and the
JSON is written after every step, so a lease that ends mid-suite keeps the figures taken. See
worker/devtools/bench/gpu_suite.sh for the run on a lent machine.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from worker.settings import Settings

PROCESSES = (1, 2, 4)
CATEGORIES = 9  # the width of the category head priced beside the plain model (the probe had 9)
# Sizes for a real run and a dry run. A dry run's tiny model finishes a batch in milliseconds, so its
# group joins (which Tansu holds for the whole poll interval) can be short.
FULL: dict[str, Any] = {
    "backlog_per_process": 30_000,
    "steady_s": 15,
    "model_texts": {"short": 20_000, "imdb": 6_000},
    "profile_texts": 8_192,
    "batch": 1_024,
    "partitions": 8,
    "poll_interval_ms": 15_000,
}
DRY: dict[str, Any] = {
    "backlog_per_process": 96,
    "steady_s": 3,
    "model_texts": {"short": 128, "imdb": 64},
    "profile_texts": 64,
    "batch": 16,
    "partitions": 4,
    "poll_interval_ms": 3_000,
}


def bench_suite(
    settings: Settings,
    models: dict[str, str],
    corpora: dict[str, list[str]],
    *,
    dry_run: bool,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every step in order, `models` and `corpora` keyed "short" and "imdb"; `checkpoint` gets the
    result so far after each step."""
    from worker.devtools.bench.e2e_mode import bench_e2e
    from worker.devtools.bench.model_mode import bench_model
    from worker.devtools.bench.profile_mode import bench_profile

    sizes = DRY if dry_run else FULL
    tuned = settings.with_overrides(max_batch_size=sizes["batch"])
    on = {corpus: tuned.with_overrides(model=model) for corpus, model in models.items()}
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

    def e2e(corpus: str, processes: int, rate: float = 0.0, events: int = 0) -> Callable[[], dict[str, Any]]:
        events = events or sizes["backlog_per_process"] * processes
        poll = sizes["poll_interval_ms"]
        return lambda: bench_e2e(
            on[corpus], corpora[corpus], events, sizes["partitions"], rate, processes, max_poll_interval_ms=poll
        )

    for processes in PROCESSES:
        step(f"e2e_{processes}p", e2e("short", processes))
    step("e2e_1p_imdb", e2e("imdb", 1))
    one = steps.get("e2e_1p", {})
    if "events_per_s" in one:
        rate = max(one["events_per_s"] / 2, 1.0)
        step("steady_half_load", e2e("short", 1, rate, int(rate * sizes["steady_s"])))

    def model_alone(corpus: str) -> Callable[[], dict[str, Any]]:
        texts = _cycled(corpora[corpus], sizes["model_texts"][corpus])
        return lambda: bench_model(on[corpus], texts, rounds=3, category_head=CATEGORIES)

    step("model_alone_imdb", model_alone("imdb"))
    step("model_alone_short", model_alone("short"))
    step("profile_imdb", lambda: bench_profile(on["imdb"], _cycled(corpora["imdb"], sizes["profile_texts"])))
    return result()


def _cycled(texts: list[str], count: int) -> list[str]:
    return (texts * (count // max(len(texts), 1) + 1))[:count]


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
    rate = {name: s.get("events_per_s") for name, s in steps.items() if name in ("e2e_1p", "e2e_2p", "e2e_4p")}
    one = rate.get("e2e_1p")
    model = steps.get("model_alone_short", {}).get("ours_per_s")
    return {
        "events_per_s": rate,
        "scaling_vs_1p": {name: round(r / (one * int(name[4])), 3) for name, r in rate.items() if r and one},
        "p99_ms_at_half_load": steps.get("steady_half_load", {}).get("p99_ms"),
        "model_alone_per_s": model,
        "e2e_1p_imdb_per_s": steps.get("e2e_1p_imdb", {}).get("events_per_s"),
        "model_alone_imdb_per_s": steps.get("model_alone_imdb", {}).get("ours_per_s"),
        "model_alone_short_per_s": steps.get("model_alone_short", {}).get("ours_per_s"),
        "category_head_cost": {
            name: steps.get(name, {}).get("category_head", {}).get("cost")
            for name in ("model_alone_imdb", "model_alone_short")
        },
        "e2e_1p_vs_model_alone_short": round(one / model, 3) if one and model else None,
        "profile_imdb": {
            k: steps.get("profile_imdb", {}).get(k) for k in ("encode_per_s", "classify_per_s", "predict_per_s")
        },
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
        f"end to end / model alone, short feedback (target >= 0.9): {summary['e2e_1p_vs_model_alone_short']}",
        f"category head of {CATEGORIES}, cost (target < 5%): {summary['category_head_cost']}",
        f"failed steps: {summary['failed_steps'] or 'none'}",
    ]
    return "\n".join(lines)

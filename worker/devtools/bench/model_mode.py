"""Model mode: our classifier against transformers' `pipeline(batch_size=64)` on the same texts and model.

Prints both rates, the ratio, label agreement and the largest score difference. Ours is built by
the wiring module exactly as the worker builds it (label map included) and is fed the worker's
own micro-batches; baseline and ours take turns on `rounds` slices, so noise lands on both.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from worker.runtime.wiring import build_classifier
from worker.settings import Settings


def bench_model(settings: Settings, texts: list[str], rounds: int = 3) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    from worker.contracts.values import Prediction

    model = settings.model
    # The same work as the baseline: its truncation (the start of a text), no calibration.
    ours = build_classifier(settings.with_overrides(truncation="head", calibration="off"))
    baseline = pipeline(
        "text-classification",
        model=model,
        device=ours.device,
        dtype=torch.float16 if ours.device.type == "cuda" else torch.float32,
    )
    tokens = [len(ids) for ids in ours.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]]
    passes: list[Any] = []  # the classifier's stats for each micro-batch

    def timed(fn: Any, chunk: list[str]) -> tuple[Any, float]:
        if ours.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = fn(chunk)
        if ours.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    def baseline_on(chunk: list[str]) -> list[Any]:
        return list(baseline(chunk, batch_size=64, truncation=True))

    def ours_in_micro_batches(chunk: list[str]) -> list[Any]:
        # The worker hands the classifier one micro-batch (at most max_batch_size events) at a
        # time, so it can only sort by length within that window; this does the same.
        answers = []
        for start in range(0, len(chunk), ours.max_batch_size):
            inference = ours.classify(ours.encode(chunk[start : start + ours.max_batch_size]))
            answers += inference.answers
            passes.append(inference.stats)
        return answers

    # Warm up both (a compiled model gets a few shapes compiled before the clock starts).
    baseline_on(texts[:64])
    ours_in_micro_batches(texts[: ours.max_batch_size * (4 if settings.torch_compile else 1)])
    passes.clear()
    # Baseline and ours take turns on consecutive slices of the texts, so a burst of noise from
    # elsewhere on the machine lands on both instead of on whichever ran at that moment.
    base_out: list[Any] = []
    our_out: list[Any] = []
    round_ratios = []
    base_s = our_s = 0.0
    size = math.ceil(len(texts) / rounds)
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        base_part, base_round_s = timed(baseline_on, chunk)
        our_part, our_round_s = timed(ours_in_micro_batches, chunk)
        base_out += base_part
        our_out += our_part
        base_s, our_s = base_s + base_round_s, our_s + our_round_s
        round_ratios.append(round(base_round_s / our_round_s, 3))
    label_of = {raw.lower(): norm for raw, norm in ours.describe()["labels"].items()}
    agree, max_diff = 0, 0.0
    for base, mine in zip(base_out, our_out, strict=True):
        assert isinstance(mine, Prediction)
        base_label = label_of[base["label"].lower()]
        agree += base_label == mine.label
        mine_score = mine.score if base_label == mine.label else 1 - mine.score
        max_diff = max(max_diff, abs(mine_score - base["score"]))
    padded, real = sum(p.padded_tokens for p in passes), sum(p.real_tokens for p in passes)
    return {
        "mode": "model",
        "model": model,
        **{k: v for k, v in ours.describe().items() if k in ("device", "dtype", "max_length")},
        "texts": len(texts),
        "mean_tokens": round(statistics.fmean(tokens), 1),
        "share_truncated": round(sum(t >= ours.max_length for t in tokens) / len(tokens), 3),
        "baseline": "transformers pipeline(batch_size=64)",
        "baseline_per_s": round(len(texts) / base_s, 1),
        "ours_per_s": round(len(texts) / our_s, 1),
        "ratio": round(base_s / our_s, 3),
        "round_ratios": round_ratios,
        "label_agreement": round(agree / len(texts), 4),
        "max_score_diff": float(f"{max_diff:.2e}"),
        "ours_forward_passes": sum(p.forward_passes for p in passes),
        "ours_padding_overhead": round(padded / real - 1, 3) if real else 0,
        "max_batch_size": ours.max_batch_size,
        "ours_min_fill": ours.min_fill,
        "max_batch_tokens": ours.max_batch_tokens,
        "torch_compile": settings.torch_compile,
    }

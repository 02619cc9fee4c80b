"""Profile mode: where the model-alone time goes (`bench --mode profile`), for the figure a target misses.

Each part of `predict` on its own, over the same micro-batches the worker would make:

    encode     tokenize, plan and pad (CPU)
    classify   the planned forward passes and the copy back, on texts already encoded
    predict    both in turn, as `bench --mode model` times ours
    forward    the model alone on tensors already on the device, one fixed shape: the device's ceiling

and, over a few micro-batches of `classify`, torch's profiler: the device's busy time against the
wall clock, the kernels that take it, and the host's functions by their own time (cProfile). The
arithmetic the passes need is estimated from the model's size and the tokens padded, so the
achieved TFLOP/s say how far the device is from its peak.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from typing import Any

from worker.runtime.wiring import build_torch_classifier
from worker.settings import Settings

PROFILED_BATCHES = 3


def bench_profile(settings: Settings, texts: list[str]) -> dict[str, Any]:
    import torch

    ours = build_torch_classifier(settings.with_overrides(truncation="head", calibration="off"))
    cuda = ours.device.type == "cuda"
    size = ours.max_batch_size
    windows = [texts[i : i + size] for i in range(0, len(texts), size)]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    ours.classify(ours.encode(windows[0]))  # warm-up: kernels chosen, memory pooled
    sync()
    started = time.perf_counter()
    encoded = [ours.encode(window) for window in windows]
    encode_s = time.perf_counter() - started
    sync()
    started = time.perf_counter()
    stats = [ours.classify(e).stats for e in encoded]
    sync()
    classify_s = time.perf_counter() - started
    started = time.perf_counter()
    for window in windows:
        ours.classify(ours.encode(window))
    sync()
    predict_s = time.perf_counter() - started

    padded = sum(s.padded_tokens for s in stats)
    real = sum(s.real_tokens for s in stats)
    flop_per_token = _flop_per_token(ours.model, padded / len(texts))  # at the mean padded length
    result: dict[str, Any] = {
        "mode": "profile",
        "model": settings.model,
        **{k: v for k, v in ours.describe().items() if k in ("engine", "device", "dtype", "max_length")},
        "texts": len(texts),
        "mean_tokens": round(real / len(texts), 1),
        "micro_batch": size,
        "forward_passes": sum(s.forward_passes for s in stats),
        "padding_overhead": round(padded / real - 1, 3) if real else 0,
        "encode_per_s": round(len(texts) / encode_s, 1),
        "classify_per_s": round(len(texts) / classify_s, 1),
        "predict_per_s": round(len(texts) / predict_s, 1),
        "classify_tflops": round(padded * flop_per_token / classify_s / 1e12, 1),
        "forward": _fixed_shape(ours, sync),
        "profile": _profiled(ours, encoded[:PROFILED_BATCHES], sync),
    }
    return result


def _flop_per_token(model: Any, length: float) -> float:
    """Floating-point operations per token in a sequence of `length`: the weight products (2 per weight
    per token) and attention's two products of activations (4 x length x hidden per layer per token).
    Embeddings are lookups. BERT-base: 170 MFLOP of weights, and 9.4 MFLOP of attention at 256 tokens."""
    config = model.config
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    weights = sum(p.numel() for p in model.parameters()) - embeddings
    attention = 4 * length * config.hidden_size * config.num_hidden_layers
    return 2.0 * weights + attention


def _fixed_shape(ours: Any, sync: Any) -> dict[str, Any]:
    """The model alone on device tensors of one shape, the shape the planner would fill at IMDB lengths."""
    length = min(256, ours.max_length)
    batch = max(1, min(ours.max_batch_size, ours.max_batch_tokens // length))
    import torch

    tensors = ours.encoder.pad([[ours.tokenizer.unk_token_id or 0] * length] * batch)
    inputs = {k: torch.as_tensor(v).to(ours.device) for k, v in tensors.items()}  # numpy for an ONNX engine

    with torch.inference_mode():
        for _ in range(3):
            ours.model(**inputs)
        sync()
        repeats = 10
        started = time.perf_counter()
        for _ in range(repeats):
            ours.model(**inputs)
        sync()
    seconds = (time.perf_counter() - started) / repeats
    return {
        "batch": batch,
        "length": length,
        "texts_per_s": round(batch / seconds, 1),
        "tflops": round(batch * length * _flop_per_token(ours.model, length) / seconds / 1e12, 1),
    }


def _profiled(ours: Any, encoded: list[Any], sync: Any) -> dict[str, Any]:
    """torch.profiler's device time and top kernels, and cProfile's top host functions, over `classify`."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ours.device.type == "cuda" else [])
    sync()
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        for e in encoded:
            ours.classify(e)
        sync()
    wall = time.perf_counter() - started
    # Only the device's own events (kernels, copies): an operator's row repeats its kernels' time.
    kernels = [e for e in profiler.key_averages() if e.device_type == DeviceType.CUDA]
    device_us = sum(e.self_device_time_total for e in kernels)
    kernels = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:10]
    host = cProfile.Profile()
    host.enable()
    for e in encoded:
        ours.classify(e)
    sync()
    host.disable()
    text = io.StringIO()
    pstats.Stats(host, stream=text).sort_stats("tottime").print_stats(12)
    return {
        "batches": len(encoded),
        "wall_s": round(wall, 3),
        "device_busy_s": round(device_us / 1e6, 3),
        "device_busy_share": round(device_us / 1e6 / wall, 3) if wall else None,
        "top_kernels": [
            {"name": e.key[:90], "share_of_device": round(e.self_device_time_total / device_us, 3)}
            for e in kernels
            if device_us
        ],
        "host_by_own_time": [line for line in text.getvalue().splitlines() if line.strip()][-14:],
    }

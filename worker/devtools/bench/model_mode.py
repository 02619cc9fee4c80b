"""Model mode: our classifier against the ways others would serve the same model, on the same texts.

The peers: transformers' `pipeline(batch_size=64)`; a plain torch loop a speed-minded user would
write (each window of 64 texts sorted by length, a new batch where a text is under half the
longest); and, with the `onnx` extra, the same loop through ONNX Runtime in fp32 and with
whole-model dynamic int8 (what Optimum does). Ours is built by the wiring module exactly as the
worker builds it (engine and label map included) and is fed the worker's own micro-batches.
Every system takes its turn on each of `rounds` slices, so noise lands on all of them. Printed:
each rate, its ratio to ours, and its label agreement with fp32 torch (the plain loop's labels).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.contracts.errors import OperatorError
from worker.runtime.wiring import build_torch_classifier
from worker.settings import Settings

WINDOW = 64  # the peers sort within windows of this many texts, the worker's CPU micro-batch
HALF = 0.5  # ... and start a new batch where a text is under this share of the batch's longest

Labeller = Callable[[list[str]], list[tuple[str, float]]]  # texts -> (sentiment, score) each


def bench_model(settings: Settings, texts: list[str], rounds: int = 3, category_head: int = 0) -> dict[str, Any]:
    """Ours against the peers on `texts`; with `category_head` N, also ours with a head of N categories
    (seeded, untrained) on the same model, to price the second head."""
    import torch

    # The same work as the peers: their truncation (the start of a text), no calibration.
    settings = settings.with_overrides(truncation="head", calibration="off")
    ours = build_torch_classifier(settings)
    passes: list[Any] = []  # the classifier's stats for each micro-batch

    with tempfile.TemporaryDirectory() as scratch:
        systems = {**_peers(settings.model, ours, Path(scratch)), "ours": _in_micro_batches(ours, passes)}
        if category_head:
            names = [f"category_{n}" for n in range(category_head)]
            with_head = with_category_head(settings.model, Path(scratch) / "with-categories", names)
            systems["ours_with_categories"] = _in_micro_batches(
                build_torch_classifier(settings.with_overrides(model=str(with_head))), []
            )
        # Warm up each (a compiled model gets a few shapes compiled before the clock starts).
        for name, system in systems.items():
            system(texts[: ours.max_batch_size * (4 if settings.torch_compile and name.startswith("ours") else 1)])
        passes.clear()
        # The systems take turns on consecutive slices of the texts, so a burst of noise from
        # elsewhere on the machine lands on all of them instead of on whichever ran at that moment.
        outputs: dict[str, list[tuple[str, float]]] = {name: [] for name in systems}
        seconds = dict.fromkeys(systems, 0.0)
        round_ratios = []
        size = math.ceil(len(texts) / rounds)
        for start in range(0, len(texts), size):
            chunk = texts[start : start + size]
            took = {}
            for name, system in systems.items():
                if ours.device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                outputs[name] += system(chunk)
                if ours.device.type == "cuda":
                    torch.cuda.synchronize()
                took[name] = time.perf_counter() - started
                seconds[name] += took[name]
            round_ratios.append(round(took["pipeline"] / took["ours"], 3))
    reference = outputs["torch_sorted"]
    table = {
        name: {
            "per_s": round(len(texts) / seconds[name], 1),
            "vs_ours": round(seconds["ours"] / seconds[name], 3),
            "labels_equal_to_fp32": _agreement(outputs[name], reference),
        }
        for name in systems
    }
    max_diff = max(
        (abs(mine[1] - (base[1] if base[0] == mine[0] else 1 - base[1])))
        for base, mine in zip(outputs["pipeline"], outputs["ours"], strict=True)
    )
    tokens = [len(ids) for ids in ours.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]]
    padded, real = sum(p.padded_tokens for p in passes), sum(p.real_tokens for p in passes)
    return {
        "mode": "model",
        "model": settings.model,
        **{k: v for k, v in ours.describe().items() if k in ("engine", "device", "dtype", "max_length", "pass_cost")},
        "texts": len(texts),
        "mean_tokens": round(statistics.fmean(tokens), 1),
        "share_truncated": round(sum(t >= ours.max_length for t in tokens) / len(tokens), 3),
        "systems": table,
        "baseline": "transformers pipeline(batch_size=64)",
        "baseline_per_s": table["pipeline"]["per_s"],
        "ours_per_s": table["ours"]["per_s"],
        "ratio": round(seconds["pipeline"] / seconds["ours"], 3),
        "round_ratios": round_ratios,
        "label_agreement": _agreement(outputs["ours"], outputs["pipeline"]),
        "max_score_diff": float(f"{max_diff:.2e}"),
        "ours_forward_passes": sum(p.forward_passes for p in passes),
        "ours_padding_overhead": round(padded / real - 1, 3) if real else 0,
        "max_batch_size": ours.max_batch_size,
        "max_batch_tokens": ours.max_batch_tokens,
        "torch_compile": settings.torch_compile,
        **(
            {
                "category_head": {
                    "categories": category_head,
                    "per_s": table["ours_with_categories"]["per_s"],
                    "cost": round(1 - seconds["ours"] / seconds["ours_with_categories"], 4),
                }
            }
            if category_head
            else {}
        ),
    }


def _in_micro_batches(classifier: Any, passes: list[Any]) -> Labeller:
    """The classifier as the worker drives it: one micro-batch (at most max_batch_size texts) at a time,
    so it sorts by length only within that window."""
    from worker.contracts.values import Prediction

    def label(chunk: list[str]) -> list[tuple[str, float]]:
        answers: list[tuple[str, float]] = []
        for start in range(0, len(chunk), classifier.max_batch_size):
            inference = classifier.classify(classifier.encode(chunk[start : start + classifier.max_batch_size]))
            passes.append(inference.stats)
            for answer in inference.answers:
                assert isinstance(answer, Prediction)
                answers.append((answer.label, answer.score))
        return answers

    return label


def with_category_head(model: str, out: Path, names: list[str]) -> Path:
    """A copy of the model directory `model` with a seeded, untrained category head over `names`."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    from worker.model import category_head

    if not Path(model).is_dir():
        raise OperatorError(f"--category-head needs --model to be a local directory, got {model!r}")
    shutil.copytree(model, out)
    two = category_head.new_head(AutoModelForSequenceClassification.from_pretrained(out), names)
    category_head.save(two, category_head.card_of(two, names), out)
    return out


def table_lines(result: dict[str, Any]) -> list[str]:
    """The systems as aligned lines: rate, ratio to ours, labels equal to fp32 torch."""
    lines = [f"{'system':<14} {'texts/s':>9} {'vs ours':>8} {'labels = fp32':>14}"]
    for name, row in result["systems"].items():
        lines.append(f"{name:<14} {row['per_s']:>9} {row['vs_ours']:>8.2f} {100 * row['labels_equal_to_fp32']:>13.1f}%")
    return lines


def _agreement(answers: list[tuple[str, float]], reference: list[tuple[str, float]]) -> float:
    return round(sum(a[0] == b[0] for a, b in zip(answers, reference, strict=True)) / len(reference), 4)


def _peers(model: str, ours: Any, scratch: Path) -> dict[str, Labeller]:
    """The peers, each labelling texts its own way with the same model (the ONNX ones only with the extra)."""
    import torch
    from transformers import AutoModelForSequenceClassification, pipeline

    device, tokenizer, max_length = ours.device, ours.tokenizer, ours.max_length
    sentiment = {ours.raw_labels[i].lower(): s for i, s in ours.labels.items()}
    negative = ours.negative_index
    plain = AutoModelForSequenceClassification.from_pretrained(model, dtype=ours.dtype).to(device).eval()
    baseline = pipeline("text-classification", model=plain, tokenizer=tokenizer, device=device)

    def batches(texts: list[str]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        """Each window of WINDOW texts sorted by length, cut where a text is under HALF the longest."""
        for start in range(0, len(texts), WINDOW):
            window = list(range(start, min(start + WINDOW, len(texts))))
            lengths = tokenizer([texts[i] for i in window], truncation=True, max_length=max_length)["input_ids"]
            order = sorted(range(len(window)), key=lambda k: len(lengths[k]), reverse=True)
            current: list[int] = []
            for k in order:
                if current and len(lengths[k]) < HALF * len(lengths[current[0]]):
                    yield _batch(current, window, texts)
                    current = []
                current.append(k)
            if current:
                yield _batch(current, window, texts)

    def _batch(current: list[int], window: list[int], texts: list[str]) -> tuple[list[int], dict[str, Any]]:
        indexes = [window[k] for k in current]
        inputs = tokenizer(
            [texts[i] for i in indexes], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return indexes, {name: inputs[name] for name in ours.encoder.input_names}

    def labelled(texts: list[str], run: Callable[[dict[str, Any]], Any]) -> list[tuple[str, float]]:
        answers: list[tuple[str, float]] = [("", 0.0)] * len(texts)
        for indexes, inputs in batches(texts):
            probabilities = torch.softmax(run(inputs).float(), dim=-1).tolist()
            for index, row in zip(indexes, probabilities, strict=True):
                label = negative if row[negative] >= 0.5 else 1 - negative
                answers[index] = (ours.labels[label], row[label])
        return answers

    def torch_run(inputs: dict[str, Any]) -> Any:
        with torch.inference_mode():
            return plain(**{k: v.to(device) for k, v in inputs.items()}).logits

    def pipeline_labels(texts: list[str]) -> list[tuple[str, float]]:
        return [
            (sentiment[out["label"].lower()], out["score"]) for out in baseline(texts, batch_size=64, truncation=True)
        ]

    peers: dict[str, Labeller] = {
        "pipeline": pipeline_labels,
        "torch_sorted": lambda texts: labelled(texts, torch_run),
    }
    if device.type == "cpu":
        peers.update(_onnx_peers(plain, ours.encoder.input_names, scratch, labelled))
    return peers


def _onnx_peers(
    model: Any, input_names: list[str], scratch: Path, labelled: Callable[[list[str], Any], list[tuple[str, float]]]
) -> dict[str, Labeller]:
    """ONNX Runtime in fp32 and with whole-model dynamic int8, in the same sorted loop (skipped,
    with a note, when the `onnx` extra is not installed)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        print("bench: ONNX Runtime is not installed (the onnx extra): its peers are left out")
        return {}
    import torch

    from worker.model.onnx_engine import OnnxForward, export, quiet_quantizer

    fp32, int8 = scratch / "peer.onnx", scratch / "peer-int8.onnx"
    export(model, input_names, fp32, fuse=False)  # as exported for Optimum's dynamic quantization
    with quiet_quantizer():
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    sessions = {"onnx_fp32": OnnxForward(fp32, input_names), "onnx_int8": OnnxForward(int8, input_names)}

    def peer(session: OnnxForward) -> Labeller:
        """The session labelling texts from the peers' torch tensors (it takes and gives numpy arrays)."""

        def run(inputs: dict[str, Any]) -> Any:
            return torch.from_numpy(session({k: v.numpy() for k, v in inputs.items()}))

        return lambda texts: labelled(texts, run)

    return {name: peer(session) for name, session in sessions.items()}

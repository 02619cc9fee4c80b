"""Plot: a reliability diagram and a confusion matrix in one PNG (`triage-worker evaluate --plot`).

matplotlib is an optional extra (`pip install 'feedback-triage-worker[tools]'`); without it this
raises an OperatorError, which the CLI turns into one line.
"""

from __future__ import annotations

from pathlib import Path

from worker.contracts.errors import OperatorError
from worker.ops.quality.measures import CLASSES, Evaluation


def plot(evaluation: Evaluation, title: str, path: Path) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise OperatorError("evaluate --plot needs matplotlib: pip install 'feedback-triage-worker[tools]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (reliability, confusion) = plt.subplots(1, 2, figsize=(12, 5.2), dpi=110, width_ratios=[1.35, 1])
    bins = [b for b in evaluation.reliability if b.count]
    width = evaluation.reliability[0].upper - evaluation.reliability[0].lower
    reliability.bar(
        [b.lower for b in bins],
        [b.accuracy for b in bins],
        width=width,
        align="edge",
        color="#4c78a8",
        edgecolor="white",
        label="accuracy in the bin",
    )
    reliability.plot([0.5, 1], [0.5, 1], linestyle="--", color="#888", label="perfectly calibrated")
    reliability.plot(  # the gap between a bar's top and its marker is the bin's miscalibration
        [b.lower + width / 2 for b in bins],
        [b.mean_score for b in bins],
        "_",
        markersize=22,
        markeredgewidth=3,
        color="#e45756",
        label="mean score in the bin",
    )
    for b in bins:
        reliability.annotate(
            f"{b.count:,}", (b.lower + width / 2, 0.02), ha="center", fontsize=7, color="#222", rotation=90
        )
    reliability.set_xlim(0.5, 1)
    reliability.set_ylim(0, 1.01)  # a bin's accuracy can be under one half
    reliability.set_xlabel("score (probability of the predicted label)")
    reliability.set_ylabel("accuracy")
    reliability.set_title(f"Reliability: ECE {evaluation.ece:.3f}, Brier {evaluation.brier:.3f} (items per bin below)")
    reliability.legend(loc="upper left", fontsize=8)

    matrix = [[evaluation.confusion[t][p] for p in CLASSES] for t in CLASSES]
    confusion.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            share = count / sum(row) if sum(row) else 0.0
            color = "white" if count > peak / 2 else "black"
            confusion.text(j, i, f"{count:,}\n{share:.1%} of row", ha="center", va="center", color=color)
    confusion.set_xticks(range(len(CLASSES)), CLASSES)
    confusion.set_yticks(range(len(CLASSES)), CLASSES)
    confusion.set_xlabel("predicted")
    confusion.set_ylabel("true label")
    confusion.set_title(f"Confusion: accuracy {evaluation.accuracy:.3f}, macro-F1 {evaluation.macro_f1:.3f}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

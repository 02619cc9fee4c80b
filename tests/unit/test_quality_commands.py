"""`evaluate` and `calibrate` end to end on a tiny checkpoint whose miscalibration is known.

The labels are drawn from the probabilities of a checkpoint; a copy whose classifier head is
scaled by 4 gives the same labels with margins 4 times too large, so the temperature to find is 4.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest

from tests.checkpoints import BERT_FINETUNED_IMDB, CORPUS, build_checkpoint
from worker.cli import main
from worker.model.calibration import load, sigmoid
from worker.model.classifier import SentimentClassifier
from worker.runtime.wiring import build_classifier, build_policy
from worker.settings import Settings

FACTOR = 4.0
WORDS = sorted({w for line in CORPUS for w in line.replace(",", "").split()})
pytestmark = pytest.mark.model  # trains or scores a model end to end


@pytest.fixture(scope="module")
def miscalibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a checkpoint whose margins are FACTOR times too large, a labelled file drawn from the true ones)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("miscalibrated")
    honest = build_checkpoint(root / "honest", BERT_FINETUNED_IMDB, seed=3)
    rng = random.Random(7)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(1200)]
    answers = SentimentClassifier(str(honest), device="cpu").predict(texts)
    data = root / "labelled.jsonl"
    with data.open("w") as handle:
        for text, answer in zip(texts, answers, strict=True):
            label = "negative" if rng.random() < answer.negative_prob else "positive"  # type: ignore[union-attr]
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    scaled = root / "scaled"
    shutil.copytree(honest, scaled)
    model = AutoModelForSequenceClassification.from_pretrained(scaled)
    with torch.no_grad():
        model.classifier.weight.mul_(FACTOR)
        model.classifier.bias.mul_(FACTOR)
    model.save_pretrained(scaled)
    return scaled, data


def test_calibrate_finds_the_known_temperature_and_evaluate_sees_ece_fall(
    miscalibrated: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, data = miscalibrated
    monkeypatch.delenv("TRIAGE_CALIBRATION", raising=False)
    monkeypatch.delenv("TRIAGE_LOW_CONFIDENCE_THRESHOLD", raising=False)
    model_copy = tmp_path / "model"
    shutil.copytree(model, model_copy)
    uncalibrated = tmp_path / "before.json"
    assert main(["evaluate", "--data", str(data), "--model", str(model_copy), "--json", str(uncalibrated)]) == 0
    assert "calibration none" in capsys.readouterr().out

    assert main(["calibrate", "--data", str(data), "--model", str(model_copy), "--max-escalation-share", "0.6"]) == 0
    out = capsys.readouterr().out
    written = model_copy / "triage-calibration.json"
    assert f"calibration written to {written}" in out
    calibration = load(written)
    assert calibration.temperature == pytest.approx(FACTOR, rel=0.25)
    assert calibration.threshold is not None and calibration.threshold_rule == "share escalated <= 0.6"
    fitted = calibration.fitted
    assert fitted["fit_examples"] == 840 and fitted["holdout_examples"] == 360
    assert fitted["holdout_ece_after"] < fitted["holdout_ece_before"]

    calibrated = tmp_path / "after.json"
    assert main(["evaluate", "--data", str(data), "--model", str(model_copy), "--json", str(calibrated)]) == 0
    assert f"calibration {calibration.id}" in capsys.readouterr().out
    before, after = json.loads(uncalibrated.read_text()), json.loads(calibrated.read_text())
    assert after["calibration"] == calibration.id and after["temperature"] == pytest.approx(calibration.temperature)
    assert after["accuracy"] == before["accuracy"]  # a temperature moves scores, never labels
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    assert after["escalation"]["threshold"] == calibration.threshold  # the calibration's threshold applies

    settings = Settings(model=str(model_copy))
    assert build_policy(settings, build_classifier(settings)).threshold == calibration.threshold
    explicit = Settings(model=str(model_copy), low_confidence_threshold=0.6)
    assert build_policy(explicit, build_classifier(explicit)).threshold == 0.6  # an explicit setting wins


def test_evaluate_figures_agree_with_the_answers(
    miscalibrated: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("matplotlib")  # --plot needs the tools extra
    model, data = miscalibrated
    monkeypatch.setenv("TRIAGE_CALIBRATION", "off")
    out_json, out_png = tmp_path / "e.json", tmp_path / "e.png"
    code = main(["evaluate", "--data", str(data), "--model", str(model), "--limit", "300", "--json", str(out_json),
                 "--plot", str(out_png)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    figures = json.loads(out_json.read_text())
    rows = [json.loads(line) for line in data.read_text().splitlines()[:300]]
    answers = SentimentClassifier(str(model), device="cpu").predict([r["text"] for r in rows])
    right = sum((a.label == r["label"]) for a, r in zip(answers, rows, strict=True))  # type: ignore[union-attr]
    assert figures["n"] == 300 and figures["accuracy"] == pytest.approx(right / 300)
    assert f"accuracy {right / 300:.4f}" in printed and "threshold sweep" in printed
    assert figures["ece_binning"] == "10 equal-width score bins over [0.5, 1]"
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--data", "{bad}"], "{bad}:2: label 'maybe'"),
        (["evaluate", "--data", "{good}", "--plot", "x.svg"], "--plot writes a PNG"),
        (["evaluate", "--data", "/nope.jsonl"], "no such file: /nope.jsonl"),
        (["calibrate", "--data", "{good}", "--model", "org/hub-model"], "is not a local directory"),
        (["calibrate", "--data", "{good}", "--out", "{good}/cal.json"], "is not a writable folder"),
        (["calibrate", "--data", "{good}", "--out", "{tmp}/c.json", "--holdout", "1.5"], "between 0 and 1"),
    ],
)
def test_bad_input_is_one_clear_line(
    miscalibrated: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    model, good = miscalibrated
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "pos"}\n{"text": "hm", "label": "maybe"}\n')
    paths = {"bad": str(bad), "good": str(good), "tmp": str(tmp_path)}
    args, message = [a.format(**paths) for a in args], message.format(**paths)
    if "--model" not in args:
        args += ["--model", str(model)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_margins_do_not_depend_on_the_calibration(miscalibrated: tuple[Path, Path]) -> None:
    """calibrate fits on margins; a calibration in place must not change them (or it would fit twice)."""
    from worker.model.calibration import Calibration

    model, _ = miscalibrated
    texts = ["the product is great", "awful experience, the page froze"]
    plain = SentimentClassifier(str(model), device="cpu").predict(texts)
    hot = SentimentClassifier(str(model), device="cpu", calibration=Calibration(temperature=3.0)).predict(texts)
    for p, h in zip(plain, hot, strict=True):
        assert h.margin == pytest.approx(p.margin, abs=1e-5)  # type: ignore[union-attr]
        assert h.negative_prob == pytest.approx(sigmoid(p.margin / 3.0))  # type: ignore[union-attr]
        assert not math.isnan(h.score)  # type: ignore[union-attr]

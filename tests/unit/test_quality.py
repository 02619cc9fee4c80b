"""Labelled files, the evaluation figures (against hand-computed values) and the temperature fit."""

from __future__ import annotations

import gzip
import math
import random
from pathlib import Path

import pytest

from worker.contracts.errors import OperatorError
from worker.model.calibration import Calibration, CalibrationError, load, resolve, sigmoid
from worker.ops.quality.calibrate import split
from worker.ops.quality.fitting import FitError, choose_threshold, fit_temperature, negative_log_likelihood
from worker.ops.quality.labelled import LabelledFileError, parse_label, read_examples
from worker.ops.quality.measures import expected_calibration_error, measure


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("positive", "positive"), ("NEGATIVE", "negative"), ("pos", "positive"), ("Neg", "negative"),
        ("1", "positive"), (0, "negative"), (1.0, "positive"), ("LABEL_1", "positive"), ("label_0", "negative"),
        ("neutral", None), (2, None), (True, None), (None, None), ("", None),
    ],
)  # fmt: skip
def test_label_spellings(raw: object, label: str | None) -> None:
    assert parse_label(raw) == label


def test_reads_jsonl_csv_tsv_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": 0, "x": 1}\n')
    (tmp_path / "b.csv").write_text('review,stars\n"multi\nline, quoted",LABEL_1\nplain,negative\n')
    (tmp_path / "c.tsv").write_text("text\tlabel\nfine\tPOSITIVE\n")
    with gzip.open(tmp_path / "d.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write("text,label\nzipped,1\n")
    assert [(e.text, e.label, e.line) for e in read_examples(tmp_path / "a.jsonl")] == [
        ("good", "positive", 1),
        ("bad", "negative", 3),
    ]
    csv_examples = read_examples(tmp_path / "b.csv", text_column="review", label_column="stars")
    assert [(e.text, e.label) for e in csv_examples] == [("multi\nline, quoted", "positive"), ("plain", "negative")]
    assert [(e.text, e.label) for e in read_examples(tmp_path / "c.tsv")] == [("fine", "positive")]
    assert [(e.text, e.label) for e in read_examples(tmp_path / "d.csv.gz")] == [("zipped", "positive")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "meh"}\n', r"bad.jsonl:2: label 'meh'"),
        ("nojson.jsonl", '{"text": "a", "label": 1}\n{oops\n', r"nojson.jsonl:2: not JSON"),
        ("array.jsonl", "[1, 2]\n", r"array.jsonl:1: expected a JSON object"),
        ("blank.jsonl", '{"text": "  ", "label": 1}\n', r"blank.jsonl:1: no text in 'text'"),
        ("nolabel.jsonl", '{"text": "a"}\n', r"nolabel.jsonl:1: no label in 'label'"),
        ("cols.csv", "body,label\nx,1\n", r"cols.csv: no column 'text' in the header"),
        ("late.csv", "text,label\na,1\nb,2\n", r"late.csv:3: label '2'"),
        ("empty.jsonl", "\n", r"empty.jsonl: no labelled examples"),
        ("data.parquet", "x", r"cannot tell the format"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(LabelledFileError, match=message):
        read_examples(tmp_path / name)


def test_missing_file() -> None:
    with pytest.raises(OperatorError, match="no such file"):
        read_examples(Path("/nonexistent/labels.jsonl"))


def test_figures_match_hand_computed_values() -> None:
    # 4 truly negative, 6 positive. Negative probability per item:
    truths = ["negative"] * 4 + ["positive"] * 6
    probs = [0.95, 0.8, 0.55, 0.3, 0.1, 0.2, 0.45, 0.6, 0.05, 0.02]
    # predicted: N N N P | P P P N P P -> TN-class: 3 right, 1 wrong; positive: 5 right, 1 wrong
    e = measure(truths, probs, threshold=0.60)  # type: ignore[arg-type]
    assert e.n == 10 and e.accuracy == pytest.approx(0.8)
    assert e.confusion == {"negative": {"negative": 3, "positive": 1}, "positive": {"negative": 1, "positive": 5}}
    neg, pos = e.per_class["negative"], e.per_class["positive"]
    assert (neg.precision, neg.recall, neg.support) == (pytest.approx(0.75), pytest.approx(0.75), 4)
    assert (pos.precision, pos.recall) == (pytest.approx(5 / 6), pytest.approx(5 / 6))
    assert e.macro_f1 == pytest.approx((0.75 + 5 / 6) / 2)
    brier = sum((p - (t == "negative")) ** 2 for t, p in zip(truths, probs, strict=True)) / 10
    assert e.brier == pytest.approx(brier)
    # Scores: .95 .8 .55 .7 .9 .8 .55 .6 .95 .98; right: 1 1 1 0 1 1 1 0 1 1.
    # Bins of 0.05 from 0.5: [.55,.55,.55 -> bin 1: scores .55 .55, bin of .6 is 2, ...]
    bins = {round(b.lower, 2): (b.count, b.accuracy) for b in e.reliability if b.count}
    assert bins == {0.55: (2, 1.0), 0.6: (1, 0.0), 0.7: (1, 0.0), 0.8: (2, 1.0), 0.9: (1, 1.0), 0.95: (3, 1.0)}
    ece = (2 * abs(1 - 0.55) + 1 * abs(0 - 0.6) + 1 * abs(0 - 0.7) + 2 * abs(1 - 0.8) + abs(1 - 0.9)
           + 3 * abs(1 - (0.95 + 0.95 + 0.98) / 3)) / 10  # fmt: skip
    assert e.ece == pytest.approx(ece)
    # Escalated at 0.60: predicted negative (items 0, 1, 2, 7) or score < 0.60 (items 2, 6) -> 0 1 2 6 7.
    esc = e.escalation
    assert esc.escalated == 5 and esc.share_escalated == pytest.approx(0.5)
    assert esc.negatives_caught == pytest.approx(3 / 4) and esc.escalation_precision == pytest.approx(3 / 5)
    sweep = {row.threshold: row.escalated for row in e.sweep}
    assert sweep[0.5] == 4 and sweep[0.6] == 5 and sweep[0.75] == 6 and sweep[0.95] == 8
    assert [row.threshold for row in e.sweep] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_no_negatives_gives_no_figure_rather_than_a_division_by_zero() -> None:
    e = measure(["positive", "positive"], [0.1, 0.2], threshold=0.6)
    assert e.escalation.negatives_caught is None and e.escalation.escalation_precision is None
    assert e.per_class["negative"].precision == 0.0


def overconfident(n: int, factor: float, seed: int = 1) -> tuple[list[float], list[str]]:
    """Labels drawn from sigmoid(z); the model reports factor * z: miscalibrated by a known temperature."""
    rng = random.Random(seed)
    margins, truths = [], []
    for _ in range(n):
        z = rng.gauss(0, 2)
        truths.append("negative" if rng.random() < sigmoid(z) else "positive")
        margins.append(factor * z)
    return margins, truths


def test_temperature_fit_finds_the_known_miscalibration_and_lowers_ece() -> None:
    margins, truths = overconfident(4000, factor=3.0)
    temperature = fit_temperature(margins, truths)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert negative_log_likelihood(margins, truths, temperature) < negative_log_likelihood(margins, truths, 1.0)
    held_margins, held_truths = overconfident(2000, factor=3.0, seed=2)
    before = expected_calibration_error(held_truths, [sigmoid(m) for m in held_margins])  # type: ignore[arg-type]
    after = expected_calibration_error(held_truths, [sigmoid(m / temperature) for m in held_margins])  # type: ignore[arg-type]
    assert before > 0.08 and after < before / 3


def test_an_underconfident_model_gets_a_temperature_under_one() -> None:
    margins, truths = overconfident(4000, factor=0.5)
    assert fit_temperature(margins, truths) == pytest.approx(0.5, rel=0.1)


def test_fit_refuses_data_the_scores_do_not_follow() -> None:
    margins, truths = overconfident(2000, factor=-1.0)  # scores run against the labels
    with pytest.raises(FitError, match="barely follow"):
        fit_temperature(margins, truths)
    with pytest.raises(FitError, match="both negative and positive"):
        fit_temperature([1.0, 2.0], ["negative", "negative"])


def test_threshold_choice_meets_the_target_with_the_most_escalations() -> None:
    margins, truths = overconfident(3000, factor=1.0)
    probs = [sigmoid(m) for m in margins]
    chosen, rule = choose_threshold(truths, probs, min_precision=0.75)  # type: ignore[arg-type]
    assert chosen.escalation_precision is not None and chosen.escalation_precision >= 0.75
    assert rule == "escalation precision >= 0.75"
    higher = [t for t in (round(chosen.threshold + 0.01 * i, 2) for i in range(1, 50)) if t < 1]
    from worker.ops.quality.measures import escalation_at

    assert all((escalation_at(truths, probs, t).escalation_precision or 0) < 0.75 for t in higher)  # type: ignore[arg-type]
    capped, _ = choose_threshold(truths, probs, max_share=0.55)  # type: ignore[arg-type]
    assert capped.share_escalated <= 0.55
    with pytest.raises(FitError, match="no threshold gives escalation precision >= 0.999"):
        choose_threshold(truths, probs, min_precision=0.999)  # type: ignore[arg-type]
    with pytest.raises(FitError, match="every negative is escalated"):
        choose_threshold(truths, probs, max_share=0.1)  # type: ignore[arg-type]


def test_split_is_deterministic_and_refuses_tiny_parts() -> None:
    fit, held = split(100, 0.3, seed=0)
    assert len(held) == 30 and sorted(fit + held) == list(range(100)) and split(100, 0.3, seed=0) == (fit, held)
    with pytest.raises(FitError, match="at least 20"):
        split(40, 0.3, seed=0)
    with pytest.raises(FitError, match="between 0 and 1"):
        split(100, 1.0, seed=0)


def test_calibration_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text(Calibration(temperature=2.0, threshold=0.7, threshold_rule="r", model="m").to_json())
    loaded = load(path)
    assert (loaded.temperature, loaded.threshold, loaded.model) == (2.0, 0.7, "m") and len(loaded.id) == 12
    assert loaded.negative_probability(2.0) == pytest.approx(sigmoid(1.0))
    assert math.isclose(sigmoid(-800.0), 0.0, abs_tol=1e-300) and sigmoid(800.0) == 1.0
    for bad in ('{"temperature": 0}', '{"temperature": "x"}', "{}", '{"temperature": 1, "threshold": 2}', "nope"):
        path.write_text(bad)
        with pytest.raises(CalibrationError, match="not a calibration"):
            load(path)
    with pytest.raises(CalibrationError, match="cannot read calibration"):
        resolve(str(tmp_path / "missing.json"), "model")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert resolve("auto", str(model_dir)) is None and resolve("auto", "org/hub-id") is None
    (model_dir / "triage-calibration.json").write_text(Calibration(temperature=1.5).to_json())
    found = resolve("auto", str(model_dir))
    assert found is not None and found.temperature == 1.5
    assert resolve("off", str(model_dir)) is None

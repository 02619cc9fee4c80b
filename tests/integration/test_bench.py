"""The benchmark command runs both modes and writes its JSON (speed itself is never asserted here)."""

import json
from pathlib import Path

import pytest

from worker.cli import main
from worker.devtools.bench.texts import synthetic_reviews

pytestmark = pytest.mark.integration


def test_synthetic_reviews_are_deterministic_and_long_tailed() -> None:
    texts = synthetic_reviews(2000, seed=3)
    assert texts == synthetic_reviews(2000, seed=3)
    words = sorted(len(t.split()) for t in texts)
    assert 120 < words[len(words) // 2] < 200  # median about 184 tokens
    assert sum(w * 1.12 > 512 for w in words) / len(words) > 0.05  # a long tail past the 512 limit


def test_model_mode(
    checkpoint_pos_neg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_ONNX_CACHE_DIR", str(tmp_path / "onnx"))
    out = tmp_path / "model.json"
    assert (
        main(["bench", "--mode", "model", "--model", str(checkpoint_pos_neg), "--events", "40", "--json", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    assert result["texts"] == 40 and result["label_agreement"] == 1.0 and result["max_score_diff"] < 1e-3
    assert len(result["round_ratios"]) == 3  # baseline and ours took turns on three slices
    assert result["ours_forward_passes"] >= 3
    # Every peer ran on the same texts; the plain fp32 loop is the reference the others are held to.
    assert set(result["systems"]) == {"pipeline", "torch_sorted", "onnx_fp32", "onnx_int8", "ours"}
    assert result["systems"]["torch_sorted"]["labels_equal_to_fp32"] == 1.0
    assert result["systems"]["onnx_fp32"]["labels_equal_to_fp32"] == 1.0
    assert result["systems"]["ours"]["vs_ours"] == 1.0 and result["engine"] == "torch"
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("ratio=") and any(line.startswith("onnx_int8 ") for line in printed)


def test_model_mode_short_texts_with_ours_in_int8(
    checkpoint_pos_neg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_ONNX_CACHE_DIR", str(tmp_path / "onnx"))
    out = tmp_path / "model.json"
    args = ["bench", "--mode", "model", "--model", str(checkpoint_pos_neg), "--texts", "short", "--events", "30"]
    assert main([*args, "--engine", "onnx-int8", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["engine"] == "onnx-int8" and result["texts"] == 30
    assert (tmp_path / "onnx").is_dir()


def test_unknown_corpus_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--mode", "model", "--texts", "tweets", "--events", "5"]) == 2
    assert "--texts takes short, imdb or a file of texts; 'tweets' is none of them" in capsys.readouterr().err


def test_model_mode_honours_the_label_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ours is built by the same wiring as the worker: labels only TRIAGE_LABEL_MAP can map work here too."""
    from tests.checkpoints import build_checkpoint

    model = build_checkpoint(tmp_path / "odd-labels", {0: "bad", 1: "good"})
    monkeypatch.setenv("TRIAGE_LABEL_MAP", "bad=negative,good=positive")
    out = tmp_path / "model.json"
    assert main(["bench", "--mode", "model", "--model", str(model), "--events", "24", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["label_agreement"] == 1.0


@pytest.mark.parametrize("option", ["--rounds", "--events", "--workers", "--partitions"])
def test_counts_below_one_are_refused(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", option, "0"])
    assert exited.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err


def test_e2e_mode(checkpoint_pos_neg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e2e.json"
    assert (
        main(["bench", "--mode", "e2e", "--model", str(checkpoint_pos_neg), "--events", "300", "--json", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert result["stored"] == 300 and result["outbox_unpublished"] == 0
    assert result["escalations_published"] == result["escalated"]
    assert set(result["stage_share"]) == {
        "poll",
        "decode",
        "tokenize",
        "infer",
        "store",
        "commit",
        "relay",
        "housekeeping",
    }
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("events_per_s=")


def test_trends_mode(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    out = tmp_path / "trends.json"
    argv = ["bench", "--mode", "trends", "--rows", "2000,6000", "--use-database", "--json", str(out)]
    assert main([*argv, "--pending-events", "640", "--store-batches", "300"]) == 0
    result = json.loads(out.read_text())
    assert [step["rows"] for step in result["steps"]] == [2000, 6000]
    assert all(step["pending_rollup_rows"] > 0 for step in result["steps"])  # the queries also read pending
    timed = set(result["steps"][0]["ms"])
    assert {"top-products-this-week", "time-to-acknowledge", "report-7d-by-product"} <= timed and len(timed) == 6
    assert result["store_events_per_s_rollups_on"] > 0 and result["store_ratio_on_to_off"] > 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("rows=2000,6000 ")
    assert main(["bench", "--mode", "trends", "--rows", "10,zero"]) == 2


def test_the_gpu_suite_runs_every_step_in_a_dry_run(
    checkpoint_pos_neg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The GPU run can only fail for GPU reasons: the same suite, every step, on the CPU with a tiny BERT."""
    out = tmp_path / "suite.json"
    argv = ["bench", "--mode", "suite", "--dry-run", "--random-bert-base", str(checkpoint_pos_neg), "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().out
    result = json.loads(out.read_text())
    assert list(result["steps"]) == [
        "e2e_1p", "e2e_2p", "e2e_4p", "e2e_1p_imdb", "steady_half_load",
        "model_alone_imdb", "model_alone_short", "profile_imdb",
    ]  # fmt: skip
    assert not result["summary"]["failed_steps"]
    for name, processes in (("e2e_1p", 1), ("e2e_2p", 2), ("e2e_4p", 4), ("e2e_1p_imdb", 1)):
        step = result["steps"][name]
        assert step["workers"] == processes and step["stored"] == 96 * processes and step["device"] == "cpu"
        # Each corpus's seeded head escalates about half, not nearly every event as random weights would.
        assert 0.2 < step["escalated"] / step["stored"] < 0.8, step
    for name in ("model_alone_imdb", "model_alone_short"):  # priced beside the same model without it
        assert result["steps"][name]["category_head"]["categories"] == 9
    assert result["steps"]["profile_imdb"]["classify_per_s"] > 0
    assert result["summary"]["p99_ms_at_half_load"] is not None
    assert "scaling vs 1 process" in capsys.readouterr().out


def test_the_random_bert_escalates_about_half(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    from worker.devtools.bench.texts import random_bert_base, synthetic_reviews
    from worker.model.classifier import SentimentClassifier
    from worker.runtime.triage import TriagePolicy

    texts = synthetic_reviews(400, seed=5)
    model = random_bert_base(str(checkpoint_pos_neg), tmp_path / "bert", tiny=True, texts=texts[:128])
    answers = SentimentClassifier(model, device="cpu").predict(texts[128:])
    policy = TriagePolicy(0.6)
    escalated = sum(policy.decide(a).escalate for a in answers)  # type: ignore[arg-type]
    assert 0.3 < escalated / len(answers) < 0.7

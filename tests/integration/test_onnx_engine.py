"""The ONNX Runtime engine on a tiny checkpoint: exported once, the same answers in fp32, int8 named
wherever a result goes, and refused with a clear line where it does not apply."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.checkpoints import BERT_FINETUNED_IMDB, build_checkpoint
from worker.cli import main
from worker.contracts.values import Prediction
from worker.model import onnx_engine
from worker.model.classifier import SentimentClassifier
from worker.model.loading import ModelLoadError
from worker.runtime.service.metrics import MODEL_LABELS

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.integration

TEXTS = [
    "the product is great and i love it",
    "awful experience",
    "it is okay, nothing special, works fine i guess " * 30,  # cut at the model's 64 word pieces
    "checkout was quick",
    "terrible service, the app crashes all the time",
]


def export_folder(cache: Path) -> Path:
    """The one export folder in an ONNX cache (the planner's timed pass costs sit beside it, in pass-costs/)."""
    (folder,) = (p for p in cache.iterdir() if p.name != "pass-costs")
    return folder


def margins(classifier: SentimentClassifier) -> list[float]:
    answers = classifier.predict(TEXTS)
    assert all(isinstance(a, Prediction) for a in answers)
    return [a.margin for a in answers]  # type: ignore[union-attr]


def test_onnx_fp32_gives_torchs_answers(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    plain = SentimentClassifier(str(checkpoint_pos_neg), device="cpu")
    onnx = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=tmp_path)
    assert margins(onnx) == pytest.approx(margins(plain), abs=1e-4)
    assert onnx.model_name == f"{checkpoint_pos_neg} [onnx]" and plain.model_name == str(checkpoint_pos_neg)
    assert onnx.describe()["engine"] == "onnx" and "engine" in MODEL_LABELS


def test_int8_is_exported_once_and_named_in_the_model_column(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    first = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx-int8", onnx_cache_dir=tmp_path)
    folder = export_folder(tmp_path)
    assert folder.name.startswith(first.revision.replace(":", "-"))
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(written) == {"model.onnx", "model-int8.onnx", "manifest.json", "serving.json", "tokenizer.json"}
    second = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx-int8", onnx_cache_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written  # the cache was used
    assert second.onnx is not None and second.onnx.path.name == "model-int8.onnx"
    assert second.model_name.endswith("[onnx-int8]") and second.revision == first.revision
    plain = margins(SentimentClassifier(str(checkpoint_pos_neg), device="cpu"))
    quantized = margins(second)  # a 32-wide random model is no guide to int8's accuracy (see performance.md)
    assert all(abs(m) < 100 for m in quantized) and quantized != pytest.approx(plain, abs=1e-4)


def test_a_graph_the_manifest_does_not_vouch_for_is_exported_again(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    """A planted graph served under the genuine revision once said positive 1.000 for negative texts.
    Now each file must match the digest its manifest recorded, for these weights."""
    honest = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=tmp_path)
    folder = export_folder(tmp_path)
    planted = build_checkpoint(tmp_path / "other", BERT_FINETUNED_IMDB, seed=9)
    impostor = SentimentClassifier(str(planted), device="cpu", engine="onnx", onnx_cache_dir=tmp_path / "x")
    assert margins(impostor) != pytest.approx(margins(honest), abs=1e-3)
    assert impostor.onnx is not None
    shutil.copy(impostor.onnx.path, folder / "model.onnx")  # another model's graph under this revision
    again = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=tmp_path)
    assert margins(again) == pytest.approx(margins(honest), abs=1e-4)  # exported again, not served


def test_a_model_without_a_revision_gets_a_folder_of_its_own_weights(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    first = AutoModelForSequenceClassification.from_pretrained(checkpoint_pos_neg)
    other = AutoModelForSequenceClassification.from_pretrained(
        build_checkpoint(tmp_path / "o", BERT_FINETUNED_IMDB, seed=4)
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    a = onnx_engine.build(first, names, "onnx", "sha:unknown", tmp_path / "cache")
    b = onnx_engine.build(other, names, "onnx", "sha:unknown", tmp_path / "cache")
    assert a.path.parent != b.path.parent and a.path.parent.name.startswith("weights-")


def test_refused_where_it_does_not_apply(
    checkpoint_pos_neg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelLoadError, match="runs on the CPU only.*TRIAGE_ENGINE=torch"):
        onnx_engine.check_applies("onnx-int8", "cuda")
    with pytest.raises(ModelLoadError, match="must be one of torch, onnx, onnx-int8"):
        onnx_engine.check_applies("int4", "cpu")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ModelLoadError, match="set TRIAGE_ONNX_CACHE_DIR to a writable directory"):
        SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=blocked)
    for package in ("onnx", "onnxruntime"):  # the extra's two packages, each missing in turn
        with monkeypatch.context() as missing:
            missing.setitem(sys.modules, package, None)
            with pytest.raises(ModelLoadError, match=r"pip install 'feedback-triage-worker\[onnx\]'"):
                SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=tmp_path)


def test_a_model_that_cannot_be_exported_is_refused_clearly(tmp_path: Path) -> None:
    class Unexportable(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
            raise RuntimeError("no graph here")

    with pytest.raises(ModelLoadError, match="cannot export the model to ONNX.*use TRIAGE_ENGINE=torch"):
        onnx_engine.export(Unexportable(), ["input_ids", "attention_mask"], tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_evaluate_compares_fp32_and_int8_side_by_side(
    checkpoint_pos_neg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_ONNX_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "labelled.jsonl"
    labels = ["positive", "negative", "positive", "positive", "negative"]
    data.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(TEXTS * 4, labels * 4, strict=True))
    )
    out = tmp_path / "both.json"
    code = main(
        ["evaluate", "--data", str(data), "--model", str(checkpoint_pos_neg), "--compare-quantized", "--json", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "fp32" in printed and "int8" in printed and "labels changed by int8:" in printed
    both = json.loads(out.read_text())
    assert both["fp32"]["engine"] == "torch" and both["int8"]["engine"] == "onnx-int8"
    assert both["fp32"]["n"] == both["int8"]["n"] == 20

"""An ONNX engine served from a warm cache: the same answers as through transformers, in a process that
never imports torch, and refused (so transformers loads the model) wherever the cache cannot vouch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoints import with_category_head
from worker.contracts.values import Prediction
from worker.model import onnx_cache, onnx_serving
from worker.model.classifier import SentimentClassifier
from worker.model.onnx_serving import CachedOnnxClassifier, open_cached

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.integration

TEXTS = [
    "the product is great and i love it",
    "awful experience",
    "it is okay, nothing special, works fine i guess " * 30,  # cut head and tail at the model's 64 word pieces
    "checkout was quick",
    "i was charged twice and nobody answers my emails",
]


def answers(classifier: object) -> list[tuple[str, float, str | None]]:
    found = classifier.predict(TEXTS)  # type: ignore[attr-defined]
    assert all(isinstance(a, Prediction) for a in found)
    return [(a.label, round(a.margin, 4), a.category) for a in found]


def cached(model: Path, cache: Path, engine: str = "onnx", **options: object) -> CachedOnnxClassifier | None:
    return open_cached(str(model), engine=engine, device="cpu", revision=None, onnx_cache_dir=cache, **options)


@pytest.mark.parametrize("engine", ["onnx", "onnx-int8"])
def test_a_warm_cache_serves_transformers_answers(checkpoint_pos_neg: Path, tmp_path: Path, engine: str) -> None:
    assert cached(checkpoint_pos_neg, tmp_path, engine) is None  # cold: nothing to serve yet
    loaded = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine=engine, onnx_cache_dir=tmp_path)
    served = cached(checkpoint_pos_neg, tmp_path, engine)
    assert served is not None and served.describe()["loaded_from"] == "onnx cache"
    assert answers(served) == answers(loaded)
    assert (served.model_name, served.revision) == (loaded.model_name, loaded.revision)
    # The same planner: the pass costs the first start timed are read back, and cut the same passes.
    assert served.cost_cached and served.encoder.cost == loaded.encoder.cost
    encoded = [c.encode(TEXTS) for c in (served, loaded)]
    assert [p[0] for p in encoded[0].passes] == [p[0] for p in encoded[1].passes]
    assert encoded[0].ids == encoded[1].ids


def test_a_category_head_is_served_from_the_cache_too(checkpoint_pos_neg: Path, tmp_path: Path) -> None:
    model = with_category_head(checkpoint_pos_neg, tmp_path / "two", ["billing", "late_delivery"])
    loaded = SentimentClassifier(str(model), device="cpu", engine="onnx", onnx_cache_dir=tmp_path / "cache")
    served = cached(model, tmp_path / "cache")
    assert served is not None and served.categories == loaded.categories
    assert served.category_card == loaded.category_card
    assert answers(served) == answers(loaded) and {a[2] for a in answers(served)} - {None}


def hub_cache(checkpoint: Path, root: Path) -> tuple[str, dict[str, str]]:
    """`checkpoint` laid out as a Hugging Face cache holding one download of `tests/tiny-bert` at a
    made-up commit, and the environment that reads it offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "models--tests--tiny-bert"
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return "tests/tiny-bert", {"HF_HUB_CACHE": str(root), "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("named_by", ["directory", "hub id, offline"])
def test_classify_from_a_warm_cache_never_imports_torch(
    checkpoint_pos_neg: Path, tmp_path: Path, named_by: str
) -> None:
    model, hub = (
        (str(checkpoint_pos_neg), {}) if named_by == "directory" else hub_cache(checkpoint_pos_neg, tmp_path / "hub")
    )
    env = {
        **os.environ,
        **hub,
        "TRIAGE_MODEL": model,
        "TRIAGE_ENGINE": "onnx",
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_ONNX_CACHE_DIR": str(tmp_path / "onnx"),
        "TRIAGE_CALIBRATION": "off",
    }
    script = (
        "import sys; from worker.cli import main; code = main(['classify', *sys.argv[1:]]); "
        "print(sorted({'torch', 'transformers'} & set(sys.modules))); sys.exit(code)"
    )

    def classify() -> tuple[list[object], list[str]]:
        done = subprocess.run(
            [sys.executable, "-c", script, *TEXTS[:2]], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        *lines, imported = done.stdout.splitlines()
        return [json.loads(line) for line in lines], json.loads(imported.replace("'", '"'))

    first, imported_first = classify()  # cold: through transformers, which fills the cache
    again, imported_again = classify()
    assert imported_first == ["torch", "transformers"] and imported_again == []
    assert again == first
    (folder,) = (p for p in (tmp_path / "onnx").iterdir() if p.name != "pass-costs")
    assert folder.name.startswith("dir-" if named_by == "directory" else "sha-0123456789ab-")


def test_the_cache_is_refused_where_it_cannot_vouch_and_transformers_mends_it(
    checkpoint_pos_neg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=cache)
    assert cached(checkpoint_pos_neg, cache) is not None
    assert cached(checkpoint_pos_neg, cache, engine="torch") is None
    assert cached(checkpoint_pos_neg, cache, engine="onnx-int8") is None  # no int8 graph yet
    on = {"engine": "onnx", "revision": None, "onnx_cache_dir": cache}
    assert open_cached(str(checkpoint_pos_neg), device="cuda", **on) is None  # type: ignore[arg-type]
    # `auto` takes the cache only where the driver sees no GPU.
    (tmp_path / "gpus" / "0000:01:00.0").mkdir(parents=True)
    for gpus, expected in ((tmp_path / "none", True), (tmp_path / "gpus", False)):
        monkeypatch.setattr(onnx_serving, "NVIDIA_GPUS", gpus)
        assert (open_cached(str(checkpoint_pos_neg), device="auto", **on) is not None) is expected  # type: ignore[arg-type]
    # A hub id is named by the hub unless it is read offline from the local cache.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert open_cached("sm3455/bert-mlm-ft", device="cpu", **on) is None  # type: ignore[arg-type]
    # An edited tokenizer is not vouched for: refused, then written again by the next transformers start.
    (folder,) = (p for p in cache.iterdir() if p.name != "pass-costs")
    tokenizer = folder / onnx_cache.TOKENIZER_FILE
    genuine = tokenizer.read_text()
    tokenizer.write_text(genuine.replace('"[UNK]"', '"[UNKNOWN]"'))
    assert cached(checkpoint_pos_neg, cache) is None
    SentimentClassifier(str(checkpoint_pos_neg), device="cpu", engine="onnx", onnx_cache_dir=cache)
    assert tokenizer.read_text() == genuine and cached(checkpoint_pos_neg, cache) is not None


def test_session_threads_follow_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("3", 3), ("", 0), ("many", 0), ("-2", 0)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert onnx_cache.session_threads() == expected
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert onnx_cache.session_threads() == 0  # ONNX Runtime's own choice: a thread per physical core

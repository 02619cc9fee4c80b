"""The classifier on tiny real checkpoints, loaded by path through `from_pretrained`."""

from pathlib import Path

import pytest
import torch

from worker.contracts.values import ClassificationFailure, Prediction
from worker.model.classifier import SentimentClassifier
from worker.model.loading import ModelLoadError

TEXTS = [
    "the product is great and i love it",
    "awful experience",
    "it is okay, nothing special, works fine i guess " * 30,  # far beyond the 64-token limit
    "checkout was quick",
    "terrible service, the app crashes all the time",
]


@pytest.fixture(params=["pos_neg", "label_n"])
def checkpoint(request: pytest.FixtureRequest, checkpoint_pos_neg: Path, checkpoint_label_n: Path) -> Path:
    return checkpoint_pos_neg if request.param == "pos_neg" else checkpoint_label_n


def test_loads_both_label_conventions(checkpoint: Path) -> None:
    classifier = SentimentClassifier(str(checkpoint), device="cpu")
    assert sorted(classifier.labels.values()) == ["negative", "positive"]
    assert classifier.max_length == 64
    assert classifier.describe()["dtype"] == "float32"
    predictions = classifier.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    for p in predictions:
        assert isinstance(p, Prediction)
        assert p.label in ("positive", "negative") and 0.5 <= p.score <= 1.0
        assert p.negative_prob == pytest.approx(p.score if p.label == "negative" else 1 - p.score, abs=1e-6)


def test_batched_results_match_one_by_one_in_the_callers_order(checkpoint_pos_neg: Path) -> None:
    batched = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", max_batch_size=2, max_batch_tokens=128)
    inference = batched.classify(batched.encode(TEXTS))
    together = inference.answers
    assert inference.stats.forward_passes >= 3 and inference.stats.texts == len(TEXTS)
    alone = [batched.predict([t])[0] for t in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert isinstance(a, Prediction) and isinstance(b, Prediction)
        assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-5)


def test_both_conventions_give_the_same_answers_for_the_same_weights(
    checkpoint_pos_neg: Path, checkpoint_label_n: Path
) -> None:
    a = SentimentClassifier(str(checkpoint_pos_neg), device="cpu").predict(TEXTS)
    b = SentimentClassifier(str(checkpoint_label_n), device="cpu").predict(TEXTS)
    assert [p.label for p in a] == [p.label for p in b]  # type: ignore[union-attr]
    # Each classifier cuts its passes by a cost model timed at load, so on a busy machine the two may pad
    # a text to different lengths, which moves a score in its fifth decimal.
    assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-4)  # type: ignore[union-attr]


def test_label_map_override_swaps_labels(checkpoint_label_n: Path) -> None:
    normal = SentimentClassifier(str(checkpoint_label_n), device="cpu").predict(TEXTS[:2])
    swapped = SentimentClassifier(
        str(checkpoint_label_n), device="cpu", label_map={"LABEL_0": "positive", "LABEL_1": "negative"}
    ).predict(TEXTS[:2])
    for n, s in zip(normal, swapped, strict=True):
        assert isinstance(n, Prediction) and isinstance(s, Prediction)
        assert n.label != s.label and n.score == pytest.approx(s.score)


def test_out_of_memory_splits_the_batch_and_fails_only_the_culprit(
    checkpoint_pos_neg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = SentimentClassifier(str(checkpoint_pos_neg), device="cpu")
    expected = classifier.predict(TEXTS)
    real_forward = classifier._forward
    poison_length = 64  # only the over-long text reaches the model limit

    def forward(tensors):  # type: ignore[no-untyped-def]
        if int(tensors["attention_mask"].sum(dim=1).max()) == poison_length:
            raise torch.OutOfMemoryError("simulated")
        return real_forward(tensors)

    monkeypatch.setattr(classifier, "_forward", forward)
    classifier.oom_waits_s = (0.0, 0.0)
    results = classifier.predict(TEXTS)
    assert isinstance(results[2], ClassificationFailure) and "out of memory" in results[2].message
    for i in (0, 1, 3, 4):
        got, want = results[i], expected[i]
        assert isinstance(got, Prediction) and isinstance(want, Prediction)
        assert got.label == want.label and got.score == pytest.approx(want.score, abs=1e-5)


def test_a_text_out_of_memory_for_a_moment_is_tried_again_not_dead_lettered(
    checkpoint_pos_neg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sibling process's spike takes the memory for a moment: the lone text waits and is classified."""
    classifier = SentimentClassifier(str(checkpoint_pos_neg), device="cpu")
    classifier.oom_waits_s = (0.0, 0.0, 0.0)
    real_forward, failures = classifier._forward, [3]

    def forward(tensors):  # type: ignore[no-untyped-def]
        if failures[0]:
            failures[0] -= 1
            raise torch.OutOfMemoryError("simulated spike")
        return real_forward(tensors)

    monkeypatch.setattr(classifier, "_forward", forward)
    [answer] = classifier.predict(TEXTS[:1])
    assert isinstance(answer, Prediction)


def test_a_non_finite_logit_is_a_failure_not_a_positive(
    checkpoint_pos_neg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = SentimentClassifier(str(checkpoint_pos_neg), device="cpu")
    real_forward = classifier._forward

    def forward(tensors):  # type: ignore[no-untyped-def]
        logits = real_forward(tensors).clone()
        logits[0, 0] = float("nan")  # fp16 overflow on some GPUs
        return logits

    monkeypatch.setattr(classifier, "_forward", forward)
    answers = classifier.predict(TEXTS[:1])
    assert isinstance(answers[0], ClassificationFailure) and "non-finite" in answers[0].message


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load model"):
        SentimentClassifier(str(tmp_path / "nope"), device="cpu")


def test_cuda_requested_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        SentimentClassifier("unused", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_half_precision_matches_cpu(checkpoint_pos_neg: Path) -> None:
    cpu = SentimentClassifier(str(checkpoint_pos_neg), device="cpu").predict(TEXTS)
    gpu_classifier = SentimentClassifier(str(checkpoint_pos_neg), device="cuda")
    assert gpu_classifier.dtype in (torch.bfloat16, torch.float16)
    gpu = gpu_classifier.predict(TEXTS)
    for c, g in zip(cpu, gpu, strict=True):
        assert isinstance(c, Prediction) and isinstance(g, Prediction)
        assert g.score == pytest.approx(c.score, abs=0.02)


@pytest.mark.shared
def test_real_model_labels_obvious_texts(real_model: Path) -> None:
    classifier = SentimentClassifier(str(real_model), device="cpu")
    texts = [
        "This movie was wonderful, the acting was superb and I loved every minute of it.",
        "A brilliant, moving film. Highly recommended.",
        "Terrible film. Boring, badly acted and far too long. A complete waste of time.",
        "The worst movie I have ever seen, awful script and dreadful acting.",
    ]
    labels = [p.label for p in classifier.predict(texts)]  # type: ignore[union-attr]
    assert labels == ["positive", "positive", "negative", "negative"]


def test_an_uncached_hub_model_offline_fails_in_seconds_naming_model_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the check, transformers retries the hub for about 50 s before its own error."""
    import time

    import huggingface_hub.constants

    from worker.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.monotonic()
    assert main(["demo", "--model", "some-org/never-downloaded"]) == 2
    assert time.monotonic() - started < 10
    # The demo's progress line and the loader's log line come first; the error is one line, no traceback.
    lines = capsys.readouterr().err.strip().splitlines()
    error = [line for line in lines if line.startswith("triage-worker:")]
    assert len(error) == 1 and error == lines[-1:] and "Traceback" not in "\n".join(lines)
    assert "cannot be reached" in error[0] and "--model DIR" in error[0]


def test_a_missing_model_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such model directory"):
        SentimentClassifier(str(tmp_path / "nope"), device="cpu")


def test_the_direct_tokenizer_path_gives_the_ids_of_transformers_call(checkpoint_pos_neg: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_pos_neg)
    encoder = plain_encoder(tokenizer, max_length=16, truncation="head")
    assert encoder._backend is not None  # the fast path is the one under test
    texts = [*TEXTS, "", "x", " ".join(TEXTS * 4), "ünïcödé and emoji 🎉 and\ttabs\nnewlines"]
    expected = tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    assert encoder.token_ids(texts) == expected
    assert max(map(len, expected)) == 16  # truncation happened and matched


@pytest.mark.shared
def test_the_direct_tokenizer_path_matches_on_the_real_model(real_model: Path) -> None:
    import csv
    import gzip

    from transformers import AutoTokenizer

    with gzip.open(real_model.parents[1] / "datasets" / "imdb" / "imdb_train.csv.gz", "rt", encoding="utf-8") as f:
        texts = [row["text"] for _, row in zip(range(300), csv.DictReader(f), strict=False)]
    tokenizer = AutoTokenizer.from_pretrained(real_model)
    encoder = plain_encoder(tokenizer, max_length=512, truncation="head")
    assert encoder.token_ids(texts) == tokenizer(texts, truncation=True, max_length=512)["input_ids"]


@pytest.mark.parametrize("fast", [True, False])
def test_head_tail_keeps_the_start_and_the_end_of_long_texts(checkpoint_pos_neg: Path, fast: bool) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_pos_neg)
    encoder = plain_encoder(tokenizer, max_length=64, truncation="head_tail")
    if not fast:  # the path for tokenizers without a Rust backend: through transformers' call
        encoder._backend = None
    long_text = "the movie was boring " * 40 + "excellent acting and a beautiful story"
    texts = ["awful experience", long_text]
    full = tokenizer(texts)["input_ids"]
    head, tail = 62 * 128 // 510, 62 - 62 * 128 // 510  # [CLS] + 15 + 47 + [SEP] = 64
    ids = encoder.token_ids(texts)
    assert ids[0] == full[0]  # short texts are untouched
    assert ids[1] == full[1][: 1 + head] + full[1][-(tail + 1) :] and len(ids[1]) == 64
    assert tokenizer.decode(ids[1]).endswith("excellent acting and a beautiful story [SEP]")
    head_classifier = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", truncation="head")
    head_only = head_classifier.encoder.token_ids(texts)[1]
    assert head_only == full[1][:63] + full[1][-1:]  # `head` keeps the start and the closing [SEP]
    assert "excellent" not in tokenizer.decode(head_only)


def test_calibration_divides_the_margin_and_keeps_the_labels(checkpoint_pos_neg: Path) -> None:
    from worker.model.calibration import Calibration, sigmoid

    plain = SentimentClassifier(str(checkpoint_pos_neg), device="cpu")
    calibration = Calibration(temperature=2.5, id="abc123")
    calibrated = SentimentClassifier(str(checkpoint_pos_neg), device="cpu", calibration=calibration)
    assert calibrated.describe()["calibration"] == "abc123" and plain.describe()["calibration"] == "none"
    for p, c in zip(plain.predict(TEXTS), calibrated.predict(TEXTS), strict=True):
        assert isinstance(p, Prediction) and isinstance(c, Prediction)
        assert c.label == p.label and c.margin == pytest.approx(p.margin, abs=1e-5)
        assert p.negative_prob == pytest.approx(sigmoid(p.margin)) and c.negative_prob == pytest.approx(
            sigmoid(p.margin / 2.5)
        )
        assert abs(c.negative_prob - 0.5) <= abs(p.negative_prob - 0.5)  # T > 1 only softens


def plain_encoder(tokenizer, *, max_length: int, truncation: str):  # type: ignore[no-untyped-def]
    """An Encoder on the CPU with no length bucketing, so only tokenizing and truncation differ."""
    from worker.model.encoding import Encoder

    return Encoder(
        tokenizer,
        max_length=max_length,
        max_batch_size=64,
        max_batch_tokens=2048,
        cost=None,
        pad_multiple=None,
        pin_memory=False,
        truncation=truncation,  # type: ignore[arg-type]
    )

"""Small BERT sequence-classification checkpoints for tests, built on disk with a real tokenizer.

A WordPiece vocabulary is built deterministically from a fixed corpus (special tokens, every
character, its `##` continuation, every whole word) and served by the Rust `tokenizers` backend
(BertTokenizerFast); the model is a 2-layer BERT with seeded random weights, initialised wide
enough that its answers depend on the text, with the classifier head centred and scaled on the
corpus so that labels are mixed and scores spread (some under the 0.60 threshold),
and both are saved with `save_pretrained`, so the worker loads them through the same
`from_pretrained` path as a Hugging Face model id.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

CORPUS = [
    "the product is great and i love it",
    "terrible service, the app crashes all the time",
    "checkout was quick and painless, thank you",
    "i was charged twice and nobody answers my emails",
    "wonderful support team, they solved my problem",
    "awful experience, the page froze and i lost my order",
    "it is okay, nothing special, works fine i guess",
    "the movie was boring and far too long",
    "excellent acting and a beautiful story",
    "shipping costs appear at the last step, that feels dishonest",
]

# The two label conventions of the model cards.
BERT_FINETUNED_IMDB = {0: "NEGATIVE", 1: "POSITIVE"}  # Anant1213/bert-finetuned-imdb
BERT_MLM_FT = {0: "LABEL_0", 1: "LABEL_1"}  # sm3455/bert-mlm-ft: LABEL_0=negative, LABEL_1=positive


def vocabulary() -> list[str]:
    words = sorted({w for line in CORPUS for w in re.findall(r"\w+|[^\w\s]", line)})
    chars = sorted({c for line in CORPUS for c in line if not c.isspace()} | set(string.ascii_lowercase))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]


def build_checkpoint(
    path: Path,
    id2label: dict[int, str],
    *,
    max_positions: int = 64,
    seed: int = 0,
    trainable: bool = False,
) -> Path:
    """By default the weights are wide (initializer range 0.5) and the head spread, so untrained
    answers depend on the text; `trainable` keeps BERT's own initialisation (0.02), which trains."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    wordpiece = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=True)
    tokenizer = BertTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        model_max_length=max_positions,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        initializer_range=0.02 if trainable else 0.5,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    if not trainable:
        _calibrate_head(model, tokenizer)
    model.save_pretrained(path)
    return path


def _calibrate_head(model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Centre the two-class logit difference on the corpus at 0 with a standard deviation of 2."""
    import torch

    texts = CORPUS + [" ".join(line.split()[::-1]) for line in CORPUS]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        diff = logits[:, 1] - logits[:, 0]
        scale = 2.0 / diff.std().clamp_min(1e-6)
        model.classifier.weight.mul_(scale)
        model.classifier.bias.mul_(scale)
        model.classifier.bias[1] -= diff.mean() * scale


def with_category_head(checkpoint: Path, target: Path, names: list[str]) -> Path:
    """A copy of `checkpoint` at `target` with an untrained category head over `names` (+ general), its
    weights spread wide so the answers differ from text to text; saved the way `finetune` saves one."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from worker.model import category_head

    shutil.copytree(checkpoint, target)
    two = category_head.new_head(AutoModelForSequenceClassification.from_pretrained(target), names, seed=3)
    with torch.no_grad():
        two.head.weight.mul_(50)
    category_head.save(two, category_head.card_of(two, names), target)
    return target

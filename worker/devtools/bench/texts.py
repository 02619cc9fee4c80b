"""Texts for the benchmarks: synthetic reviews with IMDB's length distribution, short synthetic feedback
(tweets, survey answers, ticket lines), or a file of real ones; and a randomly initialised BERT-base
that stands in for the model cards' models.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import random
from pathlib import Path
from typing import Any

# Review vocabulary for synthetic texts: common words plus clearly positive and negative ones.
WORDS = (
    "the a and of to is in it that this was for with as on but movie film story acting plot characters "
    "scene scenes director time really just good great bad best worst love loved hate boring wonderful "
    "awful excellent terrible brilliant poor beautiful stupid funny fun dull amazing waste fantastic "
    "script performance cast ending music camera watch watched again never ever would could should one "
    "two first last long short slow fast very too much more most little well even though however because "
    "character end years people think seen see made make back still over only also some any"
).split()

# Lengths in BERT tokens: log-normal fitted to IMDB (median 184 tokens, sigma 0.8: mean about 230
# after truncation at 512, and about 10% of reviews longer than 512).
LENGTH_MEDIAN_TOKENS = 184
LENGTH_SIGMA = 0.8
TOKENS_PER_WORD = 1.12


# Short feedback: tweets, survey answers and ticket lines run 10-60 word pieces (median 24 here).
FEEDBACK_WORDS = (
    "the a and my to is it was for with on but not i we you your order delivery support app service "
    "refund account help staff team wait waited hours days again still never always great good bad slow "
    "fast rude friendly helpful useless broken fixed late quick thanks thank love hate awful excellent "
    "terrible disappointed happy price charged twice cancel cancelled package arrived damaged missing "
    "update login error crash works worked easy hard ticket reply answer call chat email please why"
).split()
SHORT_MEDIAN_TOKENS = 24
SHORT_SIGMA = 0.45
SHORT_RANGE_TOKENS = (8, 64)


def synthetic_reviews(n: int, seed: int = 0) -> list[str]:
    """`n` reviews with IMDB's length distribution, built from WORDS (deterministic for a seed)."""
    rng = random.Random(seed)
    return [_sentences(rng, WORDS, rng.lognormvariate(math.log(LENGTH_MEDIAN_TOKENS), LENGTH_SIGMA)) for _ in range(n)]


def synthetic_feedback(n: int, seed: int = 0) -> list[str]:
    """`n` short feedback texts, 8-64 word pieces (median 24), from FEEDBACK_WORDS (deterministic for a seed)."""
    rng = random.Random(seed)
    low, high = SHORT_RANGE_TOKENS
    lengths = (min(max(rng.lognormvariate(math.log(SHORT_MEDIAN_TOKENS), SHORT_SIGMA), low), high) for _ in range(n))
    return [_sentences(rng, FEEDBACK_WORDS, tokens) for tokens in lengths]


def _sentences(rng: random.Random, vocabulary: list[str], tokens: float) -> str:
    """Sentences of 8-20 words drawn from `vocabulary`, about `tokens` word pieces in all."""
    words = max(int(tokens / TOKENS_PER_WORD), 3)
    sentences: list[str] = []
    current: list[str] = []
    for _ in range(words):
        current.append(rng.choice(vocabulary))
        if len(current) >= rng.randint(8, 20):
            sentences.append(" ".join(current).capitalize() + ".")
            current = []
    if current:
        sentences.append(" ".join(current).capitalize() + ".")
    return " ".join(sentences)


def load_texts(path: Path, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        if ".csv" in path.suffixes:
            rows = (row["text"] for row in csv.DictReader(handle))
        elif ".jsonl" in path.suffixes:
            rows = (json.loads(line)["text"] for line in handle if line.strip())
        else:
            rows = (line.rstrip("\n") for line in handle if line.strip())
        texts = []
        for text in rows:
            texts.append(text)
            if len(texts) >= limit:
                break
    return texts


# The random model's answers: a margin spread this wide (in logits) leaves few scores under 0.60,
# and its median at 0 makes half the texts negative, so about half are escalated, like busy real
# traffic rather than the all-escalated load that random weights alone give (every score near 0.5).
HEAD_MARGIN_STD = 4.0
TINY: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def random_bert_base(tokenizer_dir: str, target: Path, *, tiny: bool = False, texts: list[str] | None = None) -> str:
    """A randomly initialised BERT-base (`BertConfig()` defaults; `tiny`: 2 layers of 32) with a real
    tokenizer, saved to `target`.

    Throughput does not depend on the weights, so this stands in for the model cards' BERT-base
    models. Given `texts`, its classification head is set, from a seed, so that about half of them
    are escalated (see HEAD_MARGIN_STD); otherwise nearly every score is near 0.5.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1),  # every id the tokenizer gives
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        **(TINY if tiny else {}),
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    if texts:
        _half_escalating_head(model, tokenizer, texts[:128])
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


def _half_escalating_head(model: object, tokenizer: object, texts: list[str]) -> None:
    """Point the head along a seeded random direction of the pooled output, scaled so the margin's
    spread is HEAD_MARGIN_STD, and centred so the median text is on the boundary."""
    import torch

    generator = torch.Generator().manual_seed(1)
    length = min(getattr(tokenizer, "model_max_length", 512), 512)  # as the classifier will cut them
    inputs = tokenizer(texts, truncation=True, max_length=length, padding=True, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        pooled = model.bert(**inputs).pooler_output  # type: ignore[attr-defined]
        direction = torch.randn(pooled.shape[1], generator=generator)
        projected = pooled @ direction
        scale = HEAD_MARGIN_STD / float(projected.std().clamp_min(1e-6))
        centre = float(projected.median()) * scale
        head = model.classifier  # type: ignore[attr-defined]
        head.weight.copy_(torch.stack([direction * scale / 2, -direction * scale / 2]))  # margin = neg - pos
        head.bias.copy_(torch.tensor([-centre / 2, centre / 2]))

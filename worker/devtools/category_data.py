"""Category data: a tagged set built from the shared customer reviews, for developing and measuring categories.

    python -m worker.devtools.category_data --out DIR [--tags-per-category 64] [--seed 0]

No labelled support-ticket set with categories can be shipped here, so one is built: the clothing
and Yelp reviews of ../shared/datasets/customer-reviews (1-2 stars negative, 4-5 positive, 3 left
out), each tagged by keywords with one of eight categories a store or a restaurant would route to a
team, or `general` ("can't tell") when no category's keywords, or two categories' equally, are
found. Keyword tags are cleaner than a reviewer's, so the figures measured on them are better than a
desk would see: read them as what the machinery reaches, not as a promise.

It writes `categories.yaml` (the category file), `train.jsonl` and `test.jsonl` (a quarter, kept
apart: nothing is trained or calibrated on it). With `--tags-per-category N`, the training file
keeps the tags of only N examples of each category (and N of `general`); the others stay labelled
but untagged, as when reviewers have tagged little yet.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

from worker.contracts.categories import GENERAL

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "customer-reviews"
KEYWORDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (description, route, keywords)
    "fit_and_size": (
        "Sizing and fit: runs small or large, too tight, too long",
        "support.sizing",
        ("size", "sizing", "sized", "fit", "fits", "fitted", "tight", "loose", "petite", "runs small", "runs large",
         "too big", "too small", "too long", "too short", "baggy", "snug"),
    ),
    "fabric_quality": (
        "The material and how it is made: thin, cheap, itchy, falling apart",
        "support.quality",
        ("fabric", "material", "thin", "cheap", "quality", "pilling", "seam", "seams", "itchy", "scratchy",
         "see-through", "sheer", "tore", "ripped", "hole", "unraveled", "shrunk"),
    ),
    "colour_and_look": (
        "Colour and look: not as pictured, faded, an odd shade",
        "support.catalogue",
        ("color", "colour", "colors", "faded", "shade", "pictured", "picture", "photo", "looks different"),
    ),
    "staff_conduct": (
        "How staff treated the customer: rude, ignored, unprofessional",
        "support.staff",
        ("rude", "waiter", "waitress", "server", "staff", "manager", "attitude", "unprofessional", "ignored",
         "hostess", "bartender"),
    ),
    "wait_time": (
        "Waiting: slow service, long queues, late orders",
        "support.operations",
        ("wait", "waited", "waiting", "slow", "forever", "minutes", "took an hour", "line", "queue", "late"),
    ),
    "food_quality": (
        "The food itself: cold, bland, undercooked, stale",
        "support.kitchen",
        ("bland", "cold", "overcooked", "undercooked", "stale", "taste", "tasted", "flavor", "flavour", "greasy",
         "raw", "soggy", "burnt", "salty"),
    ),
    "price_value": (
        "Price and value for money: overpriced, not worth it, charged wrongly",
        "support.billing",
        ("price", "prices", "expensive", "overpriced", "pricey", "money", "worth", "cost", "charged", "refund"),
    ),
    "cleanliness": (
        "Cleanliness: dirty tables, bathrooms, smells",
        "support.facilities",
        ("dirty", "filthy", "smell", "smelled", "bathroom", "restroom", "sticky", "gross", "cockroach", "flies"),
    ),
}  # fmt: skip
PATTERNS = {
    name: re.compile(r"\b(" + "|".join(re.escape(k) for k in words) + r")\b", re.IGNORECASE)
    for name, (_, _, words) in KEYWORDS.items()
}


def tag(text: str) -> str:
    """The category whose keywords the text names most, or `general` when none does or two tie."""
    counts = Counter({name: len(pattern.findall(text)) for name, pattern in PATTERNS.items()})
    (first, n), (_, m) = counts.most_common(2)
    return first if n > 0 and n > m else GENERAL


def reviews(folder: Path) -> list[dict[str, str]]:
    rows = []
    for name in ("clothing_reviews.csv.gz", "yelp_reviews.csv.gz"):
        with gzip.open(folder / name, "rt", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                stars = int(row["rating"])
                if stars != 3:
                    rows.append({"text": row["text"], "label": "negative" if stars <= 2 else "positive"})
    return rows


def category_file() -> str:
    lines = ["routing: topic", "categories:"]
    for name, (description, route, _) in KEYWORDS.items():
        lines += [f"  - name: {name}", f"    description: {json.dumps(description)}", f"    route: {route}"]
    return "\n".join(lines) + "\n"


def build(out: Path, *, tags_per_category: int | None, seed: int, folder: Path = SHARED) -> dict[str, object]:
    rng = random.Random(seed)
    rows = [{**r, "category": tag(r["text"])} for r in reviews(folder)]
    negatives = [r for r in rows if r["label"] == "negative"]
    positives = [r for r in rows if r["label"] == "positive"]
    rng.shuffle(positives)
    chosen = negatives + positives[: len(negatives)]  # a support queue leans negative; the reviews do not
    rng.shuffle(chosen)
    cut = len(chosen) // 4
    test, train = chosen[:cut], chosen[cut:]
    if tags_per_category is not None:
        kept: Counter[str] = Counter()
        for row in train:
            kept[row["category"]] += 1
            if kept[row["category"]] > tags_per_category:
                del row["category"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "categories.yaml").write_text(category_file(), encoding="utf-8")
    for name, part in (("train", train), ("test", test)):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "train": len(train),
        "test": len(test),
        "train_tags": dict(Counter(r.get("category", "untagged") for r in train)),
        "test_tags": dict(Counter(r["category"] for r in test)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tags-per-category", type=int, help="keep only this many tags per category in train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the customer-reviews folder")
    args = parser.parse_args()
    print(json.dumps(build(args.out, tags_per_category=args.tags_per_category, seed=args.seed, folder=args.shared)))


if __name__ == "__main__":
    main()

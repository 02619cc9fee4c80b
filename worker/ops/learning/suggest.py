"""Suggest: categories nobody defined yet, found in what stays in `general` (`triage-worker categories suggest`).

BERTopic's recipe, on the served model's own encoder: the stored texts of the window that stayed in
`general` or were routed with a low category score (or, before any category exists, every
escalation) are embedded with the features the sentiment head reads, clustered (k-means on the
unit-length vectors, scikit-learn), and each cluster is described by its keywords under class-based
tf-idf (a word's frequency in the cluster, weighted by how rare it is across the clusters) and the
texts nearest its centre. Each is printed with a stanza ready to name and paste into the category
file. scikit-learn is the optional `suggest` extra.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, text

from worker.contracts.errors import OperatorError

EXAMPLE_CHARS = 160
KEYWORDS = 6
LEFT_IN_GENERAL = """
    select text from feedback_results
    where processed_at >= :start and text is not null and escalated
      and (category is null or category = 'general' or category_score < :low)
    order by processed_at desc
    limit :limit
"""


@dataclass(frozen=True)
class Cluster:
    size: int
    keywords: list[str]
    examples: list[str]

    def stanza(self) -> str:
        name = re.sub(r"[^a-z0-9]+", "_", "_".join(self.keywords[:2]).lower()).strip("_")[:40] or "unnamed"
        return (
            f"  - name: {name}  # {self.size} items: {', '.join(self.keywords)}\n"
            f"    description: ''\n    route: ''\n    examples: []"
        )


def texts_left_in_general(engine: Engine, since: timedelta, low_score: float, limit: int) -> list[str]:
    start = datetime.now(timezone.utc) - since
    with engine.connect() as connection:
        rows = connection.execute(text(LEFT_IN_GENERAL), {"start": start, "low": low_score, "limit": limit})
        return [row.text for row in rows]


def suggest(vectors: Sequence[Sequence[float]], texts: Sequence[str], clusters: int, seed: int = 0) -> list[Cluster]:
    """Cluster `vectors` (one per text) into `clusters` groups, largest first, each with keywords and examples."""
    try:
        import numpy as np
        from sklearn.cluster import KMeans
        from sklearn.feature_extraction.text import CountVectorizer
    except ImportError:
        raise OperatorError(
            "categories suggest needs scikit-learn: pip install 'feedback-triage-worker[suggest]'"
        ) from None
    if len(texts) < clusters * 5:
        raise OperatorError(
            f"{len(texts)} texts are too few for {clusters} clusters (5 a cluster at least): widen --since "
            "or ask for fewer --clusters"
        )
    matrix = np.asarray(vectors, dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)
    model = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(matrix)
    labels = model.labels_
    documents = [" ".join(t for t, label in zip(texts, labels, strict=True) if label == k) for k in range(clusters)]
    counter = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", min_df=1)
    counts = counter.fit_transform(documents).toarray().astype(np.float64)
    words = counter.get_feature_names_out()
    keywords = class_tfidf_keywords(counts, list(words))
    found = []
    for k in range(clusters):
        members = np.flatnonzero(labels == k)
        nearest = members[np.argsort(((matrix[members] - model.cluster_centers_[k]) ** 2).sum(axis=1))[:3]]
        examples = [_short(texts[i]) for i in nearest]
        found.append(Cluster(int(len(members)), keywords[k], examples))
    return sorted(found, key=lambda c: -c.size)


def class_tfidf_keywords(counts: Any, words: list[str], top: int = KEYWORDS) -> list[list[str]]:
    """c-TF-IDF: per class, tf = count / words in the class; idf = log(1 + mean words per class / count
    of the word over all classes). The `top` words of each class by tf x idf."""
    per_class = counts.sum(axis=1, keepdims=True).clip(min=1)
    tf = counts / per_class
    mean_words = counts.sum() / counts.shape[0]
    idf = [math.log(1 + mean_words / max(total, 1)) for total in counts.sum(axis=0)]
    scores = tf * idf
    return [[words[i] for i in row.argsort()[::-1][:top] if scores[k, i] > 0] for k, row in enumerate(scores)]


def render(found: list[Cluster], considered: int, window: str) -> str:
    lines = [
        f"{considered:,} escalations left in `general` or routed with a low score {window}, in {len(found)} clusters"
    ]
    for number, cluster in enumerate(found, start=1):
        lines += ["", f"cluster {number}: {cluster.size:,} items; keywords: {', '.join(cluster.keywords)}"]
        lines += [f"  - {example}" for example in cluster.examples]
    lines += ["", "to add one, name it and paste under `categories:` in the category file:"]
    lines += [cluster.stanza() for cluster in found]
    return "\n".join(lines)


def _short(value: str) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 3] + "..."

"""Adapt: collect unlabelled in-domain texts and run masked-LM training on them (`triage-worker adapt`).

The texts come from a file (JSON lines or CSV/TSV with a text column, as `evaluate` reads, labels
not needed) or from the stored feedback (`--from-database --since 90d`; rows stored without text
are skipped). Duplicates are dropped, a tenth (at most 2,000) is held out to measure the
masked-LM loss before and after, and the rest trains. The checkpoint goes to `--out`, with a card.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, select

from worker.contracts.errors import OperatorError
from worker.contracts.tables import feedback_results
from worker.model.training.adapt import Adapted, adapt
from worker.model.training.loop import Recipe
from worker.ops.learning.finetune import CARD_FILE, check_out
from worker.ops.progress import StepBar
from worker.settings import Settings

HELD_OUT_SHARE, HELD_OUT_MAX, MIN_TEXTS = 0.1, 2_000, 40
DEFAULT_EPOCHS = 1
DEFAULT_LEARNING_RATE = 5e-5
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class AdaptOutcome:
    adapted: Adapted
    training_texts: int
    held_out_texts: int
    out: Path


def texts_from_database(engine: Engine, since: timedelta | None) -> list[str]:
    c = feedback_results.c
    query = select(c.text).where(c.text.is_not(None)).order_by(c.processed_at)
    if since is not None:
        query = query.where(c.processed_at >= datetime.now(timezone.utc) - since)
    with engine.connect() as connection:
        return [row.text for row in connection.execution_options(stream_results=True, yield_per=2000).execute(query)]


def run(
    settings: Settings,
    *,
    texts: Sequence[str],
    source: str,
    base: str,
    out: Path,
    recipe: Recipe,
    show_progress: bool = True,
) -> AdaptOutcome:
    from worker.model.loading import resolve_device

    check_out(out)
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(unique) < MIN_TEXTS:
        raise OperatorError(f"{source} holds {len(unique)} distinct texts; adapting needs at least {MIN_TEXTS}")
    random.Random(recipe.seed).shuffle(unique)
    cut = min(HELD_OUT_MAX, max(MIN_TEXTS // 2, round(len(unique) * HELD_OUT_SHARE)))
    held, training = unique[:cut], unique[cut:]
    bar = StepBar() if show_progress else None
    device = resolve_device(settings.device)
    adapted = adapt(
        base,
        training,
        held,
        recipe=recipe,
        truncation=settings.truncation,
        device=device,
        revision=settings.model_revision,
        on_step=bar,
    )
    if bar is not None:
        bar.close()
    adapted.save(out)
    card = {
        "adapted_from": base,
        "texts": {"source": source, "training": len(training), "held_out": len(held)},
        "recipe": {**asdict(recipe), "truncation": settings.truncation},
        "masked_lm_loss": {"before": round(adapted.loss_before, 4), "after": round(adapted.loss_after, 4)},
        "training": {"steps": adapted.log.steps, "seconds": round(adapted.log.seconds, 1), "device": str(device)},
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return AdaptOutcome(adapted, len(training), len(held), out)


def render(outcome: AdaptOutcome) -> str:
    a = outcome.adapted
    return "\n".join(
        [
            f"trained on {outcome.training_texts:,} texts, {a.log.steps:,} steps in {a.log.seconds:.0f} s"
            + (", stopped early" if a.log.stopped_early else ""),
            f"masked-LM loss on {outcome.held_out_texts:,} held-out texts: {a.loss_before:.4f} before, "
            f"{a.loss_after:.4f} after",
            f"checkpoint written to {outcome.out}; fine-tune it with: triage-worker finetune --model {outcome.out} ...",
        ]
    )

"""Compare: the shadow candidate beside the served model on live traffic (`triage-worker compare`).

Reads `shadow_results` joined to `feedback_results` over a window (`--since 7d`), one comparison
per pair of served and shadow revisions: how often the two agree, how many escalations each made
or would have made, and, on the items reviewers gave a verdict on, each model's accuracy and
negatives caught, with how many items each figure rests on. Verdicts come from places that mean
different things, so they are reported apart:
- the escalation queue: items the served model escalated (so it "caught" every negative there);
- the audit sample of the items not escalated (TRIAGE_AUDIT_SAMPLE_RATE): items the served model let
  through, so it caught none there; the negatives reviewers found are its misses, and this set
  estimates how many it misses, while the shadow's figure says how many of them it would catch;
- with TRIAGE_AUDIT_SCOPE=all, the audit sample of the whole stream (escalated items drawn too): its
  accuracies estimate each model's accuracy on the stream. It is shown only when it differs from the
  set above.
`shadow_comparison_daily` is the same join per day, for dashboards.

With categories, each pair also gets a row per category: how many items each model routed to it,
how often both did, and on the items reviewers tagged with it (`ack --category`), how many each
model routed there: its recall on the reviewed items. Over all the tagged items each model routed
to a team, the share routed to the tag's team is its routed accuracy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, text

from worker.ops.quality.evaluate import percent

REVIEWED_FIELDS = ("items", "negatives", "served_correct", "shadow_correct", "served_caught", "shadow_caught")
REVIEWED_SETS = {
    "escalation queue": "r.escalated",
    "audit: misses": "r.audit_sample and not r.escalated",  # the items it let through: its misses
    "audit: stream": "r.audit_sample",  # with TRIAGE_AUDIT_SCOPE=all, a sample of every item
}


@dataclass(frozen=True)
class Reviewed:
    """Figures of both models on one set of reviewed items."""

    items: int
    negatives: int  # items the reviewers said were negative
    served_correct: int
    shadow_correct: int
    served_caught: int  # reviewed negatives the served model escalated
    shadow_caught: int  # reviewed negatives the shadow would have escalated

    def share(self, count: int, of: int) -> float | None:
        return count / of if of else None


@dataclass(frozen=True)
class Comparison:
    served_model: str
    served_revision: str | None
    shadow_model: str
    shadow_revision: str
    compared: int
    agreed: int
    served_escalated: int
    shadow_escalated: int
    reviewed: dict[str, Reviewed]
    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # per category: see CATEGORY_COUNTS
    routed: dict[str, tuple[int, int]] = field(default_factory=dict)  # per model: (to the tag's team, tagged routed)


CATEGORY_COUNTS = {
    "served_routed": "rc = c.name",
    "shadow_routed": "sc = c.name",
    "agreed": "rc = c.name and sc = c.name",
    "tagged": "tag = c.name",
    "served_right": "tag = c.name and rc = c.name",
    "shadow_right": "tag = c.name and sc = c.name",
}
BY_CATEGORY = f"""
    with pairs as (
        select r.model as served_model, r.model_revision as served_revision, s.model as shadow_model,
               s.model_revision as shadow_revision, r.category as rc, s.category as sc, r.reviewed_category as tag
        from shadow_results s join feedback_results r using (event_id)
        where (r.category is not null or s.category is not null) {{window}}
    )
    select served_model, served_revision, shadow_model, shadow_revision, c.name as category,
           {", ".join(f"count(*) filter (where {rule}) as {name}" for name, rule in CATEGORY_COUNTS.items())}
    from pairs cross join lateral (select distinct unnest(array[rc, sc, tag]) as name) as c
    where c.name is not null
    group by 1, 2, 3, 4, 5
    order by 5
"""


ROUTED_COUNTS = ", ".join(
    f"count(*) filter (where r.reviewed_category is not null and {m}.category <> 'general'{right}) as {who}_{what}"
    for who, m in (("served", "r"), ("shadow", "s"))
    for what, right in (("routed", ""), ("right", f" and {m}.category = r.reviewed_category"))
)


def _filtered(condition: str, name: str) -> str:
    return f"count(*) filter (where r.reviewed_label is not null and {condition}) as {name}"


def comparisons(engine: Engine, since: timedelta | None, now: datetime | None = None) -> list[Comparison]:
    counts = []
    for index, condition in enumerate(REVIEWED_SETS.values()):
        counts += [
            _filtered(condition, f"items_{index}"),
            _filtered(f"{condition} and r.reviewed_label = 'negative'", f"negatives_{index}"),
            _filtered(f"{condition} and r.reviewed_label = r.label", f"served_correct_{index}"),
            _filtered(f"{condition} and r.reviewed_label = s.label", f"shadow_correct_{index}"),
            _filtered(f"{condition} and r.reviewed_label = 'negative' and r.escalated", f"served_caught_{index}"),
            _filtered(f"{condition} and r.reviewed_label = 'negative' and s.escalated", f"shadow_caught_{index}"),
        ]
    window = "where s.processed_at >= :start" if since is not None else ""
    sql = f"""
        select r.model as served_model, r.model_revision as served_revision,
               s.model as shadow_model, s.model_revision as shadow_revision,
               count(*) as compared,
               count(*) filter (where s.label = r.label) as agreed,
               count(*) filter (where r.escalated) as served_escalated,
               count(*) filter (where s.escalated) as shadow_escalated,
               {ROUTED_COUNTS},
               {", ".join(counts)}
        from shadow_results s join feedback_results r using (event_id)
        {window}
        group by 1, 2, 3, 4
        order by count(*) desc
    """
    start = (now or datetime.now(timezone.utc)) - since if since is not None else None
    by_category: dict[tuple[str, str | None, str, str], dict[str, dict[str, int]]] = {}
    with engine.connect() as connection:
        rows = connection.execute(text(sql), {"start": start}).mappings().all()
        query = BY_CATEGORY.format(window="and s.processed_at >= :start" if since is not None else "")
        for row in connection.execute(text(query), {"start": start}).mappings():
            key = (row["served_model"], row["served_revision"], row["shadow_model"], row["shadow_revision"])
            by_category.setdefault(key, {})[row["category"]] = {name: int(row[name]) for name in CATEGORY_COUNTS}
    found = []
    for row in rows:
        reviewed = {
            name: Reviewed(
                **{
                    field: int(row[f"{field}_{index}"])
                    for field in (
                        "items",
                        "negatives",
                        "served_correct",
                        "shadow_correct",
                        "served_caught",
                        "shadow_caught",
                    )
                }
            )
            for index, name in enumerate(REVIEWED_SETS)
        }
        found.append(
            Comparison(
                served_model=row["served_model"],
                served_revision=row["served_revision"],
                shadow_model=row["shadow_model"],
                shadow_revision=row["shadow_revision"],
                compared=int(row["compared"]),
                agreed=int(row["agreed"]),
                served_escalated=int(row["served_escalated"]),
                shadow_escalated=int(row["shadow_escalated"]),
                reviewed=reviewed,
                routed={who: (int(row[f"{who}_right"]), int(row[f"{who}_routed"])) for who in ("served", "shadow")},
                categories=by_category.get(
                    (row["served_model"], row["served_revision"], row["shadow_model"], row["shadow_revision"]), {}
                ),
            )
        )
    return found


def render(found: list[Comparison], window: str) -> str:
    if not found:
        return f"no shadow results {window}: is TRIAGE_SHADOW_MODEL set on the workers?"
    blocks = []
    for c in found:
        lines = [
            f"shadow {c.shadow_model} ({c.shadow_revision}) beside {c.served_model} "
            f"({c.served_revision or 'unknown'}), {c.compared:,} results {window}",
            f"agree on {percent(c.agreed / c.compared)} ({c.compared - c.agreed:,} differ)",
            f"escalated: served {c.served_escalated:,} ({percent(c.served_escalated / c.compared)}), "
            f"shadow would have {c.shadow_escalated:,} ({percent(c.shadow_escalated / c.compared)})",
            "",
            f"{'reviewed items':18}{'items':>7}{'negatives':>11}{'accuracy served':>17}{'shadow':>8}"
            f"{'negatives caught served':>25}{'shadow':>8}",
        ]
        for name, r in c.reviewed.items():
            if name == "audit: stream" and r.items == c.reviewed["audit: misses"].items:
                continue  # the audit drew from the items not escalated only: the same set as above
            accuracy = (percent(r.share(r.served_correct, r.items)), percent(r.share(r.shadow_correct, r.items)))
            caught = (percent(r.share(r.served_caught, r.negatives)), percent(r.share(r.shadow_caught, r.negatives)))
            lines.append(
                f"{name:18}{r.items:>7,}{r.negatives:>11,}{accuracy[0]:>17}{accuracy[1]:>8}{caught[0]:>25}{caught[1]:>8}"
            )
        lines.append(
            "audit: misses = the audit sample of the items not escalated: negatives there are ones the served "
            "model let through"
        )
        lines += _category_lines(c.categories)
        if c.categories:
            for who, (right, routed) in c.routed.items():
                lines.append(
                    f"{who}: routed accuracy {percent(_share(right, routed))} on the {routed:,} tagged items it "
                    "sent to a team"
                )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _category_lines(categories: dict[str, dict[str, int]]) -> list[str]:
    """Per category: routed by each, agreement, and on the items tagged with it, routed there by each."""
    if not categories:
        return []
    lines = [
        "",
        f"{'category':24}{'served routed':>14}{'shadow':>8}{'both':>7}{'tagged':>8}{'tagged, routed there: served':>30}"
        f"{'shadow':>8}",
    ]
    for name, n in categories.items():
        right = (percent(_share(n["served_right"], n["tagged"])), percent(_share(n["shadow_right"], n["tagged"])))
        lines.append(
            f"{name:24}{n['served_routed']:>14,}{n['shadow_routed']:>8,}{n['agreed']:>7,}{n['tagged']:>8,}"
            f"{right[0]:>30}{right[1]:>8}"
        )
    return lines


def _share(count: int, of: int) -> float | None:
    return count / of if of else None


def as_json(found: list[Comparison]) -> str:
    return json.dumps([asdict(c) for c in found], indent=2) + "\n"

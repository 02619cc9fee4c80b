"""Trends: answers for support leads, read from the stored results (`triage-worker report`).

"Is sentiment getting worse, and where?": share negative per product, source or day over a window
(`--since 7d`, read like every duration: 30m, 72h, 3d, 2w), as a terminal table, CSV or JSON, and
with `--plot` a PNG chart of share negative per day for each group (lines) over the daily volume
(bars). Read-only; it reads the hourly rollups (`sentiment_rollup_live`: the folded counts and
those still pending), so its cost follows the number of hours and groups in the window, not the
number of results. The window is whole UTC hours: the hour now running and every full hour after
`now - since`.

`--group-by category` splits by the team each item went to (`general` for the rest; `(none)` for
results from before categories), and adds the time to acknowledge each category's escalations
(`acknowledgement_rollup`, by the hour of the acknowledgement): mean seconds and the share handled
within an hour.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, text

from worker.contracts.errors import OperatorError
from worker.settings import format_duration

Grouping = Literal["product", "source", "day", "category"]
MAX_PLOTTED_GROUPS = 8  # the rest are summed into "other" so the chart stays readable
UNKNOWN = "(none)"


@dataclass(frozen=True)
class TrendRow:
    group: str
    total: int
    negatives: int
    share_negative: float
    escalations: int
    open_escalations: int
    acknowledged: int | None = None  # --group-by category: escalations acknowledged in the window
    mean_ack_s: float | None = None  # ... and how long they took, on average
    share_ack_within_1h: float | None = None


@dataclass(frozen=True)
class DailyPoint:
    day: date
    group: str
    total: int
    negatives: int


def trend_rows(engine: Engine, since: timedelta, by: Grouping, now: datetime | None = None) -> list[TrendRow]:
    """One row per group in the window, worst share negative first (ties: most volume first)."""
    key = {
        "product": "product",
        "source": "source",
        "day": "(hour at time zone 'UTC')::date::text",
        "category": "category",
    }[by]
    order = "1" if by == "day" else "share_negative desc, total desc, 1"
    sql = f"""
        select coalesce({key}, :unknown) as grp, sum(total) as total, sum(negatives) as negatives,
               round(sum(negatives)::numeric / sum(total), 4) as share_negative,
               sum(escalations) as escalations, sum(open_escalations) as open_escalations
        from sentiment_rollup_live
        where hour >= :start
        group by 1
        order by {order}
    """
    start = window_start(since, now)
    with engine.connect() as connection:
        result = connection.execute(text(sql), {"start": start, "unknown": UNKNOWN})
        rows = [
            TrendRow(
                row.grp,
                int(row.total),
                int(row.negatives),
                float(row.share_negative),
                int(row.escalations),
                int(row.open_escalations),
            )
            for row in result
        ]
        if by != "category":
            return rows
        acks = {
            row.grp: row
            for row in connection.execute(text(ACKNOWLEDGED_BY_CATEGORY), {"start": start, "unknown": UNKNOWN})
        }
    return [_with_acks(row, acks.get(row.group)) for row in rows]


ACKNOWLEDGED_BY_CATEGORY = """
    select coalesce(category, :unknown) as grp, sum(handled) as handled,
           sum(seconds_sum) / nullif(sum(handled), 0) as mean_s,
           sum(within_1h)::float8 / nullif(sum(handled), 0) as within_1h
    from acknowledgement_rollup where hour >= :start group by 1
"""


def _with_acks(row: TrendRow, acks: Any) -> TrendRow:
    if acks is None:
        return replace(row, acknowledged=0)
    return replace(
        row,
        acknowledged=int(acks.handled),
        mean_ack_s=None if acks.mean_s is None else round(float(acks.mean_s), 1),
        share_ack_within_1h=None if acks.within_1h is None else round(float(acks.within_1h), 4),
    )


def nothing_in(engine: Engine, since: timedelta, now: datetime | None = None) -> str:
    """What to say when the window holds no feedback: when the newest is, and how far to widen."""
    with engine.connect() as connection:
        newest = connection.execute(text("select max(hour) from sentiment_rollup_live")).scalar_one()
    window = f"no feedback in the last {format_duration(since)}"
    if newest is None:
        return f"{window}: none is stored yet"
    age = (now or datetime.now(timezone.utc)) - newest
    hours = timedelta(hours=max(int(age.total_seconds() // 3600), 1))
    wider = timedelta(days=age.days + 1)
    return (
        f"{window}; the newest is from {newest:%Y-%m-%d %H:00} UTC, {format_duration(hours)} ago: "
        f"try --since {format_duration(wider)}"
    )


def window_start(since: timedelta, now: datetime | None = None) -> datetime:
    """The first whole UTC hour inside the window: the rollups count by the hour."""
    start = (now or datetime.now(timezone.utc)) - since
    hour = start.replace(minute=0, second=0, microsecond=0)
    return hour if hour == start else hour + timedelta(hours=1)


def daily_points(engine: Engine, since: timedelta, by: Grouping, now: datetime | None = None) -> list[DailyPoint]:
    """Per UTC day and group, from the hourly rollups: the series behind the chart."""
    key = {"product": "product", "source": "source", "day": "'all'", "category": "category"}[by]
    sql = f"""
        select (hour at time zone 'UTC')::date as day, coalesce({key}, :unknown) as grp,
               sum(total) as total, sum(negatives) as negatives
        from sentiment_rollup_live where hour >= :start group by 1, 2 order by 1, 2
    """
    with engine.connect() as connection:
        result = connection.execute(text(sql), {"start": window_start(since, now), "unknown": UNKNOWN})
        return [DailyPoint(row.day, row.grp, int(row.total), int(row.negatives)) for row in result]


def render(rows: list[TrendRow], by: Grouping, fmt: Literal["table", "csv", "json"]) -> str:
    if fmt == "json":
        keep = by == "category"  # the acknowledgement columns exist only by category
        return json.dumps(
            [{k: v for k, v in asdict(row).items() if keep or k in BASE_FIELDS} for row in rows], indent=2
        )
    header = [by, "total", "negatives", "share_negative", "escalations", "open_escalations"]
    values: list[list[object]] = [
        [row.group, row.total, row.negatives, f"{row.share_negative:.4f}", row.escalations, row.open_escalations]
        for row in rows
    ]
    if by == "category":
        header += ["acknowledged", "mean_ack_s", "ack_within_1h"]
        for line, row in zip(values, rows, strict=True):
            within = "-" if row.share_ack_within_1h is None else f"{row.share_ack_within_1h:.1%}"
            line += [row.acknowledged, "-" if row.mean_ack_s is None else f"{row.mean_ack_s:,.0f}", within]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(values)
        return out.getvalue().rstrip("\n")
    if not rows:
        return "no feedback in this window"
    cells: list[list[str]] = [list(header), *[[str(v) for v in line] for line in values]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = []
    for n, cell_row in enumerate(cells):
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cell_row, widths, strict=True))]
        lines.append("  ".join(padded))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


BASE_FIELDS = ("group", "total", "negatives", "share_negative", "escalations", "open_escalations")


def plot(points: list[DailyPoint], by: Grouping, since: str, path: Path) -> Path:
    """Share negative per day for each group (lines, left axis) over the daily volume (bars, right).

    matplotlib is an optional extra (`pip install 'feedback-triage-worker[tools]'`); without it
    this raises an OperatorError, which the CLI turns into one line.
    """
    try:
        import matplotlib
    except ImportError:
        raise OperatorError("report --plot needs matplotlib: pip install 'feedback-triage-worker[tools]'") from None

    matplotlib.use("Agg")  # no display needed
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    volume_by_group: dict[str, int] = {}
    for p in points:
        volume_by_group[p.group] = volume_by_group.get(p.group, 0) + p.total
    top = sorted(volume_by_group, key=lambda g: -volume_by_group[g])[:MAX_PLOTTED_GROUPS]
    series: dict[str, dict[date, list[int]]] = {}
    for p in points:
        group = p.group if p.group in top else "other"
        day = series.setdefault(group, {}).setdefault(p.day, [0, 0])
        day[0] += p.total
        day[1] += p.negatives

    fig, share_axis = plt.subplots(figsize=(11, 5.5), dpi=110)
    volume_axis = share_axis.twinx()
    days: list[Any] = sorted({p.day for p in points})  # matplotlib draws dates; its stubs only say numbers
    daily_volume = [sum(p.total for p in points if p.day == d) for d in days]
    volume_axis.bar(days, daily_volume, width=0.8, color="#d0d7e2", label="volume (all groups)", zorder=1)
    volume_axis.set_ylabel("events per day")
    share_axis.set_zorder(volume_axis.get_zorder() + 1)
    share_axis.patch.set_visible(False)
    for group, by_day in sorted(series.items(), key=lambda item: -sum(v[0] for v in item[1].values())):
        xs: list[Any] = sorted(by_day)
        share_axis.plot(xs, [by_day[d][1] / by_day[d][0] for d in xs], marker="o", linewidth=2, label=group)
    share_axis.set_ylim(0, 1)
    share_axis.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    share_axis.set_ylabel("share negative")
    share_axis.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    share_axis.grid(axis="y", alpha=0.3)
    title_by = "all feedback" if by == "day" else f"by {by}"
    share_axis.set_title(f"Share of negative feedback per day, {title_by}, last {since}")
    lines, labels = share_axis.get_legend_handles_labels()
    bars, bar_labels = volume_axis.get_legend_handles_labels()
    share_axis.legend(lines + bars, labels + bar_labels, loc="upper left", fontsize="small", ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

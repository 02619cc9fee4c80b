"""Trend views, `ack`, `report` (table, CSV, JSON, PNG) and worker/docs/trends.md's five queries, on seeded rows."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.services import rows
from worker.cli import main

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "worker" / "docs"
DOCS_TEXT = "".join(doc.read_text() for doc in sorted(DOCS.glob("*.md")))  # the SQL the docs give
QUERY = re.compile(r"```sql\n-- query: ([\w-]+)[^\n]*\n(.*?)```", re.S)

# product -> (model, [(age, label, score)...]); "now" rows fall in this week, "week" rows in the last.
NOW, WEEK = timedelta(minutes=1), timedelta(days=7)
SEED = {
    "app": ("model-a", [(NOW, "negative", 0.9)] * 8 + [(NOW, "positive", 0.9)] * 2
            + [(WEEK, "negative", 0.9)] * 2 + [(WEEK, "positive", 0.9)] * 8),
    "web": ("model-b", [(NOW, "negative", 0.9)] + [(NOW, "positive", 0.55)] * 2 + [(NOW, "positive", 0.9)] * 7
            + [(WEEK, "negative", 0.9)] * 5 + [(WEEK, "positive", 0.9)] * 5),
    "tiny": ("model-a", [(NOW, "negative", 0.95)] * 2),
}  # fmt: skip


@pytest.fixture
def seeded(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    engine = create_engine(database_url)
    n = 0
    with engine.begin() as connection:
        for product, (model, rows) in SEED.items():
            for age, label, score in rows:
                escalated = label == "negative" or score < 0.60
                reason = "negative" if label == "negative" else ("low_confidence" if escalated else None)
                connection.execute(
                    text(
                        "insert into feedback_results (event_id, label, score, negative_prob, escalated, "
                        "escalation_reason, model, source, product, created_at, processed_at, kafka_topic, "
                        "kafka_partition, kafka_offset) values (:id, :label, :score, :neg, :esc, :reason, :model, "
                        ":source, :product, now() - :age, now() - :age + interval '1 second', 't', 0, :n)"
                    ),
                    {
                        "id": f"{product}-{n}", "label": label, "score": score,
                        "neg": score if label == "negative" else 1 - score, "esc": escalated, "reason": reason,
                        "model": model, "source": "zendesk" if n % 2 else "app-store", "product": product,
                        "age": age, "n": n,
                    },
                )  # fmt: skip
                n += 1
    engine.dispose()
    return database_url


def test_rollup_views_and_backlog(seeded: str) -> None:
    weekly = rows(seeded, "select product, sum(total), sum(negatives) from sentiment_weekly group by 1 order by 1")
    assert weekly == [("app", 20, 10), ("tiny", 2, 2), ("web", 20, 6)]
    hourly = rows(seeded, "select sum(total), sum(low_confidence_escalations) from sentiment_hourly")
    assert hourly == [(42, 2)]
    backlog = rows(seeded, "select product, age_bucket, count(*) from escalation_backlog group by 1, 2 order by 1, 2")
    assert backlog == [("app", "over 24h", 2), ("app", "under 1h", 8), ("tiny", "under 1h", 2),
                       ("web", "over 24h", 5), ("web", "under 1h", 3)]  # fmt: skip


def test_ack_marks_escalations_handled_and_reports_bad_ids(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ack", "app-0", "app-1", "app-2", "--by", "alice"]) == 0
    assert "app-0: acknowledged" in capsys.readouterr().out
    assert rows(seeded, "select count(*) from escalation_backlog where product = 'app'") == [(7,)]
    assert rows(seeded, "select distinct acknowledged_by from feedback_results where acknowledged_at is not null") == [
        ("alice",)
    ]
    # Again, plus an id never escalated and one that does not exist: reported, exit 1, nothing else changes.
    assert main(["ack", "app-0", "app-9", "nope"]) == 1
    out, err = capsys.readouterr()
    assert "app-0: already acknowledged" in out
    assert "app-9: not escalated" in err and "nope: unknown event id" in err
    assert rows(seeded, "select count(*) from feedback_results where acknowledged_at is not null") == [(3,)]


def test_report_formats(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--since", "7d", "--group-by", "product", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["group"], r["total"], r["negatives"], r["share_negative"]) for r in report] == [
        ("tiny", 2, 2, 1.0),
        ("app", 10, 8, 0.8),
        ("web", 10, 1, 0.1),
    ]
    assert main(["report", "--since", "30d", "--group-by", "day", "--format", "csv"]) == 0
    days = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(d["total"]) for d in days] == [20, 22] and days[0]["share_negative"] == "0.3500"
    assert main(["report", "--since", "30d", "--group-by", "source"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["source", "total", "negatives", "share_negative", "escalations", "open_escalations"]
    assert {line.split()[0] for line in table[2:]} == {"zendesk", "app-store"}


def test_report_plot_writes_a_png(seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = tmp_path / "trend.png"
    assert main(["report", "--since", "30d", "--group-by", "product", "--plot", str(chart)]) == 0
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_rejects_bad_arguments(seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--since", "seven days"])
    assert exited.value.code == 2 and "expected a duration like 30m, 72h, 3d or 2w" in capsys.readouterr().err
    assert main(["report", "--plot", "chart.jpg"]) == 2
    assert "--plot writes a PNG" in capsys.readouterr().err
    assert main(["report", "--since", "1h", "--plot", str(tmp_path / "x.png")]) in (0, 1)


def test_readme_queries(seeded: str) -> None:
    queries = dict(QUERY.findall(DOCS_TEXT))
    queries.pop("review-agreement")  # run in test_verdicts, on reviewed rows
    assert len(queries) == 5, sorted(queries)
    assert main(["ack", "app-0", "app-1", "app-2"]) == 0

    top = rows(seeded, queries["top-products-this-week"])
    assert [(p, t, float(s)) for p, t, s in top] == [("app", 10, 0.8), ("web", 10, 0.1)]

    change = rows(seeded, queries["week-over-week"])
    assert [(p, float(c)) for p, _, _, c in change] == [("app", 0.6), ("web", -0.4)]

    low = rows(seeded, queries["low-confidence-rate-per-model"])
    assert [(m, t, float(r)) for m, t, r, _ in low] == [("model-b", 10, 0.2), ("model-a", 12, 0.0)]

    backlog = rows(seeded, queries["escalation-backlog-by-age"])
    assert [(b, p, n) for b, p, n, _ in backlog] == [
        ("over 24h", "app", 2),
        ("over 24h", "web", 5),
        ("under 1h", "app", 5),
        ("under 1h", "tiny", 2),
        ("under 1h", "web", 3),
    ]

    handled = rows(seeded, queries["time-to-acknowledge"])
    assert [(p, n, float(w)) for p, n, _, _, w in handled] == [("app", 3, 1.0)]
    assert timedelta(0) < handled[0][2] < timedelta(minutes=5)

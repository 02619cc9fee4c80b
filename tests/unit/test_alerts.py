"""The alert rules (worker/ops/observability/alerts.yml): each expression parses as PromQL (promql-parser,
a parser we did not write) and names only metrics that exist; severities and runbooks follow
kube-prometheus; the PrometheusRule is generated from this one file; and the dashboard has a panel
for every critical alert, on the same metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from worker.devtools import prometheus_rule
from worker.runtime.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = yaml.safe_load((ROOT / "worker/ops/observability/alerts.yml").read_text())
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]
DASHBOARD = json.loads((ROOT / "worker/ops/observability/grafana/dashboards/feedback-triage.json").read_text())
OPERATING = (ROOT / "worker/docs/operating.md").read_text()
RUNBOOKS = "https://github.com/feedback-triage/feedback-triage-worker/blob/main/worker/docs/operating.md#"
# Metrics from outside the worker: Prometheus's own, and a Kafka exporter's count of the group's lag
# (the broker's view, which outlives the workers).
EXTERNAL = {"up", "kafka_consumergroup_lag"}


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects, read from promql-parser's syntax tree."""

    def walk(node: Any) -> set[str]:
        if type(node).__name__ == "VectorSelector":
            return {node.name}
        found: set[str] = set()
        for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if child is not None and not isinstance(child, (str, int, float)):
                found |= walk(child)
        for child in getattr(node, "args", None) or []:
            found |= walk(child)
        return found

    return walk(promql_parser.parse(expr))


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown document."""
    return {
        re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    }


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_each_rule_parses_and_names_only_metrics_that_exist(rule: dict[str, Any]) -> None:
    exported = Metrics().exported_names() | EXTERNAL
    queried = metric_names(rule["expr"])
    assert queried and queried <= exported, sorted(queried - exported)


def test_the_parser_does_refuse_what_is_not_promql() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(triage_events_consumed_total[5m])")
    assert metric_names("sum by (x) (rate(a_total[5m])) / clamp_min(b, 1) and on (i) up == 1") == {
        "a_total", "b", "up"
    }  # fmt: skip


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_each_rule_has_a_kube_prometheus_severity_and_a_runbook_that_exists(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOKS) and url.removeprefix(RUNBOOKS) == rule["alert"].lower()
    assert rule["alert"].lower() in anchors(OPERATING), f"operating.md has no section {rule['alert']}"


def test_worker_down_fires_when_no_target_is_left_at_all() -> None:
    """Under a ServiceMonitor a deleted pod leaves no `up` series rather than a 0: the rule must
    fire on an empty result too, which `or vector(0)` gives."""
    [rule] = [r for r in RULES if r["alert"] == "TriageWorkerDown"]
    assert 'up{job="feedback-triage"}' in rule["expr"] and "or vector(0)" in rule["expr"]


def test_the_lag_rules_read_the_brokers_count_first() -> None:
    named = {r["alert"]: r for r in RULES}
    growing, unknown = named["TriageLagGrowing"], named["TriageLagUnknown"]
    assert {"kafka_consumergroup_lag", "triage_consumer_lag"} <= metric_names(growing["expr"])
    assert metric_names(unknown["expr"]) == {"kafka_consumergroup_lag", "triage_consumer_lag"}


def test_the_prometheus_rule_is_generated_from_this_file() -> None:
    assert prometheus_rule.RULE.read_text() == prometheus_rule.render(), (
        "run `python -m worker.devtools.prometheus_rule` after editing alerts.yml"
    )
    assert yaml.safe_load(prometheus_rule.RULE.read_text())["spec"]["groups"] == ALERTS["groups"]


def test_every_critical_alert_has_a_dashboard_panel_on_its_metrics() -> None:
    panels = [
        (panel["title"], metric_names(target["expr"]))
        for panel in DASHBOARD["panels"]
        for target in panel["targets"]
        if "expr" in target
    ]
    critical = [r for r in RULES if r["labels"]["severity"] == "critical"]
    assert len(critical) >= 5
    for rule in critical:
        needed = metric_names(rule["expr"]) - {"up"} or {"up"}
        assert any(needed <= names for _, names in panels), f"no panel shows {rule['alert']}'s {sorted(needed)}"


def test_the_dashboard_picks_its_data_sources_and_has_a_per_worker_view() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["includeAll"] and variables["instance"]["multi"]
    uids = {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in p["targets"]}
    assert uids == {"${datasource}", "${postgres}"}  # no data source uid is hard-coded
    per_worker = [p for p in DASHBOARD["panels"] if any("$instance" in t.get("expr", "") for t in p["targets"])]
    assert len(per_worker) >= 3
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))

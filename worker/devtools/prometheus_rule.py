"""The Prometheus Operator's PrometheusRule, generated from worker/ops/observability/alerts.yml.

alerts.yml is the one source of the alert rules: the compose Prometheus loads it as it is, and the
Kubernetes component (worker/ops/deploy/kubernetes/components/prometheus-operator/prometheusrule.yaml)
carries the same groups in the operator's resource. `tests/unit/test_alerts.py` holds the two equal.

    python -m worker.devtools.prometheus_rule           # write the PrometheusRule
    python -m worker.devtools.prometheus_rule --check   # exit 1 if it is not what alerts.yml gives
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "worker" / "ops" / "observability" / "alerts.yml"
RULE = ROOT / "worker" / "ops" / "deploy" / "kubernetes" / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# Generated from worker/ops/observability/alerts.yml by `python -m worker.devtools.prometheus_rule`:
# edit alerts.yml, then run that. The label `release` is what kube-prometheus-stack's default
# ruleSelector looks for; set it to your Prometheus's selector.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as literal blocks, as a person would write them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "triage-worker",
            "labels": {"app.kubernetes.io/name": "triage-worker", "release": "prometheus"},
        },
        "spec": {"groups": alerts["groups"]},
    }


def render() -> str:
    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return HEADER + yaml.dump(prometheus_rule(alerts), Dumper=_Dumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = RULE.is_file() and RULE.read_text(encoding="utf-8") == text
        print(f"{RULE.relative_to(ROOT)} {'matches' if same else 'differs from'} alerts.yml")
        return 0 if same else 1
    RULE.write_text(text, encoding="utf-8")
    print(f"wrote {RULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The committed JSON Schemas are exactly what the pydantic models generate, they validate, and no
model changes in a way the consumers of its released version would refuse."""

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from worker.contracts.compatibility import problems
from worker.contracts.wire import SCHEMA_MODELS, WRITTEN, render_schema, version_of

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
RELEASED = SCHEMAS / "released"


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_committed_schema_matches_model(name: str) -> None:
    committed = (SCHEMAS / name).read_text(encoding="utf-8")
    assert committed == render_schema(SCHEMA_MODELS[name]), f"run `triage-worker schemas` to regenerate {name}"
    assert version_of(SCHEMA_MODELS[name]) + ".json" == name


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_no_schema_changes_in_a_way_its_released_version_refuses(name: str) -> None:
    """A consumer validating with the released version keeps accepting every message the worker writes
    (and the worker keeps accepting every event a producer wrote under the released feedback schema).
    A change that breaks this is a new version: copy its schema into schemas/released/ as you publish it."""
    released = RELEASED / name
    assert released.exists(), f"{name} was never released: copy it to schemas/released/ when you publish it"
    new, old = json.loads(render_schema(SCHEMA_MODELS[name])), json.loads(released.read_text())
    found = problems(new, old) if name.split(".v")[0] in WRITTEN else problems(old, new)
    assert found == [], f"{name} changed incompatibly; make it a new version: {found}"


def test_the_checker_finds_the_audit_reason_added_under_v1() -> None:
    """What happened to escalation-event.v1: `audit` joined the reasons without a new version."""
    v1, v2 = (json.loads((RELEASED / f"escalation-event.v{n}.json").read_text()) for n in (1, 2))
    assert problems(v2, v1) == [
        "$.reason: values ['negative', 'low_confidence', 'audit'] beyond ['negative', 'low_confidence']"
    ]


def test_sample_feedback_valid_lines_pass_the_schema() -> None:
    schema = json.loads((SCHEMAS / "feedback-event.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    lines = (resources.files("worker.devtools") / "sample_feedback.jsonl").read_text().splitlines()
    valid = invalid = 0
    for line in lines:
        try:
            payload = json.loads(line)
        except ValueError:
            invalid += 1
            continue
        if validator.is_valid(payload) and payload["text"].strip():
            valid += 1
        else:
            invalid += 1
    assert (valid, invalid) == (24, 4)


def test_escalation_payload_passes_its_schema() -> None:
    from datetime import datetime, timezone

    from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord, TriageDecision
    from worker.runtime.postgres.payloads import escalation_event

    item = FeedbackItem(RawRecord("t", 0, 1, None, b""), "e-1", "awful", source="survey")
    result = ClassifiedItem(
        item, Prediction("negative", 0.9, 0.9, "NEGATIVE"), TriageDecision(True, "negative"), "m", 1.0, 1
    )
    payload = escalation_event(result, datetime.now(timezone.utc), include_text=False).model_dump(mode="json")
    schema = json.loads((SCHEMAS / "escalation-event.v3.json").read_text())
    jsonschema.validate(payload, schema)
    assert payload["text"] is None and payload["reason"] == "negative"

"""The committed JSON Schemas are exactly what the pydantic models generate, and they validate."""

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from worker.contracts.wire import SCHEMA_MODELS, render_schema

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_committed_schema_matches_model(name: str) -> None:
    committed = (SCHEMAS / name).read_text(encoding="utf-8")
    assert committed == render_schema(SCHEMA_MODELS[name]), f"run `triage-worker schemas` to regenerate {name}"


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
    from worker.runtime.postgres.store import escalation_event

    item = FeedbackItem(RawRecord("t", 0, 1, None, b""), "e-1", "awful", source="survey")
    result = ClassifiedItem(
        item, Prediction("negative", 0.9, 0.9, "NEGATIVE"), TriageDecision(True, "negative"), "m", 1.0, 1
    )
    payload = escalation_event(result, datetime.now(timezone.utc), include_text=False).model_dump(mode="json")
    schema = json.loads((SCHEMAS / "escalation-event.v1.json").read_text())
    jsonschema.validate(payload, schema)
    assert payload["text"] is None and payload["reason"] == "negative"

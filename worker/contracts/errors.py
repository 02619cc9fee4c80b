"""Errors: why a record went to the dead-letter topic (`ErrorClass`, carried in `triage.error.class`),
and how a verb ends (`ExitStatus`, `OperatorError`).

One enum for every dead-letter reason, whether decode or the model found it, so the dead-letter
schema, the metrics label and the logs all use the same closed set of names.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ErrorClass(str, Enum):
    MISSING_VALUE = "missing_value"  # a tombstone: the record has no value
    VALUE_TOO_LARGE = "value_too_large"  # over TRIAGE_KAFKA_MAX_MESSAGE_BYTES
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"  # includes NaN/Infinity, which JSONB refuses
    NOT_AN_OBJECT = "not_an_object"
    INVALID_TEXT = "invalid_text"  # NUL characters or unpaired surrogates, which PostgreSQL cannot store
    INVALID_EVENT = "invalid_event"  # fails feedback-event.v1
    UNKNOWN_SCHEMA = "unknown_schema"  # framed with a schema id the Schema Registry does not know
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LONG = "text_too_long"  # over TRIAGE_MAX_TEXT_CHARS
    CLASSIFICATION_FAILED = "classification_failed"  # the model could not take the text even alone
    STORE_REJECTED = "store_rejected"  # PostgreSQL refused a value in it (SQLSTATE class 22 or 23)

    def __str__(self) -> str:
        return self.value


class ExitStatus(IntEnum):
    """What `triage-worker` exits with (the one list: the CLI, the supervisor and the errors use it)."""

    OK = 0
    FAILED = 1  # part of the work was not done: `run` abandoned the batches in hand (replayed after a
    # restart); `ack` refused some ids; `report --plot` had nothing to draw
    OPERATOR = 2  # the operator must change something; one line says what
    UNREADABLE_BATCH = 3  # `run`: the input topic holds a record batch the client cannot read
    CHILD_DIED = 4  # `run --processes N`: a worker process died unexpectedly; the set was stopped


class OperatorError(Exception):
    """A failure whose message tells the operator what to do (a model that cannot be loaded, a
    missing optional package, a bad option). The CLI prints it as one line, `triage-worker: ...`,
    and exits with `exit_status`: OPERATOR (change something) unless the error says otherwise."""

    def __init__(self, message: str, exit_status: ExitStatus = ExitStatus.OPERATOR) -> None:
        super().__init__(message)
        self.exit_status = exit_status

"""Fault-suite settings: every test here is an integration test; `--long` runs them at full size."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)


FAST_BATCHES = {"TRIAGE_MAX_BATCH_SIZE": "8", "TRIAGE_MAX_WAIT_MS": "5"}
# A stream that is hostile on purpose (mostly malformed) is what the dead-letter guard stops; the
# tests of the decoder's robustness under such a stream turn it off to see every payload through.
GUARD_OFF = {"TRIAGE_DEAD_LETTER_MAX_RATIO": "1", "TRIAGE_DEAD_LETTER_MAX_CONSECUTIVE": "0"}

import json
from pathlib import Path

import pytest

from worker.cli import main


def test_classify_prints_one_json_line_per_text(checkpoint_label_n: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--model", str(checkpoint_label_n), "great product", "awful service"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        [answer] = json.loads(line)
        assert answer["label"] in ("POSITIVE", "NEGATIVE") and 0.5 <= answer["score"] <= 1


def test_invalid_setting_exits_2_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_MAX_BATCH_SIZE", "-3")
    assert main(["classify", "x"]) == 2
    assert "TRIAGE_MAX_BATCH_SIZE" in capsys.readouterr().err


def test_unloadable_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--model", str(tmp_path / "missing"), "x"]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_unmappable_labels_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.checkpoints import build_checkpoint

    path = build_checkpoint(tmp_path / "odd", {0: "bad", 1: "good"})
    assert main(["classify", "--model", str(path), "x"]) == 2
    assert "TRIAGE_LABEL_MAP" in capsys.readouterr().err


def test_schemas_verb_writes_files(tmp_path: Path) -> None:
    assert main(["schemas", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dead-letter.v1.json",
        "escalation-event.v3.json",
        "feedback-event.v1.json",
        "triage-result.v2.json",
    ]


def test_every_operator_error_is_one_line_and_its_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "/no/such/file.jsonl"]) == 2
    assert capsys.readouterr().err == "triage-worker: no such file: /no/such/file.jsonl\n"
    assert main(["evaluate", "--data", "/no/such/file.jsonl"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_option_overrides_are_validated_like_settings(capsys: pytest.CaptureFixture[str]) -> None:
    """bench --max-batch-size 0 once slipped through model_copy, which skips validation."""
    assert main(["bench", "--mode", "model", "--max-batch-size", "0", "--events", "1"]) == 2
    assert "TRIAGE_MAX_BATCH_SIZE" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["30m", "72h", "3d", "2w"])
def test_options_read_durations_like_settings(option: str) -> None:
    from worker.cli.common import duration
    from worker.settings import Settings

    assert duration(option) == Settings(outbox_retention=option).outbox_retention


def test_send_to_a_topic_the_broker_does_not_have_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What Apache Kafka with auto.create.topics.enable=false does: the topic's metadata never comes."""
    from kafka.errors import KafkaTimeoutError

    from worker.ops import send

    class NoSuchTopic:
        def partitions_for(self, topic: str) -> None:
            raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")

        def close(self, timeout: float) -> None:
            pass

    monkeypatch.setattr(send, "build_producer", lambda settings, wait_ms: NoSuchTopic())
    (tmp_path / "events.jsonl").write_text('{"text": "fine"}\n')
    assert main(["send", str(tmp_path / "events.jsonl"), "--topic", "feedback.typo"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "triage-worker: the broker at 127.0.0.1:9092 has no topic feedback.typo (or this client may not describe "
        "it): create it, or name another with --topic"
    ]


def test_help_shows_every_options_default() -> None:
    """`finetune --help` once showed no defaults."""
    import argparse

    from worker.cli import build_parser
    from worker.ops.learning import finetune

    verbs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    parsers = dict(verbs)
    parsers |= {f"deadletters {n}": p for n, p in verbs["deadletters"]._subparsers._group_actions[0].choices.items()}  # type: ignore[union-attr]
    for name, parser in parsers.items():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
                said = f"(default: {action.default})" in text or "default" in (action.help or "")
                assert said, (name, action.dest)
    help_text = " ".join(parsers["finetune"].format_help().split())
    assert f"the measured recipe's, {finetune.DEFAULT_EPOCHS})" in help_text
    assert "(default: the measured recipe's, 5e-5)" in help_text and finetune.DEFAULT_LEARNING_RATE == 5e-5
    assert f"(default: the recipe's, {finetune.DEFAULT_MAX_LENGTH})" in help_text
    assert f"class weights (default: {finetune.DEFAULT_WEIGHTING})" in help_text

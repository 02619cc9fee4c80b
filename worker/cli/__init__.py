"""CLI: the `triage-worker` command. Each group of verbs lives in its own module, with every verb's
options beside its handler:

    service   run, migrate                         the worker and its database
    stream    send, deadletters                    the topics around it
    review    report, ack, export, forget, compare what people read and say about the results
    model     classify, evaluate, calibrate, finetune, adapt
    dev       demo, bench, schemas

Each verb builds the settings once and hands off to the module that does the work. Every verb fails
the same way: it raises an `OperatorError`, which `main` prints as one line (`triage-worker: ...`)
and turns into its exit status (see contracts/errors.ExitStatus): OPERATOR means the operator must
change something, such as invalid settings or options (the message names the TRIAGE_* variable or the
option), a model that cannot be loaded, a database schema behind the migrations, a missing optional
package, a missing file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from worker.cli import dev, model, review, service, stream
from worker.contracts.errors import OperatorError
from worker.logs import configure_logging, get_logger
from worker.settings import SettingsError, load_settings

log = get_logger("worker.cli")
GROUPS = (service, stream, review, model, dev)


class Help(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it already names one (or has none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not action.option_strings or "default" in text or unset:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Help)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="triage-worker",
        description="Classify customer feedback from Kafka with a BERT sentiment model; store and triage it.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("model", "processes") if getattr(args, name, None) is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        return _fail(OperatorError(str(exc)))
    configure_logging(settings.log_level)
    try:
        return int(args.handler(settings, args))
    except OperatorError as exc:  # the one error path: a clear one-line reason for the operator
        return _fail(exc)
    except SettingsError as exc:  # an option that overrides a setting (bench --max-batch-size 0)
        return _fail(OperatorError(str(exc)))
    except Exception as exc:  # an outage of what the verb needs: one line, not a traceback
        from worker.cli.common import explain

        said = explain(exc, settings)
        if said is None:
            raise
        return _fail(said)


def _fail(error: OperatorError) -> int:
    print(f"triage-worker: {error}", file=sys.stderr)
    return int(error.exit_status)

"""CLI: the `triage-worker` command. Each verb builds the settings once and hands off to the module
that does the work: `run` to the runtime, `classify` to the model, `migrate`, `send`, `report`,
`ack`, `export`, `forget`, `evaluate` and `calibrate` to the operator tools, `demo` and `bench` to the
development tools.

Every verb fails the same way: it raises an `OperatorError`, which `main` prints as one line
(`triage-worker: ...`) and turns into its exit status. Status 2 means the operator must change
something: invalid settings or options (the message names the TRIAGE_* variable or the option), a
model that cannot be loaded, a database schema behind the migrations, a missing optional package,
a missing file. `run` exits 1 when it abandoned work in hand and 3 when the input topic holds a
batch it cannot read. Verbs that need the database get it from `database(settings)`, which
disposes of the connections when the verb ends; durations are read by the settings' own parser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.contracts.errors import OperatorError
from worker.devtools.bench.command import add_arguments as bench_arguments
from worker.logs import configure_logging, get_logger
from worker.settings import Settings, SettingsError, load_settings, parse_duration

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = get_logger("worker.cli")

UNREADABLE_BATCH_EXIT = 3  # `run` met a record batch it cannot read (CRC mismatch, unknown codec)
FAULTS_DOC = "worker/docs/faults.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage-worker",
        description="Classify customer feedback from Kafka with a BERT sentiment model; store and triage it.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    run = verbs.add_parser("run", help="consume the input topic and process events until SIGTERM/SIGINT")
    run.add_argument("--processes", type=int, help="worker processes in the group (default: TRIAGE_PROCESSES)")

    migrate = verbs.add_parser("migrate", help="apply the database migrations (Alembic)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", action="store_true", help="downgrade to --revision instead")

    classify = verbs.add_parser("classify", help="classify texts (arguments, or one per line on stdin)")
    classify.add_argument("texts", nargs="*", help="texts to classify; read stdin when none are given")
    classify.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")

    send = verbs.add_parser("send", help="publish feedback events from a JSON-lines file ('-' for stdin)")
    send.add_argument("file", help="JSON-lines file, one event per line")
    send.add_argument("--topic", help="topic (default: TRIAGE_INPUT_TOPIC)")

    report = verbs.add_parser("report", help="trend report: share negative by product, source or day")
    report.add_argument("--since", type=duration, default="7d", help="window: 30m, 24h, 7d, 4w ... (default: 7d)")
    report.add_argument(
        "--group-by", choices=["product", "source", "day"], default="product", help="(default: product)"
    )
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw share negative per day to a PNG")

    ack = verbs.add_parser("ack", help="mark escalations as handled, optionally with the reviewer's verdict")
    ack.add_argument("event_ids", nargs="+", metavar="EVENT_ID")
    ack.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who handled it (default: $USER)")
    ack.add_argument("--label", choices=["positive", "negative"], help="what the feedback really was")

    forget = verbs.add_parser("forget", help="erase a customer's text and identifiers from results and the outbox")
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer-id", help="every result of this customer")
    who.add_argument("--event-id", action="append", dest="event_ids", metavar="EVENT_ID", help="repeatable")

    export = verbs.add_parser("export", help="write reviewers' verdicts as labelled JSON lines (for evaluate)")
    # What is exported: the rows with a verdict, the only kind there is. `--reviewed` says so explicitly.
    export.add_argument("--reviewed", action="store_true", help="the rows with a reviewer's verdict (the default)")
    export.add_argument("--since", type=duration, help="only verdicts this recent: 24h, 30d, 4w ... (default: all)")

    for name, text in (
        ("evaluate", "measure the model on a labelled file: accuracy, F1, calibration, escalation figures"),
        ("calibrate", "fit a temperature (and optionally a threshold) on a labelled file"),
        ("finetune", "train a new model on a labelled file and judge it beside its base on a held-out part"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("--data", type=Path, required=True, help="JSON lines, CSV or TSV (optionally .gz)")
        verb.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")
        verb.add_argument("--text-column", default="text", help="the text's key or column (default: text)")
        verb.add_argument("--label-column", default="label", help="the label's key or column (default: label)")
        verb.add_argument(
            "--rating-column",
            help="take labels from 1-5 star ratings in this column: 1-2 negative, 4-5 positive, 3 left out",
        )
        verb.add_argument("--limit", type=int, help="only the first N examples")
    evaluate, calibrate, finetune = (verbs.choices[name] for name in ("evaluate", "calibrate", "finetune"))
    for verb in (evaluate, finetune):
        verb.add_argument(
            "--audit-weight",
            type=float,
            default=1.0,
            help="weight of audit-sample verdicts (export marks them; default 1)",
        )

    evaluate.add_argument("--json", type=Path, metavar="OUT.json", help="also write every figure as JSON")
    evaluate.add_argument("--plot", type=Path, metavar="OUT.png", help="also draw reliability and confusion")
    evaluate.add_argument(
        "--compare-quantized",
        action="store_true",
        help="run the model in fp32 (torch) and in int8 (TRIAGE_ENGINE=onnx-int8); print both side by side",
    )
    calibrate.add_argument("--holdout", type=float, default=0.3, help="share kept out of the fit to judge it")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the fit/held-out split (default: 0)")
    calibrate.add_argument("--out", type=Path, help="file to write (default: TRIAGE_CALIBRATION, or beside the model)")
    finetune.add_argument("--out", type=Path, required=True, help="new folder for the model, calibration and card")
    finetune.add_argument("--holdout", type=float, default=0.2, help="share kept out of training to judge it (0.2)")
    finetune.add_argument("--seed", type=int, default=0, help="seed of the split, the head and the batches (0)")
    finetune.add_argument("--epochs", type=int, default=None, help="most epochs; early stopping may end sooner")
    finetune.add_argument("--learning-rate", type=float, default=None)
    finetune.add_argument("--batch-size", type=int, default=32)
    finetune.add_argument("--max-length", type=int, default=None, help="word pieces per text in training")
    finetune.add_argument("--weighting", choices=["balanced", "sqrt", "none"], default=None, help="class weights")
    for verb in (calibrate, finetune):
        target = verb.add_mutually_exclusive_group()
        target.add_argument("--target-escalation-precision", type=float, metavar="P", help="choose the threshold too")
        target.add_argument("--max-escalation-share", type=float, metavar="S", help="choose the threshold too")

    adapt = verbs.add_parser(
        "adapt", help="masked-LM training on unlabelled feedback, before finetune (domain adaptation)"
    )
    texts = adapt.add_mutually_exclusive_group(required=True)
    texts.add_argument("--data", type=Path, help="JSON lines, CSV or TSV with a text column (labels not needed)")
    texts.add_argument("--from-database", action="store_true", help="the stored feedback texts")
    adapt.add_argument("--since", type=duration, help="with --from-database: only this recent (default: all)")
    adapt.add_argument("--text-column", default="text", help="the text's key or column (default: text)")
    adapt.add_argument("--model", help="model id or local directory to start from (default: TRIAGE_MODEL)")
    adapt.add_argument("--out", type=Path, required=True, help="new folder for the adapted checkpoint")
    adapt.add_argument("--epochs", type=int, default=None)
    adapt.add_argument("--learning-rate", type=float, default=None)
    adapt.add_argument("--batch-size", type=int, default=32)
    adapt.add_argument("--max-length", type=int, default=None, help="word pieces per text in training")
    adapt.add_argument("--seed", type=int, default=0)

    compare = verbs.add_parser("compare", help="the shadow model beside the served one on live traffic and verdicts")
    compare.add_argument("--since", type=duration, default="7d", help="window: 24h, 7d, 4w ... (default: 7d)")
    compare.add_argument("--format", choices=["table", "json"], default="table")

    deadletters = verbs.add_parser("deadletters", help="what is on the dead-letter topic; replay fixed dead letters")
    dead_verbs = deadletters.add_subparsers(dest="action", required=True)
    dead_stats = dead_verbs.add_parser("stats", help="dead letters by error class and by source topic:partition")
    dead_stats.add_argument("--since", type=duration, help="only this recent: 1h, 24h, 7d ... (default: all)")
    dead_replay = dead_verbs.add_parser("replay", help="send dead letters of one class back to their topic")
    dead_replay.add_argument("--error-class", required=True, help="e.g. invalid_event, text_too_long, store_rejected")
    dead_replay.add_argument("--since", type=duration, help="only this recent (default: all)")
    dead_replay.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    dead_replay.add_argument("--max-replays", type=int, default=3, help="refuse records replayed this often (3)")

    demo = verbs.add_parser("demo", help="run everything locally on embedded Postgres and Tansu, print results")
    demo.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")

    bench = verbs.add_parser("bench", help="benchmark the classifier (vs transformers pipeline) or the whole worker")
    bench_arguments(bench)

    schemas = verbs.add_parser("schemas", help="write the wire JSON Schemas generated from the models")
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="folder (default: ./schemas)")
    return parser


def duration(value: str) -> timedelta:
    """An option's duration, read like the settings' (30m, 72h, 3d, 2w); argparse reports a bad one."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("model", "processes") if getattr(args, name, None) is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        return _fail(OperatorError(str(exc)))
    configure_logging(settings.log_level)
    handler = {
        "run": _run,
        "migrate": _migrate,
        "classify": _classify,
        "send": _send,
        "demo": _demo,
        "schemas": _schemas,
        "report": _report,
        "ack": _ack,
        "export": _export,
        "forget": _forget,
        "evaluate": _evaluate,
        "calibrate": _calibrate,
        "finetune": _finetune,
        "adapt": _adapt,
        "compare": _compare,
        "deadletters": _deadletters,
        "bench": _bench,
    }[args.verb]
    try:
        return handler(settings, args)
    except OperatorError as exc:  # the one error path: a clear one-line reason for the operator
        return _fail(exc)
    except SettingsError as exc:  # an option that overrides a setting (bench --max-batch-size 0)
        return _fail(OperatorError(str(exc)))


def _fail(error: OperatorError) -> int:
    print(f"triage-worker: {error}", file=sys.stderr)
    return error.exit_status


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """The database for one verb, its connections closed when the verb ends."""
    from worker.runtime.wiring import build_engine

    engine = build_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


def _png(path: Path | None, option: str) -> None:
    if path is not None and path.suffix.lower() != ".png":
        raise OperatorError(f"{option} writes a PNG; name the file *.png, got {path}")


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.runtime.retry import Abandoned
    from worker.runtime.shutdown import Shutdown
    from worker.runtime.source import UnreadableBatch
    from worker.runtime.wiring import build_runner

    log.info("settings_loaded", settings=settings.safe_dump())
    if settings.processes > 1:
        from worker.runtime.supervisor import supervise

        return supervise(settings)
    shutdown = Shutdown(settings.shutdown_grace_s)
    shutdown.install_signal_handlers()  # before the start-up waits, so a stop ends them at once
    try:
        runner = build_runner(settings, shutdown=shutdown)
    except Abandoned:
        log.info("worker_stopped", during="start-up")
        return 0
    try:
        runner.run()
    except UnreadableBatch as exc:
        raise OperatorError(f"{exc}; see {FAULTS_DOC}", exit_status=UNREADABLE_BATCH_EXIT) from None
    return 1 if runner.abandoned else 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops import migrate

    if args.downgrade:
        migrate.downgrade(settings.sqlalchemy_url(), args.revision)
    else:
        migrate.upgrade(settings.sqlalchemy_url(), args.revision)
    print(f"database {'downgraded' if args.downgrade else 'migrated'} to {args.revision}", file=sys.stderr)
    return 0


def _classify(settings: Settings, args: argparse.Namespace) -> int:
    from worker.contracts.values import ClassificationFailure
    from worker.runtime.wiring import build_classifier

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for answer in build_classifier(settings).predict(texts):
        if isinstance(answer, ClassificationFailure):
            print(json.dumps([{"error": answer.message}]))
        else:
            print(json.dumps([{"label": answer.label.upper(), "score": round(answer.score, 4)}]))
    return 0


def _send(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.send import send_lines

    if args.file == "-":
        sent = send_lines(settings, sys.stdin.buffer, args.topic)
    else:
        path = Path(args.file)
        if not path.is_file():
            raise OperatorError(f"no such file: {path}")
        with path.open("rb") as handle:
            total = sum(1 for _ in handle)
        with path.open("rb") as handle:
            sent = send_lines(settings, handle, args.topic, total=total)
    print(f"sent {sent} events to {args.topic or settings.input_topic}", file=sys.stderr)
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from worker.devtools.demo import run_demo
    except ImportError as exc:
        raise OperatorError(
            f"the demo needs the local services ({exc.name}): pip install 'feedback-triage-worker[local]'"
        ) from None
    return run_demo(settings)


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from worker.devtools.bench.command import run

    return run(args, settings)


def _schemas(settings: Settings, args: argparse.Namespace) -> int:
    from worker.contracts.wire import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops import trends

    _png(args.plot, "--plot")
    with database(settings) as engine:
        print(trends.render(trends.trend_rows(engine, args.since, args.group_by), args.group_by, args.format))
        if args.plot:
            points = trends.daily_points(engine, args.since, args.group_by)
            if not points:
                raise OperatorError("no feedback in this window, no chart drawn", exit_status=1)
            chart = trends.plot(points, args.group_by, _since_text(args.since), args.plot)
            print(f"chart written to {chart}", file=sys.stderr)
    return 0


def _since_text(since: timedelta) -> str:
    """A window as a short label for a chart: 7d, 36h, 30m."""
    seconds = int(since.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"


def _ack(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.acks import acknowledge

    with database(settings) as engine:
        outcome = acknowledge(engine, args.event_ids, args.by, args.label)
    for event_id, said in outcome.done:
        print(f"{event_id}: {said}")
    for event_id, said in outcome.refused:
        print(f"{event_id}: {said}", file=sys.stderr)
    return 0 if outcome.ok else 1


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.export import export_reviewed

    with database(settings) as engine:
        exported = export_reviewed(engine, sys.stdout, args.since)
    print(f"exported {exported.written} reviewed results", file=sys.stderr)
    if exported.without_text:
        print(f"left out {exported.without_text} reviewed results stored without text", file=sys.stderr)
    return 0


def _forget(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.forget import forget

    with database(settings) as engine:
        done = forget(engine, customer_id=args.customer_id, event_ids=args.event_ids or ())
    who = f"customer {args.customer_id}" if args.customer_id else f"{len(args.event_ids)} event ids"
    print(
        f"forgot {who}: text, customer_id and metadata cleared in {done.results} results, "
        f"text, customer_id and metadata in {done.outbox} outbox payloads; "
        "messages already on Kafka topics are not reached"
    )
    return 0


def _labelled_examples(args: argparse.Namespace) -> list[Any]:
    from worker.ops.quality.labelled import read_examples

    if args.limit is not None and args.limit < 1:
        raise OperatorError(f"--limit must be at least 1, got {args.limit}")
    audit_weight = getattr(args, "audit_weight", 1.0)  # evaluate and finetune take --audit-weight
    if audit_weight <= 0:
        raise OperatorError(f"--audit-weight must be above 0, got {audit_weight}")
    examples = read_examples(
        args.data,
        args.text_column,
        args.label_column,
        rating_column=args.rating_column,
        audit_weight=audit_weight,
    )
    return examples[: args.limit]


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.quality import evaluate, measures
    from worker.ops.quality.plot import plot
    from worker.runtime.wiring import build_classifier, build_policy

    _png(args.plot, "--plot")
    examples = _labelled_examples(args)
    if args.compare_quantized:
        return _compare_quantized(settings, args, examples)
    classifier = build_classifier(settings)
    threshold = build_policy(settings, classifier).threshold
    scored = evaluate.score(classifier, examples)
    if not scored.predictions:
        raise OperatorError(f"the model could classify none of the {len(examples)} texts")
    evaluation = measures.measure(scored.truths, scored.negative_probs, threshold, scored.weights)
    about = {"data": str(args.data), **classifier.describe(), "failed": scored.failed}
    about["texts_per_s"] = scored.texts_per_s
    print(evaluate.render(evaluation, about))
    if args.json:
        args.json.write_text(evaluate.as_json(evaluation, about), encoding="utf-8")
        print(f"figures written to {args.json}", file=sys.stderr)
    if args.plot:
        title = f"{args.data.name}: {about['model']} (calibration {about['calibration']}, {evaluation.n:,} texts)"
        print(f"chart written to {plot(evaluation, title, args.plot)}", file=sys.stderr)
    return 0


def _compare_quantized(settings: Settings, args: argparse.Namespace, examples: list[Any]) -> int:
    """The same texts through fp32 torch and ONNX Runtime int8, at fp32's threshold, side by side."""
    from worker.ops.quality import evaluate, measures
    from worker.runtime.wiring import build_classifier, build_policy

    engines = {"fp32": "torch", "int8": "onnx-int8"}
    classifiers = {name: build_classifier(settings.with_overrides(engine=engine)) for name, engine in engines.items()}
    threshold = build_policy(settings, classifiers["fp32"]).threshold
    scored = {name: evaluate.score(classifier, examples) for name, classifier in classifiers.items()}
    if any(len(s.predictions) != len(examples) for s in scored.values()):
        failed = {name: s.failed for name, s in scored.items()}
        raise OperatorError(f"some texts could not be classified ({failed}); compare on a file every engine takes")
    figures = {name: measures.measure(s.truths, s.negative_probs, threshold, s.weights) for name, s in scored.items()}
    changed = sum(
        a.label != b.label for a, b in zip(scored["fp32"].predictions, scored["int8"].predictions, strict=True)
    )
    fp32, int8 = figures["fp32"], figures["int8"]
    caught = (int8.escalation.negatives_caught or 0) - (fp32.escalation.negatives_caught or 0)
    lines = [
        f"{len(examples):,} texts from {args.data}, model {settings.model} "
        f"(calibration {classifiers['fp32'].calibration_id or 'none'}, threshold {threshold:.2f})",
        "",
        *evaluate.side_by_side({name: (figures[name], scored[name].texts_per_s) for name in engines}),
        "",
        f"labels changed by int8: {changed:,} of {len(examples):,} ({changed / len(examples):.2%}); "
        f"accuracy {100 * (int8.accuracy - fp32.accuracy):+.2f} points, negatives predicted "
        f"{100 * (int8.per_class['negative'].recall - fp32.per_class['negative'].recall):+.2f} points, "
        f"negatives caught {100 * caught:+.2f} points",
    ]
    print("\n".join(lines))
    if args.json:
        about = {"data": str(args.data), "labels_changed": changed, "threshold": threshold}
        both = {name: json.loads(evaluate.as_json(figures[name], classifiers[name].describe())) for name in engines}
        args.json.write_text(json.dumps({**about, **both}, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


def _calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.quality import calibrate, evaluate
    from worker.runtime.wiring import build_classifier

    path = calibrate.output_path(args.out, settings.calibration, settings.model)
    calibrate.check_holdout(args.holdout)
    examples = _labelled_examples(args)
    classifier = build_classifier(settings, calibrated=False)
    scored = evaluate.score(classifier, examples)
    fitted = calibrate.fit(
        scored,
        model=settings.model,
        revision=classifier.revision,
        threshold=settings.low_confidence_threshold,
        holdout=args.holdout,
        seed=args.seed,
        min_precision=args.target_escalation_precision,
        max_share=args.max_escalation_share,
        data=str(args.data),
    )
    print(calibrate.render(fitted, calibrate.write(fitted.calibration, path)))
    return 0


def _finetune(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import finetune
    from worker.ops.quality.calibrate import check_holdout

    check_holdout(args.holdout)
    recipe = finetune.recipe(args.epochs, args.learning_rate, args.batch_size, args.max_length, args.seed)
    outcome = finetune.run(
        settings,
        data=args.data,
        examples=_labelled_examples(args),
        base=args.model or settings.model,
        out=args.out,
        recipe=recipe,
        weighting=args.weighting or finetune.DEFAULT_WEIGHTING,
        holdout=args.holdout,
        min_precision=args.target_escalation_precision,
        max_share=args.max_escalation_share,
    )
    print(finetune.render(outcome))
    return 0


def _adapt(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import adapt, finetune

    if args.since is not None and not args.from_database:
        raise OperatorError("--since applies to --from-database; a file is read whole")
    recipe = finetune.recipe(
        args.epochs or adapt.DEFAULT_EPOCHS,
        args.learning_rate or adapt.DEFAULT_LEARNING_RATE,
        args.batch_size,
        args.max_length or adapt.DEFAULT_MAX_LENGTH,
        args.seed,
    )
    if args.from_database:
        with database(settings) as engine:
            texts = adapt.texts_from_database(engine, args.since)
        source = "the stored feedback" + (f" of the last {_since_text(args.since)}" if args.since else "")
    else:
        from worker.ops.quality.labelled import read_texts

        texts, source = read_texts(args.data, args.text_column), str(args.data)
    outcome = adapt.run(
        settings, texts=texts, source=source, base=args.model or settings.model, out=args.out, recipe=recipe
    )
    print(adapt.render(outcome))
    return 0


def _compare(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import compare

    with database(settings) as engine:
        found = compare.comparisons(engine, args.since)
    print(
        compare.as_json(found)
        if args.format == "json"
        else compare.render(found, f"in the last {_since_text(args.since)}")
    )
    return 0


def _deadletters(settings: Settings, args: argparse.Namespace) -> int:
    from worker.contracts.errors import ErrorClass
    from worker.ops import deadletters

    known = sorted(c.value for c in ErrorClass)
    if args.action == "replay" and args.error_class not in known:
        raise OperatorError(f"--error-class must be one of {', '.join(known)}; got {args.error_class!r}")
    if args.action == "replay" and args.max_replays < 1:
        raise OperatorError(f"--max-replays must be at least 1, got {args.max_replays}")
    window = f"in the last {_since_text(args.since)}" if args.since else "on the topic"
    letters = deadletters.read(settings, args.since)
    if args.action == "stats":
        print(deadletters.render_stats(deadletters.stats(letters), window))
        return 0
    done = deadletters.replay(settings, letters, args.error_class, dry_run=args.dry_run, max_replays=args.max_replays)
    print(deadletters.render_replay(done, args.error_class, args.dry_run, args.max_replays))
    return 0

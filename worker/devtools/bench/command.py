"""The `triage-worker bench` command: arguments, the chosen mode, the JSON and the summary line."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from worker.contracts.errors import OperatorError
from worker.settings import Settings


def positive_int(text: str) -> int:
    return _at_least(1, text)


def non_negative_int(text: str) -> int:
    return _at_least(0, text)


def _at_least(least: int, text: str) -> int:
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=["model", "e2e", "trends", "suite", "profile"],
        default="model",
        help="suite: every GPU figure in one run (e2e with 1, 2, 4 processes, p99 at half load, the model alone)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="suite: every step on the CPU with a tiny BERT and a few events, to prove the run before a GPU",
    )
    parser.add_argument("--model", help="model id or directory (default: TRIAGE_MODEL)")
    parser.add_argument(
        "--random-bert-base",
        metavar="TOKENIZER_DIR",
        help="benchmark a randomly initialised BERT-base with this tokenizer instead of --model",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: TRIAGE_DEVICE")
    parser.add_argument("--events", type=positive_int, default=2000, help="texts (model) or events (e2e)")
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="model: baseline and ours take turns on this many slices"
    )
    parser.add_argument(
        "--texts",
        default="imdb",
        metavar="short|imdb|FILE",
        help="short: synthetic feedback of 8-64 word pieces; imdb: synthetic reviews of IMDB's lengths (default); "
        "or a file of texts (.txt lines, .csv or .jsonl with a text field, optionally .gz)",
    )
    parser.add_argument(
        "--engine", choices=["torch", "onnx", "onnx-int8"], help="what runs ours (default: TRIAGE_ENGINE)"
    )
    parser.add_argument("--partitions", type=positive_int, default=3, help="e2e: input topic partitions")
    parser.add_argument("--rate", type=float, default=0.0, help="e2e: produce at this many events/s (0: backlog)")
    parser.add_argument("--workers", type=positive_int, default=1, help="e2e: worker processes in the consumer group")
    parser.add_argument(
        "--no-model",
        action="store_true",
        help="e2e: replace the forward pass by fixed probabilities (half escalated) and compare with the bare path",
    )
    parser.add_argument(
        "--rows",
        default="1000000,10000000",
        help="trends: result counts to seed and time the queries at, comma-separated (default: 1000000,10000000)",
    )
    parser.add_argument(
        "--use-database",
        action="store_true",
        help="trends: seed TRIAGE_DATABASE_URL (an empty, migrated database) instead of an embedded PostgreSQL",
    )
    parser.add_argument(
        "--pending-events",
        type=non_negative_int,
        default=10_000,
        help="trends: results whose rollup counts are left pending while the queries run (default: 10000)",
    )
    parser.add_argument(
        "--store-batches",
        type=positive_int,
        default=1200,
        help="trends: micro-batches of 64 written with the rollups on and off, in turns of 100 (default: 1200)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (TRIAGE_TORCH_COMPILE)")
    parser.add_argument(
        "--category-head",
        type=positive_int,
        metavar="N",
        help="model: also run ours with a category head of N categories on the same model, and print its cost",
    )
    parser.add_argument("--max-batch-size", type=int, help="default: TRIAGE_MAX_BATCH_SIZE")
    parser.add_argument("--max-batch-tokens", type=int, help="default: TRIAGE_MAX_BATCH_TOKENS")
    parser.add_argument(
        "--shadow",
        metavar="MODEL",
        help="e2e: run twice, without and with this shadow candidate (TRIAGE_SHADOW_MODEL), and print the ratio",
    )
    parser.add_argument("--json", type=Path, help="write the result here")


def _shadow_cost(args: argparse.Namespace, settings: Settings, texts: list[str]) -> tuple[dict[str, Any], str]:
    """The same e2e run without and with a shadow candidate, one after the other in this process."""
    from worker.devtools.bench.e2e_mode import bench_e2e

    if args.mode != "e2e" or args.no_model:
        raise OperatorError("--shadow measures the whole worker: use it with --mode e2e, without --no-model")
    runs = {
        label: bench_e2e(
            settings.with_overrides(shadow_model=shadow), texts, args.events, args.partitions, args.rate, args.workers
        )
        for label, shadow in (("without_shadow", None), ("with_shadow", args.shadow))
    }
    ratio = round(runs["with_shadow"]["events_per_s"] / runs["without_shadow"]["events_per_s"], 3)
    summary = (
        f"shadow_ratio={ratio} without_shadow_events_per_s={runs['without_shadow']['events_per_s']} "
        f"with_shadow_events_per_s={runs['with_shadow']['events_per_s']} device={runs['with_shadow']['device']}"
    )
    return {**runs, "shadow": args.shadow, "shadow_ratio": ratio}, summary


def corpus(name: str, count: int) -> list[str]:
    """`count` texts of the named corpus, or the first `count` of a file (its path)."""
    from worker.devtools.bench.texts import load_texts, synthetic_feedback, synthetic_reviews

    if name == "short":
        return synthetic_feedback(count)
    if name == "imdb":
        return synthetic_reviews(count)
    path = Path(name)
    if not path.is_file():
        raise OperatorError(f"--texts takes short, imdb or a file of texts; {name!r} is none of them")
    return load_texts(path, count)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.mode == "trends":
        return _run_trends(args, settings)
    # Imported here, not at the top: the CLI builds every verb's arguments from this module.
    from worker.devtools.bench.e2e_mode import bench_e2e
    from worker.devtools.bench.model_mode import bench_model, table_lines
    from worker.devtools.bench.texts import random_bert_base

    if args.mode == "suite":
        return _run_suite(args, settings)
    texts = corpus(args.texts, args.events)
    updates = {
        key: value
        for key, value in {
            "model": args.model,
            "device": args.device,
            "max_batch_size": args.max_batch_size,
            "max_batch_tokens": args.max_batch_tokens,
            "torch_compile": args.compile or None,
            "engine": args.engine,
        }.items()
        if value is not None
    }
    with tempfile.TemporaryDirectory() as scratch:
        if args.random_bert_base:
            updates["model"] = random_bert_base(args.random_bert_base, Path(scratch) / "bert-base-random")
        settings = settings.with_overrides(**updates)
        if args.mode == "profile":
            from worker.devtools.bench.profile_mode import bench_profile

            result = bench_profile(settings, texts)
            summary = (
                f"encode_per_s={result['encode_per_s']} classify_per_s={result['classify_per_s']} "
                f"predict_per_s={result['predict_per_s']} forward={result['forward']} "
                f"device_busy_share={result['profile']['device_busy_share']}"
            )
        elif args.mode == "model":
            result = bench_model(settings, texts, args.rounds, args.category_head or 0)
            head = result.get("category_head")
            summary = (
                "\n".join(table_lines(result))
                + "\n"
                + (
                    f"ratio={result['ratio']} ours_per_s={result['ours_per_s']} "
                    f"baseline_per_s={result['baseline_per_s']} max_score_diff={result['max_score_diff']} "
                    f"label_agreement={result['label_agreement']} device={result['device']}"
                )
                + (f"\ncategory head of {head['categories']}: cost={head['cost']:.2%} (target < 5%)" if head else "")
            )
        elif args.shadow:
            result, summary = _shadow_cost(args, settings, texts)
        else:
            result = bench_e2e(settings, texts, args.events, args.partitions, args.rate, args.workers, args.no_model)
            summary = (
                f"events_per_s={result['events_per_s']} p50_ms={result['p50_ms']} p99_ms={result['p99_ms']} "
                f"stored={result['stored']} workers={result['workers']} device={result['device']} "
                f"worker_cpu_ms_per_event={result['worker_cpu_ms_per_event']}"
            )
            if args.no_model:
                summary = (
                    "NO MODEL: forward pass replaced by fixed probabilities, half escalated | "
                    f"{summary} bare_events_per_s={result['bare_events_per_s']} "
                    f"ratio_to_bare={result['ratio_to_bare']}"
                )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(summary)
    return 0


def _run_suite(args: argparse.Namespace, settings: Settings) -> int:
    from worker.devtools.bench.suite_mode import bench_suite, table
    from worker.devtools.bench.texts import random_bert_base, synthetic_feedback, synthetic_reviews

    if not args.random_bert_base:
        raise OperatorError("bench --mode suite needs --random-bert-base TOKENIZER_DIR (a tokenizer to borrow)")
    device = "cpu" if args.dry_run else (args.device or settings.device)
    corpora = {"short": synthetic_feedback(2_000), "imdb": synthetic_reviews(2_000)}

    def write(result: dict[str, Any]) -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as scratch:
        # One model per corpus, its head centred on that corpus, so each escalates about half.
        models = {
            corpus: random_bert_base(args.random_bert_base, Path(scratch) / corpus, tiny=args.dry_run, texts=texts)
            for corpus, texts in corpora.items()
        }
        result = bench_suite(
            settings.with_overrides(device=device), models, corpora, dry_run=args.dry_run, checkpoint=write
        )
    write(result)
    print(table(result))
    return 1 if result["summary"]["failed_steps"] else 0


def _run_trends(args: argparse.Namespace, settings: Settings) -> int:
    from worker.devtools.bench.trends_mode import bench_trends

    try:
        sizes = [int(part.replace("_", "")) for part in args.rows.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise OperatorError(f"--rows takes positive counts separated by commas, got {args.rows!r}")
    options = {"store_batches": args.store_batches, "pending_events": args.pending_events}
    if args.use_database:
        result = bench_trends(settings.sqlalchemy_url(), sizes, **options)
    else:
        from worker.devtools.local_services import LocalPostgres
        from worker.ops import migrate

        with LocalPostgres() as postgres:
            migrate.upgrade(postgres.url)
            result = bench_trends(postgres.url, sizes, **options)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"rows={','.join(map(str, sorted(sizes)))} slowest_ms_at_largest={result['slowest_ms_at_largest']} "
        f"max_growth={max(result['growth'].values())} store_ratio_on_to_off={result['store_ratio_on_to_off']}"
    )
    return 0

"""Development verbs: `demo` (the whole pipeline on embedded PostgreSQL and Tansu), `bench` (the
benchmarks, see devtools/bench) and `schemas` (the wire JSON Schemas, regenerated)."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.cli.common import Verbs
from worker.contracts.errors import ExitStatus, OperatorError
from worker.devtools.bench.command import add_arguments as bench_arguments
from worker.settings import Settings


def register(verbs: Verbs) -> None:
    demo = verbs.add_parser("demo", help="run everything locally on embedded Postgres and Tansu, print results")
    demo.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")
    demo.set_defaults(handler=_demo)

    bench = verbs.add_parser("bench", help="benchmark the classifier (vs transformers pipeline) or the whole worker")
    bench_arguments(bench)
    bench.set_defaults(handler=_bench)

    schemas = verbs.add_parser("schemas", help="write the wire JSON Schemas generated from the models")
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="folder")
    schemas.set_defaults(handler=_schemas)


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
    return ExitStatus.OK

"""Bench: measure the classifier and the whole worker, against a baseline run in the same process.

`--mode model`: our SentimentClassifier against transformers' `pipeline(batch_size=64)` on the
same texts and model; prints both rates, the ratio, label agreement and the largest score
difference. `--mode e2e`: a real broker and PostgreSQL (embedded), events produced first (or at a
steady `--rate`), then the time until all are stored and escalations published; prints events/s,
produce-to-stored latency percentiles and the share of time in each stage.
Both write `--json PATH` and end with one summary line.

Texts are synthetic reviews whose lengths follow IMDB's (see `synthetic_reviews`), or `--texts FILE`
(.jsonl with a `text` field, .csv/.csv.gz with a `text` column, or plain lines).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.settings import Settings

# Review vocabulary for synthetic texts: common words plus clearly positive and negative ones.
WORDS = (
    "the a and of to is in it that this was for with as on but movie film story acting plot characters "
    "scene scenes director time really just good great bad best worst love loved hate boring wonderful "
    "awful excellent terrible brilliant poor beautiful stupid funny fun dull amazing waste fantastic "
    "script performance cast ending music camera watch watched again never ever would could should one "
    "two first last long short slow fast very too much more most little well even though however because "
    "character end years people think seen see made make back still over only also some any"
).split()

# Lengths in BERT tokens: log-normal fitted to IMDB (median 184 tokens, sigma 0.8: mean about 230
# after truncation at 512, and about 10% of reviews longer than 512).
LENGTH_MEDIAN_TOKENS = 184
LENGTH_SIGMA = 0.8
TOKENS_PER_WORD = 1.12
STALL_S = 60  # e2e: give up when no row is stored or published for this long (includes a group join)


def synthetic_reviews(n: int, seed: int = 0) -> list[str]:
    """`n` reviews with IMDB's length distribution, built from WORDS (deterministic for a seed)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        tokens = rng.lognormvariate(math.log(LENGTH_MEDIAN_TOKENS), LENGTH_SIGMA)
        words = max(int(tokens / TOKENS_PER_WORD), 3)
        sentences, current = [], []
        for _ in range(words):
            current.append(rng.choice(WORDS))
            if len(current) >= rng.randint(8, 20):
                sentences.append(" ".join(current).capitalize() + ".")
                current = []
        if current:
            sentences.append(" ".join(current).capitalize() + ".")
        texts.append(" ".join(sentences))
    return texts


def load_texts(path: Path, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        if ".csv" in path.suffixes:
            rows = (row["text"] for row in csv.DictReader(handle))
        elif ".jsonl" in path.suffixes:
            rows = (json.loads(line)["text"] for line in handle if line.strip())
        else:
            rows = (line.rstrip("\n") for line in handle if line.strip())
        texts = []
        for text in rows:
            texts.append(text)
            if len(texts) >= limit:
                break
    return texts


def random_bert_base(tokenizer_dir: str, target: Path) -> str:
    """A randomly initialised BERT-base (`BertConfig()` defaults) with a real tokenizer, saved to `target`.

    Throughput does not depend on the weights, so this stands in for the model cards' BERT-base models.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


# --- model mode ---------------------------------------------------------------------------------
def bench_model(settings: Settings, texts: list[str], rounds: int = 3) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    from worker.classifier import Prediction, SentimentClassifier

    model = settings.model
    ours = SentimentClassifier(
        model,
        device=settings.device,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        compile_model=settings.torch_compile,
    )
    baseline = pipeline(
        "text-classification",
        model=model,
        device=ours.device,
        dtype=torch.float16 if ours.device.type == "cuda" else torch.float32,
    )
    tokens = [len(ids) for ids in ours.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]]
    passes: list[Any] = []  # the classifier's stats for each micro-batch

    def timed(fn: Any, chunk: list[str]) -> tuple[Any, float]:
        if ours.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = fn(chunk)
        if ours.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    def baseline_on(chunk: list[str]) -> list[Any]:
        return list(baseline(chunk, batch_size=64, truncation=True))

    def ours_in_micro_batches(chunk: list[str]) -> list[Any]:
        # The worker hands the classifier one micro-batch (at most max_batch_size events) at a
        # time, so it can only sort by length within that window; this does the same.
        answers = []
        for start in range(0, len(chunk), settings.max_batch_size):
            answers += ours.predict(chunk[start : start + settings.max_batch_size])
            if ours.last_stats:
                passes.append(ours.last_stats)
        return answers

    # Warm up both (a compiled model gets a few shapes compiled before the clock starts).
    baseline_on(texts[:64])
    ours_in_micro_batches(texts[: settings.max_batch_size * (4 if settings.torch_compile else 1)])
    passes.clear()
    # Baseline and ours take turns on consecutive slices of the texts, so a burst of noise from
    # elsewhere on the machine lands on both instead of on whichever ran at that moment.
    base_out: list[Any] = []
    our_out: list[Any] = []
    round_ratios = []
    base_s = our_s = 0.0
    size = math.ceil(len(texts) / rounds)
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        base_part, base_round_s = timed(baseline_on, chunk)
        our_part, our_round_s = timed(ours_in_micro_batches, chunk)
        base_out += base_part
        our_out += our_part
        base_s, our_s = base_s + base_round_s, our_s + our_round_s
        round_ratios.append(round(base_round_s / our_round_s, 3))
    label_of = {raw.lower(): norm for raw, norm in ours.describe()["labels"].items()}
    agree, max_diff = 0, 0.0
    for base, mine in zip(base_out, our_out, strict=True):
        assert isinstance(mine, Prediction)
        base_label = label_of[base["label"].lower()]
        agree += base_label == mine.label
        mine_score = mine.score if base_label == mine.label else 1 - mine.score
        max_diff = max(max_diff, abs(mine_score - base["score"]))
    padded, real = sum(p.padded_tokens for p in passes), sum(p.real_tokens for p in passes)
    return {
        "mode": "model",
        "model": model,
        **{k: v for k, v in ours.describe().items() if k in ("device", "dtype", "max_length")},
        "texts": len(texts),
        "mean_tokens": round(statistics.fmean(tokens), 1),
        "share_truncated": round(sum(t >= ours.max_length for t in tokens) / len(tokens), 3),
        "baseline": "transformers pipeline(batch_size=64)",
        "baseline_per_s": round(len(texts) / base_s, 1),
        "ours_per_s": round(len(texts) / our_s, 1),
        "ratio": round(base_s / our_s, 3),
        "round_ratios": round_ratios,
        "label_agreement": round(agree / len(texts), 4),
        "max_score_diff": float(f"{max_diff:.2e}"),
        "ours_forward_passes": sum(p.forward_passes for p in passes),
        "ours_padding_overhead": round(padded / real - 1, 3) if real else 0,
        "max_batch_size": settings.max_batch_size,
        "ours_min_fill": ours.min_fill,
        "max_batch_tokens": ours.max_batch_tokens,
        "torch_compile": settings.torch_compile,
    }


# --- e2e mode -----------------------------------------------------------------------------------
def bench_e2e(
    base: Settings, texts: list[str], events: int, partitions: int, rate: float, workers: int
) -> dict[str, Any]:
    """`workers` worker processes in one group on a real broker and database; see the module doc.

    Throughput is stored events over the span from the first stored row to the last row stored
    or escalation published, so Tansu's group-join wait is left out.
    """
    from kafka import KafkaProducer

    from worker.local_services import local_stack

    payloads = [
        json.dumps({"event_id": f"bench-{i}", "text": texts[i % len(texts)], "product": f"p{i % 7}"}).encode()
        for i in range(events)
    ]
    expected = events + (1 if rate else 0)
    # Every text must be stored (the model truncates long ones), so none may trip the text limit.
    base = base.model_copy(update={"max_text_chars": max(base.max_text_chars, *map(len, texts))})
    # The poll interval must outlast a CPU batch of long reviews with a real model (about 3 s here);
    # Tansu holds every group join for that long, which `events_per_s` leaves out.
    with (
        local_stack(base, partitions=partitions, max_poll_interval_ms=15_000) as (settings, broker),
        tempfile.TemporaryDirectory() as logs,
    ):
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=5)

        def produce() -> None:
            started = time.monotonic()
            for i, payload in enumerate(payloads):
                if rate:
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                producer.send(settings.input_topic, key=f"bench-{i}".encode(), value=payload)
            producer.flush()

        if rate:
            # Steady load starts once the group is formed (the warm-up event is stored), so the
            # latency measured is the worker's, not Tansu's group-join wait.
            producer.send(
                settings.input_topic, key=b"warmup", value=json.dumps({"event_id": "warmup", "text": "ok"}).encode()
            )
            producer.flush()
        else:
            produce()  # a backlog: everything is waiting before the workers start
        started = time.perf_counter()
        processes = [_start_worker(settings, Path(logs) / f"worker-{n}.log") for n in range(workers)]
        try:
            if rate:
                _wait_for(settings, lambda rows, _: rows >= 1, processes)
                produce()
            _wait_for(settings, lambda rows, unpublished: rows >= expected and unpublished == 0, processes)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
            producer.close()
        stopped = [_stopped_line(Path(logs) / f"worker-{n}.log") for n in range(workers)]
        measured = _measure(settings)
    busy: dict[str, float] = {}
    for line in stopped:
        for stage, seconds in line.get("stage_s", {}).items():
            busy[stage] = busy.get(stage, 0.0) + seconds
    total_busy = sum(busy.values()) or 1.0
    return {
        "mode": "e2e",
        "model": settings.model,
        "device": settings.device,
        "workers": workers,
        "events": events,
        "partitions": partitions,
        "rate": rate or "backlog",
        **measured,
        "escalated": sum(line.get("escalated", 0) for line in stopped),
        "escalations_published": sum(line.get("relayed", 0) for line in stopped),
        "wall_s_including_group_join": round(elapsed, 2),
        "stage_busy_s": {k: round(v, 2) for k, v in busy.items()},
        "stage_share": {k: round(v / total_busy, 3) for k, v in busy.items()},
        "max_batch_size": settings.max_batch_size,
        "pipeline_depth": settings.pipeline_depth,
        "torch_compile": settings.torch_compile,
    }


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")} | settings.as_env()
    with log_path.open("wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, stdout=log_file, stderr=log_file)


def _wait_for(settings: Settings, done: Any, processes: list[subprocess.Popen[bytes]]) -> None:
    """Poll the database until `done(rows, unpublished)`; fail if a worker dies or nothing moves for a minute."""
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sqlalchemy_url())
    last_seen, last_change = None, time.monotonic()
    try:
        while True:
            with engine.connect() as connection:
                rows = connection.execute(text("select count(*) from feedback_results")).scalar_one()
                unpublished = connection.execute(
                    text("select count(*) from escalation_outbox where published_at is null")
                ).scalar_one()
            if done(rows, unpublished):
                return
            if any(process.poll() is not None for process in processes):
                raise RuntimeError("a worker process exited during the benchmark; see its log")
            if (rows, unpublished) != last_seen:
                last_seen, last_change = (rows, unpublished), time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise RuntimeError(f"no progress for {STALL_S}s: {rows} rows stored, {unpublished} unpublished")
            time.sleep(0.2)
    finally:
        engine.dispose()


def _stopped_line(log_path: Path) -> dict[str, Any]:
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if '"worker_stopped"' in line:
            return dict(json.loads(line))
    raise RuntimeError(f"worker did not stop cleanly:\n{log_path.read_text(errors='replace')[-3000:]}")


def _measure(settings: Settings) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sqlalchemy_url())
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "select count(*), min(processed_at), max(processed_at), "
                "percentile_cont(0.5) within group (order by extract(epoch from processed_at - kafka_timestamp)), "
                "percentile_cont(0.99) within group (order by extract(epoch from processed_at - kafka_timestamp)) "
                "from feedback_results where event_id <> 'warmup'"
            )
        ).one()
        last_published, unpublished = connection.execute(
            text("select max(published_at), count(*) filter (where published_at is null) from escalation_outbox")
        ).one()
    engine.dispose()
    stored, first, last_stored, p50, p99 = row
    last = max(last_stored, last_published or last_stored)
    span = (last - first).total_seconds()
    return {
        "stored": stored,
        "outbox_unpublished": unpublished,
        "events_per_s": round(stored / span, 1) if span else None,
        "p50_ms": round(float(p50) * 1000, 1),
        "p99_ms": round(float(p99) * 1000, 1),
    }


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage-worker bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), settings or Settings())


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["model", "e2e"], default="model")
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
    parser.add_argument("--texts", type=Path, help="file of texts instead of synthetic reviews")
    parser.add_argument("--partitions", type=positive_int, default=3, help="e2e: input topic partitions")
    parser.add_argument("--rate", type=float, default=0.0, help="e2e: produce at this many events/s (0: backlog)")
    parser.add_argument("--workers", type=positive_int, default=1, help="e2e: worker processes in the consumer group")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (TRIAGE_TORCH_COMPILE)")
    parser.add_argument("--max-batch-size", type=int, help="default: TRIAGE_MAX_BATCH_SIZE")
    parser.add_argument("--max-batch-tokens", type=int, help="default: TRIAGE_MAX_BATCH_TOKENS")
    parser.add_argument("--json", type=Path, help="write the result here")


def run(args: argparse.Namespace, settings: Settings) -> int:
    texts = load_texts(args.texts, args.events) if args.texts else synthetic_reviews(args.events)
    updates = {
        key: value
        for key, value in {
            "model": args.model,
            "device": args.device,
            "max_batch_size": args.max_batch_size,
            "max_batch_tokens": args.max_batch_tokens,
            "torch_compile": args.compile or None,
        }.items()
        if value is not None
    }
    with tempfile.TemporaryDirectory() as scratch:
        if args.random_bert_base:
            updates["model"] = random_bert_base(args.random_bert_base, Path(scratch) / "bert-base-random")
        settings = settings.model_copy(update=updates)
        if args.mode == "model":
            result = bench_model(settings, texts, args.rounds)
            summary = (
                f"ratio={result['ratio']} ours_per_s={result['ours_per_s']} "
                f"baseline_per_s={result['baseline_per_s']} max_score_diff={result['max_score_diff']} "
                f"label_agreement={result['label_agreement']} device={result['device']}"
            )
        else:
            result = bench_e2e(settings, texts, args.events, args.partitions, args.rate, args.workers)
            summary = (
                f"events_per_s={result['events_per_s']} p50_ms={result['p50_ms']} p99_ms={result['p99_ms']} "
                f"stored={result['stored']} workers={result['workers']} device={result['device']}"
            )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

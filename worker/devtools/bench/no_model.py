"""No-model mode: the worker with the forward pass taken out, and the bare path it is compared with.

`FixedProbabilities` is the real classifier (tokenizer, planning, padding, labels) whose forward
pass returns fixed probabilities instead of running the model: every other event negative (0.9),
so half are escalated, the rest positive (0.9). `python -m worker.devtools.bench.no_model` runs a
worker with it. `bare_path` does the same work with no framework around it: a kafka-python
consumer, `json.loads`, the same tokenizer call (the Rust tokenizer's `encode_batch_fast`), COPY
of the same rows in one transaction per batch, the escalations sent and awaited, offsets committed.
"""

from __future__ import annotations

import io
import json
import resource
import sys
import time
from typing import Any

import torch

from worker.model.classifier import SentimentClassifier
from worker.model.encoding import truncating_backend
from worker.runtime.postgres.store import copy_line
from worker.settings import Settings

BARE_TABLE = "bench_bare_results"
BARE_TOPIC_SUFFIX = ".bare"


class FixedProbabilities(SentimentClassifier):
    """Everything the classifier does on the CPU, then fixed answers instead of the model."""

    def _forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        if not hasattr(self, "_fixed"):  # logits of negative 0.9 / positive 0.9, alternating, made once
            negative = torch.tensor([0.9 if row % 2 == 0 else 0.1 for row in range(self.max_batch_size)])
            self._fixed = torch.stack([negative, 1 - negative], dim=1).log()
            if self.negative_index == 1:
                self._fixed = self._fixed.flip(1)
        return self._fixed[: tensors["input_ids"].shape[0]]


def main() -> int:
    """A worker process (like `triage-worker run`) whose forward pass returns fixed probabilities."""
    from worker.logs import configure_logging
    from worker.runtime.shutdown import Shutdown
    from worker.runtime.wiring import build_runner

    settings = Settings()
    configure_logging(settings.log_level)
    shutdown = Shutdown(settings.shutdown_grace_s)
    shutdown.install_signal_handlers()
    classifier = FixedProbabilities(
        settings.model,
        device="cpu",
        label_map=settings.label_map,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        truncation=settings.truncation,
    )
    runner = build_runner(settings, classifier, shutdown)
    runner.run()
    return 1 if runner.abandoned else 0


def bare_path(settings: Settings, events: int) -> dict[str, Any]:
    """The worker's I/O and CPU work on the same events, with no framework: events/s and CPU/event."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from sqlalchemy import create_engine
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.model)
    backend = truncating_backend(tokenizer, min(tokenizer.model_max_length, 512))  # the worker's own call
    assert backend is not None, "the bare path needs a fast (Rust) tokenizer"
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id="bench-bare", enable_auto_commit=False
    )
    partitions = [
        TopicPartition(settings.input_topic, p) for p in sorted(consumer.partitions_for_topic(settings.input_topic))
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5, batch_size=256 * 1024
    )
    engine = create_engine(settings.sqlalchemy_url())
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"create table {BARE_TABLE} (event_id text primary key, label text, score float, "
            "escalated boolean, product text, text text, kafka_partition int, kafka_offset bigint)"
        )
    topic = settings.escalation_topic + BARE_TOPIC_SUFFIX
    done = 0
    cpu_before, started = _cpu_s(), time.perf_counter()
    try:
        while done < events:
            polled = consumer.poll(timeout_ms=500, max_records=settings.max_batch_size or 64)
            records = [record for batch in polled.values() for record in batch]
            if not records:
                continue
            payloads = [json.loads(record.value) for record in records]
            [encoding.ids for encoding in backend.encode_batch_fast([p["text"] for p in payloads])]
            rows = io.StringIO()
            for n, (record, payload) in enumerate(zip(records, payloads, strict=True)):
                escalated = n % 2 == 0
                rows.write(
                    copy_line(
                        [
                            payload["event_id"],
                            "negative" if escalated else "positive",
                            0.9,
                            escalated,
                            payload.get("product"),
                            payload["text"],
                            record.partition,
                            record.offset,
                        ]
                    )
                )
                if escalated:
                    producer.send(topic, key=payload["event_id"].encode(), value=json.dumps(payload).encode())
            rows.seek(0)
            with engine.begin() as connection:
                connection.connection.cursor().copy_expert(f"COPY {BARE_TABLE} FROM STDIN", rows)
            producer.flush()
            consumer.commit()
            done += len(records)
    finally:
        elapsed, cpu = time.perf_counter() - started, _cpu_s() - cpu_before
        consumer.close(autocommit=False)
        producer.close()
        engine.dispose()
    return {"events": done, "events_per_s": round(done / elapsed, 1), "cpu_ms_per_event": round(cpu * 1000 / done, 3)}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())

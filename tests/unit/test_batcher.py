from worker.contracts.values import RawRecord
from worker.model.encoding import plan_batches
from worker.runtime.batcher import MicroBatcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(n: int) -> list[RawRecord]:
    return [RawRecord("t", 0, i, None, b"{}") for i in range(n)]


def test_flushes_when_full() -> None:
    batcher = MicroBatcher(max_batch_size=3, max_wait_ms=1000, clock=Clock())
    batcher.add(records(2))
    assert not batcher.ready() and batcher.room() == 1
    batcher.add(records(1))
    assert batcher.ready()
    assert len(batcher.take()) == 3 and batcher.pending == [] and not batcher.ready()


def test_flushes_when_the_first_record_waited_long_enough() -> None:
    clock = Clock()
    batcher = MicroBatcher(max_batch_size=100, max_wait_ms=50, clock=clock)
    batcher.add([])
    assert not batcher.ready() and batcher.time_left_ms() == 0
    batcher.add(records(1))
    assert batcher.time_left_ms() == 50 and not batcher.ready()
    clock.now += 0.030
    batcher.add(records(1))  # a later record does not restart the wait
    assert batcher.time_left_ms() == 20 and not batcher.ready()
    clock.now += 0.0199
    assert not batcher.ready()
    clock.now += 0.0002
    assert batcher.ready()


def test_plan_batches_respects_count_and_token_budget() -> None:
    lengths = [10, 500, 20, 30, 400, 5]
    batches = plan_batches(lengths, max_batch_size=3, max_batch_tokens=900)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 900
    assert batches[0] == [1]  # 500 + 400 padded to 2 * 500 > 900
    assert [lengths[i] for b in batches for i in b] == sorted(lengths, reverse=True)


def test_plan_batches_gives_an_oversized_text_its_own_batch() -> None:
    assert plan_batches([1000, 3], max_batch_size=8, max_batch_tokens=100) == [[0], [1]]


def test_plan_batches_buckets_by_length_with_min_fill() -> None:
    lengths = [505, 300, 200, 150, 100, 80, 50]
    assert plan_batches(lengths, max_batch_size=64, max_batch_tokens=4096) == [list(range(7))]
    buckets = plan_batches(lengths, max_batch_size=64, max_batch_tokens=4096, min_fill=0.5)
    assert buckets == [[0, 1], [2, 3, 4], [5, 6]]
    padded = sum(len(b) * max(lengths[i] for i in b) for b in buckets)
    assert padded == 2 * 505 + 3 * 200 + 2 * 80 < 7 * 505

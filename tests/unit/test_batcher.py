from worker.contracts.values import RawRecord
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

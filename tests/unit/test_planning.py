"""The pass planner: budgets kept, the cheapest cut found, and the cost fitted from timed passes."""

import itertools
import random

import pytest

from worker.model.planning import PassCost, fit, measure, plan, probe_shapes

SMALL_CPU = PassCost(overhead_ms=15.0, per_token_ms=0.25)  # about MiniLM's on torch here


def padded(lengths: list[int], passes: list[list[int]]) -> int:
    return sum(len(p) * max(lengths[i] for i in p) for p in passes)


def total(cost: PassCost, lengths: list[int], passes: list[list[int]]) -> float:
    return sum(cost.ms(len(p), max(lengths[i] for i in p)) for p in passes)


@pytest.mark.parametrize("cost", [None, SMALL_CPU])
def test_every_text_once_longest_first_within_the_budgets(cost: PassCost | None) -> None:
    lengths = [10, 500, 20, 30, 400, 5]
    passes = plan(lengths, max_batch_size=3, max_batch_tokens=900, cost=cost)
    assert [lengths[i] for p in passes for i in p] == sorted(lengths, reverse=True)
    for part in passes:
        assert len(part) <= 3
        assert len(part) == 1 or len(part) * max(lengths[i] for i in part) <= 900
    assert passes[0] == [1]  # 500 + 400 padded to 2 * 500 > 900


@pytest.mark.parametrize("cost", [None, SMALL_CPU])
def test_a_text_over_the_budget_gets_a_pass_of_its_own(cost: PassCost | None) -> None:
    assert plan([1000, 3], max_batch_size=8, max_batch_tokens=100, cost=cost) == [[0], [1]]
    assert plan([], max_batch_size=8, max_batch_tokens=100, cost=cost) == []


def test_without_a_cost_each_pass_is_filled() -> None:
    lengths = [505, 300, 200, 150, 100, 80, 50]
    assert plan(lengths, max_batch_size=64, max_batch_tokens=4096) == [list(range(7))]


def test_the_overhead_decides_between_padding_and_more_passes() -> None:
    lengths = [505, 300, 200, 150, 100, 80, 50]
    # Free passes: no padding at all is cheapest, a pass per distinct length.
    assert len(plan(lengths, 64, 4096, PassCost(overhead_ms=0.0, per_token_ms=1.0))) == 7
    # Dear passes: one pass, whatever the padding.
    assert len(plan(lengths, 64, 4096, PassCost(overhead_ms=1e6, per_token_ms=1.0))) == 1
    between = plan(lengths, 64, 4096, PassCost(overhead_ms=150.0, per_token_ms=1.0))
    assert 1 < len(between) < 7 and padded(lengths, between) < 7 * 505


def test_the_cut_is_the_cheapest_there_is() -> None:
    """Against every contiguous cut of the sorted texts (the cheapest plan is always one such cut)."""
    rng = random.Random(7)
    for _ in range(30):
        lengths = [rng.randint(8, 120) for _ in range(rng.randint(1, 9))]
        cost = PassCost(overhead_ms=rng.uniform(0, 40), per_token_ms=0.25, per_token_position_ms=rng.uniform(0, 0.01))
        best = plan(lengths, max_batch_size=4, max_batch_tokens=300, cost=cost)
        ordered = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        cheapest = float("inf")
        for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
            passes, current = [], [ordered[0]]
            for index, cut in zip(ordered[1:], cuts, strict=True):
                if cut:
                    passes.append(current)
                    current = []
                current.append(index)
            passes.append(current)
            if all(len(p) <= 4 and (len(p) == 1 or len(p) * lengths[p[0]] <= 300) for p in passes):
                cheapest = min(cheapest, total(cost, lengths, passes))
        assert total(cost, lengths, best) == pytest.approx(cheapest)


def test_the_fit_recovers_the_terms_it_was_timed_with() -> None:
    truth = PassCost(overhead_ms=12.0, per_token_ms=0.2, per_token_position_ms=0.0004)
    for max_length in (512, 64, 8):
        shapes = probe_shapes(max_length)
        assert max(length for _, length in shapes) <= max_length
        fitted = fit(shapes, [truth.ms(n, length) for n, length in shapes])
        assert fitted.overhead_ms == pytest.approx(12.0)
        assert fitted.per_token_ms == pytest.approx(0.2)
        assert fitted.per_token_position_ms == pytest.approx(0.0004)
    assert probe_shapes(512) == ((1, 16), (16, 32), (4, 128))


def test_noise_never_gives_a_negative_term() -> None:
    fitted = fit(probe_shapes(512), [30.0, 20.0, 19.0])  # the small pass slower than the wide one, the long faster
    assert fitted.overhead_ms >= 0 and fitted.per_token_ms > 0 and fitted.per_token_position_ms == 0


def test_measure_times_each_probe_shape_and_keeps_the_fastest() -> None:
    seen: list[tuple[int, int]] = []
    measure(lambda n, length: seen.append((n, length)), max_length=512)
    assert sorted(set(seen)) == sorted(probe_shapes(512)) and len(seen) == 4 * 3

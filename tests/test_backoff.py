"""The one backoff rule: capped exponential, equal jitter, reset after success or a healthy run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hall_daemon.backoff import Backoff

pytestmark = pytest.mark.unit

firsts = st.floats(min_value=0.001, max_value=10.0)
factors = st.floats(min_value=1.0, max_value=1000.0)
draws = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=80)


def scripted(values: list[float]) -> Callable[[], float]:
    """An rng that plays `values` in turn, then repeats the last."""
    played = list(values)
    return lambda: played.pop(0) if len(played) > 1 else played[0]


def test_the_ceiling_doubles_to_the_cap_and_the_delay_lies_in_its_upper_half() -> None:
    longest = Backoff(first=0.5, cap=30.0, rng=lambda: 0.0)
    assert [longest.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    shortest = Backoff(first=0.5, cap=30.0, rng=lambda: 1.0)
    assert [shortest.next_delay() for _ in range(9)] == [0.25, 0.5, 1, 2, 4, 8, 15, 15, 15]


def test_delays_are_spread_so_halls_do_not_retry_in_step() -> None:
    delays = []
    for _ in range(50):
        b = Backoff(0.5, 30.0)
        delays.append([b.next_delay() for _ in range(8)][-1])
    assert all(15.0 <= d <= 30.0 for d in delays) and len(set(delays)) > 40


@given(first=firsts, factor=factors, rolls=draws)
def test_every_delay_is_within_half_the_first_and_the_cap(
    first: float, factor: float, rolls: list[float]
) -> None:
    cap = first * factor
    b = Backoff(first, cap, rng=scripted(rolls))
    ceilings = []
    for _ in rolls:
        ceiling = b.ceiling()
        delay = b.next_delay()
        assert first / 2 <= delay <= cap
        assert ceiling / 2 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == sorted(ceilings)  # the ceiling never falls while failures go on
    assert ceilings[0] == first and b.ceiling() <= cap


@given(first=firsts, factor=factors, failures=st.integers(min_value=0, max_value=200))
def test_reset_starts_again_from_first(first: float, factor: float, failures: int) -> None:
    b = Backoff(first, first * factor, rng=lambda: 0.0)
    for _ in range(failures):
        b.next_delay()
    b.reset()
    assert b.failures == 0 and b.next_delay() == first


def test_a_failure_after_a_healthy_run_starts_again_from_first() -> None:
    b = Backoff(0.5, 30.0, healthy_s=60.0, rng=lambda: 0.0)
    assert [b.next_delay(ran_s=0.01) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.next_delay(ran_s=61.0) == 0.5
    assert b.next_delay(ran_s=0.01) == 1.0


def test_without_healthy_s_a_long_run_does_not_reset() -> None:
    b = Backoff(0.5, 30.0, rng=lambda: 0.0)
    b.next_delay()
    assert b.next_delay(ran_s=3600.0) == 1.0


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_could_not_wait_is_refused(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="first <= cap"):
        Backoff(first, cap)

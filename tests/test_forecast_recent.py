"""Unit tests of what the trees newly see: the running figures, callers leaving the line,
and the number of trees chosen on the time-ordered holdout."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.engine import Engine
from hall_daemon.events import StoredEvent
from hall_daemon.forecast import boost
from hall_daemon.forecast.features import NAMES, FeatureBook
from hall_daemon.forecast.recent import Average, Window, share
from hall_daemon.forecast.wait_model import MAX_TREES, MIN_TREES, Choice, choose, train
from hall_daemon.model import CounterSpec, HallSpec, ServiceSpec

pytestmark = pytest.mark.unit


def test_a_window_forgets_what_is_older_than_its_span() -> None:
    w = Window(60)
    for t, v in ((0, 10.0), (30, 20.0), (100, 40.0)):
        w.add(t, v)
    assert list(w.values) == [40.0]  # 0 and 30 are over 60 s before 100
    w.add(110, 60.0)
    assert w.count(105) == 1 and w.mean(0) == 50.0
    assert math.isnan(w.mean(200))


def test_an_average_weighs_the_latest_most() -> None:
    a = Average(0.5)
    assert math.isnan(a.value)
    a.add(0.0)
    a.add(30.0)
    assert a.value == pytest.approx(20.0)  # (0 * 0.5 + 30) / (0.5 + 1)
    assert Average(1.0).value != Average(1.0).value  # NaN: nothing seen
    assert share(1, 3) == 0.25 and math.isnan(share(0, 0))


def test_staged_predictions_end_at_the_full_model() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((600, 3))
    y = 100 * x[:, 0] + rng.normal(0, 5, 600)
    model = boost.fit(x, y, trees=40, depth=3, rate=0.1)
    staged = model.staged(x[:50])
    assert staged.shape == (40, 50)
    assert np.allclose(staged[-1], model.predict(x[:50]))


def test_the_holdout_chooses_a_number_of_trees_within_bounds() -> None:
    rng = np.random.default_rng(5)
    x = rng.random((1500, len(NAMES)))
    y = 600 * x[:, 3] + rng.normal(0, 30, 1500)
    choice = choose(x, y)
    assert MIN_TREES <= choice.trees <= MAX_TREES
    model = train(x, y, Choice(False, 60))  # told: no choosing, that size
    assert model.trees.feature.shape[0] == 60 and not model.from_simulation


def _hall() -> HallSpec:
    return HallSpec(
        services=(ServiceSpec("A", "A", "A", 1, mean_service_s=300.0),),
        counters=(CounterSpec(1, "1", ("A",)),),
    )


def test_tickets_that_leave_the_line_count_in_the_left_share() -> None:
    spec = _hall()
    engine = Engine(spec)
    book = FeatureBook(spec)
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    numbers: list[str] = []

    def run(cmd: c.Command) -> None:
        for e in engine.execute(cmd):
            book.learn(StoredEvent(0, "", e.type, e.at, e.data), engine.state)
            if e.type == ev.TICKET_ISSUED:
                numbers.append(e.data["number"])

    for i in range(4):
        run(c.TakeTicket(t0 + timedelta(minutes=i), "A", f"token{i}"))
    run(c.CallNext(t0 + timedelta(minutes=5), 1))  # the first one is served
    run(c.Cancel(t0 + timedelta(minutes=6), numbers[1], "left"))  # one gives up
    now = t0 + timedelta(minutes=7)
    row = book.service_row(engine.state, "A", now)
    assert row["left_share_15min"] == pytest.approx(0.5)  # 1 left of 2 that stopped waiting
    assert row["left_waited_30min"] == pytest.approx(300.0)  # it had waited 5 minutes
    rows = book.rows(engine.state, now, [("A", None)], {})
    staying = rows[0, NAMES.index("ahead_staying")]
    assert staying == pytest.approx(2 * 0.5)  # two still waiting, half of them will stay
    assert rows[0, NAMES.index("ahead_mean_elapsed")] == pytest.approx((300 + 240) / 2)

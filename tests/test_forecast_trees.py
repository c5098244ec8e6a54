"""Unit tests of the forecaster's learned stage: the boosted trees, the features, and the
forecaster switching from the calibrated simulation to the trees once it has history."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from bench import synthhall
from hall_daemon import events as ev
from hall_daemon.engine import Engine
from hall_daemon.forecast import boost
from hall_daemon.forecast.features import NAMES
from hall_daemon.forecast.live import (
    FIRST_DAYS_METHOD,
    METHOD,
    MIN_ROWS,
    HallForecaster,
    History,
)
from hall_daemon.forecast.replay import infer_spec
from hall_daemon.forecast.wait_model import train

pytestmark = pytest.mark.unit


def test_trees_learn_a_threshold_and_an_interaction() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((4000, 4))
    y = 100 * x[:, 0] + 300 * (x[:, 1] > 0.5) * x[:, 2] + rng.normal(0, 10, 4000)
    model = boost.fit(x[:3000], y[:3000], trees=200, depth=3, rate=0.1, l2=1.0)
    got = model.predict(x[3000:])
    rmse = float(np.sqrt(np.mean((got - y[3000:]) ** 2)))
    assert rmse < 25  # noise is 10, the bins cost a little; the mean alone gives ~110
    assert float(np.std(y[3000:])) > 80


def test_missing_values_have_their_own_branch() -> None:
    x = np.array([[np.nan]] * 200 + [[1.0]] * 200 + [[2.0]] * 200)
    y = np.array([500.0] * 200 + [10.0] * 200 + [20.0] * 200)
    model = boost.fit(x, y, trees=100, depth=2, rate=0.3, l2=0.0, min_leaf=5)
    got = model.predict(np.array([[np.nan], [1.0], [2.0]]))
    assert got == pytest.approx([500.0, 10.0, 20.0], abs=5.0)


def test_a_tree_that_stops_splitting_early_still_predicts_its_leaves() -> None:
    # min_leaf a third of the rows: the root splits, its halves cannot, so every tree ends
    # at depth 1 of 4 and its leaves' values must reach the rows through the levels below.
    x = np.linspace(-1.0, 1.0, 600)[:, None]
    y = np.where(x[:, 0] < 0, 0.0, 100.0)
    model = boost.fit(x, y, trees=100, depth=4, rate=0.2, l2=0.0, min_leaf=200)
    assert model.predict(np.array([[-0.5], [0.5]])) == pytest.approx([0.0, 100.0], abs=1.0)


def test_starting_from_a_prediction_reaches_beyond_the_training_range() -> None:
    # Trees alone cannot predict more than they saw; started from a base they can.
    rng = np.random.default_rng(2)
    base = rng.random(2000) * 1000
    x = base[:, None]
    y = base * 1.1 + rng.normal(0, 5, 2000)
    model = boost.fit(x, y, init=base, trees=50, depth=2, rate=0.1)
    far = model.predict(np.array([[5000.0]]), np.array([5000.0]))[0]
    plain = boost.fit(x, y, trees=50, depth=2, rate=0.1).predict(np.array([[5000.0]]))[0]
    assert far > 4000
    assert plain < 1200


def test_fitting_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.random((500, len(NAMES))), rng.random(500) * 600
    a, b = train(x, y), train(x, y)
    assert np.array_equal(a.predict(x), b.predict(x))
    assert a.from_simulation == b.from_simulation


def test_the_forecaster_switches_to_the_trees_once_it_has_history() -> None:
    log = synthhall.generate(days=3, seed=5, scale=0.5)
    spec = infer_spec(log)
    f = HallForecaster(spec)
    engine = Engine(spec)
    methods: list[str] = []
    for e in log:
        engine.apply(e.event)
        f.learn(e, engine.state)
        if e.type == ev.TICKET_ISSUED:
            methods.append(f.ticket(engine.state, e.data["number"], e.at)["method"])
            busy = [s for s in engine.state.services if engine.state.waiting(s) >= 3]
            if f.model is not None and busy:
                break  # a busy moment once the trees are trained
    assert len(f.rows) >= MIN_ROWS
    assert f.model is not None
    assert FIRST_DAYS_METHOD in methods[:MIN_ROWS] and methods[-1] == METHOD
    # What waiting tickets are told: further back in the line is a longer wait.
    state, now = engine.state, e.at
    waits = [f.ticket(state, t.number, now) for t in state.waiting_tickets(busy[0])]
    assert waits[-1]["wait_s"] > waits[0]["wait_s"]
    assert all(0 <= w["p10_s"] <= w["wait_s"] <= w["p90_s"] for w in waits)
    assert {w["method"] for w in waits} <= {METHOD, "queue-length"}


def test_the_daemon_s_forecaster_fits_on_a_thread_and_keeps_answering() -> None:
    log = synthhall.generate(days=2, seed=6, scale=0.5)
    spec = infer_spec(log)
    f = HallForecaster(spec, fit_in_background=True)
    engine = Engine(spec)
    for e in log:
        engine.apply(e.event)
        f.learn(e, engine.state)
    deadline = time.monotonic() + 30
    while f.model is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f.model is not None
    now = log[-1].at + timedelta(minutes=1)
    got = f(engine.state, "A", 0, now)
    assert got["method"] in (METHOD, "queue-length")
    assert 0 <= got["p10_s"] <= got["wait_s"] <= got["p90_s"]


def test_the_training_history_keeps_the_latest_rows_in_order_in_a_fixed_buffer() -> None:
    h = History(2, size=5)
    before = h.x.nbytes + h.y.nbytes
    for i in range(12):
        h.add(np.array([i, -i]), float(i))
    x, y = h.arrays()
    assert len(h) == 5
    assert y.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert x[:, 0].tolist() == y.tolist()
    assert h.x.nbytes + h.y.nbytes == before


def test_warming_trains_on_the_last_days_and_learns_waits_from_all() -> None:
    log = synthhall.generate(days=3, seed=7, scale=0.5)
    spec = infer_spec(log)
    days = sorted({e.at.date() for e in log})
    since = next(e.at for e in log if e.at.date() == days[-1])
    f = HallForecaster(spec)
    f.warm(log, calibrate_since=since)
    waited_last_day = sum(
        1
        for e in log
        if e.type == ev.TICKET_CALLED and e.at >= since and e.data.get("recall") is None
    )
    assert 0 < len(f.rows) <= waited_last_day  # rows only from the last day
    waits_seen = sum(n for n, _ in f.book.hour_waits.values())
    assert waits_seen > 2 * len(f.rows)  # but every day's waits taught the wait columns

"""Unit tests of the learned hall forecaster: the snapshot Monte-Carlo, its learning and the
outlook. Halls here are small and their parameters known, so the figures can be checked
against what a clerk with a stopwatch would expect.

2024-03-04 is a Monday; the hall runs at +08:00 (Asia/Shanghai).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hall_daemon import commands as c
from hall_daemon.engine import Engine
from hall_daemon.events import StoredEvent
from hall_daemon.forecast import HallForecaster, make_forecaster
from hall_daemon.model import CounterSpec, HallSpec, ServiceSpec
from tests.mqtt_broker import Contract

TZ = timezone(timedelta(hours=8))
T0 = datetime(2024, 3, 4, 10, 0, tzinfo=TZ)


def spec(counters: int = 2, mean_a: float = 300.0) -> HallSpec:
    return HallSpec(
        services=(
            ServiceSpec("A", "甲", "A", 1, mean_service_s=mean_a),
            ServiceSpec("B", "乙", "B", 2, mean_service_s=600.0),
        ),
        counters=tuple(CounterSpec(i, f"{i}号", ("A", "B")) for i in range(1, counters + 1)),
    )


class Hall:
    """An engine and a forecaster that learns every event, as the daemon wires them."""

    def __init__(self, hall_spec: HallSpec) -> None:
        self.engine = Engine(hall_spec)
        self.forecaster = make_forecaster(hall_spec)
        self.seq = 0
        self.tokens = 0
        self.log: list[StoredEvent] = []  # what the store would hand back

    def run(self, cmd: c.Command) -> None:
        for e in self.engine.execute(cmd):
            self.seq += 1
            stored = StoredEvent(self.seq, f"id-{self.seq}", e.type, e.at, e.data)
            self.log.append(stored)
            self.forecaster.learn(stored, self.engine.state)

    def take(self, at: datetime, service: str = "A", priority: bool = False) -> str:
        self.tokens += 1
        self.run(c.TakeTicket(at, service, f"token-{self.tokens:016d}", priority=priority))
        return max(self.engine.state.tickets.values(), key=lambda t: t.order).number

    def wait(self, number: str, now: datetime) -> int:
        return int(self.forecaster.ticket(self.engine.state, number, now)["wait_s"])


def busy_hall(counters: int = 2, waiting: int = 10, open_: int | None = None) -> Hall:
    """Every counter has just called someone; `waiting` more A tickets wait."""
    h = Hall(spec(counters))
    for i in range(counters if open_ is None else open_):
        h.run(c.OpenCounter(T0, i + 1))
    for _ in range(counters + waiting):
        h.take(T0)
    for i in range(counters if open_ is None else open_):
        h.run(c.CallNext(T0, i + 1))
    return h


@pytest.mark.unit
def test_a_hall_with_known_service_times_gets_waits_near_the_truth() -> None:
    # Two counters at 300 s each (plus the few seconds a clerk takes to call): the 10th
    # waiting ticket is called at the 10th completion, about 10 x 300 / 2 s after now.
    h = busy_hall(counters=2, waiting=10)
    last = h.engine.state.waiting_tickets("A")[-1].number
    f = h.forecaster.ticket(h.engine.state, last, T0)
    assert f["method"] == "monte-carlo+conformal"
    assert 0.85 * 1500 <= f["wait_s"] <= 1.2 * 1500
    first = h.engine.state.waiting_tickets("A")[0].number
    assert h.wait(first, T0) < f["wait_s"] / 4


@pytest.mark.unit
def test_more_counters_make_shorter_waits() -> None:
    two, four = busy_hall(counters=2), busy_hall(counters=4)
    w2 = two.forecaster(two.engine.state, "A", two.engine.state.waiting("A"), T0)
    w4 = four.forecaster(four.engine.state, "A", four.engine.state.waiting("A"), T0)
    assert w4["wait_s"] < 0.7 * w2["wait_s"]


@pytest.mark.unit
def test_a_paused_counter_makes_waits_longer() -> None:
    h = busy_hall(counters=3)
    last = h.engine.state.waiting_tickets("A")[-1].number
    before = h.wait(last, T0)
    h.run(c.Done(T0, 3))
    h.run(c.PauseCounter(T0, 3))
    assert h.wait(last, T0) > before * 1.15


@pytest.mark.unit
def test_a_priority_ticket_overtakes_the_waiting_ones() -> None:
    h = busy_hall(counters=2, waiting=8)
    last_normal = h.engine.state.waiting_tickets("A")[-1].number
    before = h.wait(last_normal, T0)
    urgent = h.take(T0 + timedelta(seconds=5), priority=True)
    assert h.wait(urgent, T0 + timedelta(seconds=5)) < before / 4
    assert h.wait(last_normal, T0 + timedelta(seconds=5)) > before


@pytest.mark.unit
def test_the_time_already_spent_at_the_counter_counts() -> None:
    h = busy_hall(counters=1, waiting=1)
    head = h.engine.state.waiting_tickets("A")[0].number
    fresh = h.wait(head, T0)
    # Most of a 300 s service is behind us; lognormal service times have a long tail, so
    # the rest is not 60 s but still clearly less than a whole service.
    later = T0 + timedelta(seconds=240)
    assert h.wait(head, later) < fresh - 90


@pytest.mark.unit
def test_the_same_state_gives_the_same_forecast() -> None:
    a, b = busy_hall(), busy_hall()
    for t in a.engine.state.waiting_tickets("A"):
        assert a.forecaster.ticket(a.engine.state, t.number, T0) == b.forecaster.ticket(
            b.engine.state, t.number, T0
        )


@pytest.mark.unit
def test_an_idle_counter_means_no_wait_at_all() -> None:
    h = Hall(spec(2))
    h.run(c.OpenCounter(T0, 1))
    n = h.take(T0)
    assert h.forecaster.ticket(h.engine.state, n, T0) == {
        "wait_s": 0,
        "p10_s": 0,
        "p90_s": 0,
        "method": "monte-carlo+conformal",
    }


@pytest.mark.unit
def test_the_interval_holds_the_forecast() -> None:
    h = busy_hall(counters=3, waiting=15)
    for t in h.engine.state.waiting_tickets("A"):
        f = h.forecaster.ticket(h.engine.state, t.number, T0)
        assert 0 <= f["p10_s"] <= f["wait_s"] <= f["p90_s"]
        assert f["p10_s"] < f["p90_s"]


@pytest.mark.unit
def test_served_tickets_teach_the_service_time() -> None:
    h = Hall(spec(1, mean_a=300.0))
    h.run(c.OpenCounter(T0, 1))
    at = T0
    for _ in range(40):  # every applicant takes exactly 2 minutes
        h.take(at)
        h.run(c.CallNext(at, 1))
        at += timedelta(seconds=120)
        h.run(c.Done(at, 1))
    learned = h.forecaster.learned.service["A"].mean_s
    assert 110 <= learned <= 160
    mu, _ = h.forecaster.learned.service_time(1, "A")
    assert 100 <= 2.718281828**mu <= 160


@pytest.mark.unit
def test_the_forecast_of_an_issued_ticket_is_the_ticket_s_own() -> None:
    # What the engine puts in ticket.issued (asked before the ticket exists) and what the
    # screens ask afterwards of the ticket itself agree.
    h = busy_hall(counters=2, waiting=5)
    at = T0 + timedelta(seconds=10)
    before = h.forecaster(h.engine.state, "A", h.engine.state.ahead_if_issued("A", False), at)
    n = h.take(at)
    after = h.forecaster.ticket(h.engine.state, n, at)
    assert abs(before["wait_s"] - after["wait_s"]) <= 0.05 * after["wait_s"] + 5


@pytest.mark.unit
def test_the_outlook_has_the_contract_s_shape_and_learns_the_crowd() -> None:
    h = Hall(spec(2))
    h.run(c.OpenCounter(T0, 1))
    for i in range(12):  # 12 arrivals between 10:00 and 11:00 on a Monday
        h.take(T0 + timedelta(minutes=5 * i))
        h.run(c.CallNext(T0 + timedelta(minutes=5 * i), 1))
    now = T0 + timedelta(hours=2)
    body = h.forecaster.outlook(h.engine.state, now)
    payload = {"v": 1, "updated": now.isoformat(timespec="seconds"), **body}
    Contract().validator("#/components/schemas/Outlook").validate(payload)
    assert body["method"] == "weekday-hour-history"
    assert len(body["days"]) == 7
    next_monday = body["days"][0 + 7 - 1]  # today is Monday; the 7th day is Sunday
    assert next_monday["date"] == "2024-03-10"
    ten = next(hr for hr in body["days"][0]["hours"] if hr["hour"] == 12)
    assert {s["service"] for s in ten["services"]} == {"A", "B"}
    # Next Monday is beyond the 7 days; Tuesday 10:00 borrows from Monday (the only day seen).
    tuesday_ten = next(hr for hr in body["days"][1]["hours"] if hr["hour"] == 10)
    crowd_a = next(s["crowd"] for s in tuesday_ten["services"] if s["service"] == "A")
    assert crowd_a == 12


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    open_=st.integers(0, 3),
    waiting=st.integers(0, 12),
    priority=st.lists(st.booleans(), min_size=0, max_size=4),
    pause=st.booleans(),
    later_s=st.integers(0, 3000),
)
@pytest.mark.unit
def test_forecasts_are_never_negative_and_hold_their_interval(
    open_: int, waiting: int, priority: list[bool], pause: bool, later_s: int
) -> None:
    h = busy_hall(counters=3, waiting=waiting, open_=open_)
    at = T0 + timedelta(seconds=1)
    for p in priority:
        h.take(at, service="B", priority=p)
    if pause and open_:
        h.run(c.PauseCounter(at, 1))
    now = at + timedelta(seconds=later_s)
    s = h.engine.state
    checks = [h.forecaster.ticket(s, t.number, now) for t in s.tickets.values()]
    checks += [h.forecaster(s, code, s.ahead_if_issued(code, False), now) for code in "AB"]
    for f in checks:
        assert 0 <= f["p10_s"] <= f["wait_s"] <= f["p90_s"]


@pytest.mark.unit
def test_warming_from_history_teaches_a_fresh_forecaster() -> None:
    h = Hall(spec(1, mean_a=300.0))
    h.run(c.Tick(T0 - timedelta(hours=5)))  # the log starts with the hall day
    h.run(c.OpenCounter(T0, 1))
    at = T0
    for _ in range(30):  # every applicant takes 100 s
        h.take(at)
        h.run(c.CallNext(at, 1))
        at += timedelta(seconds=100)
        h.run(c.Done(at, 1))
    fresh = HallForecaster(h.engine.spec)
    assert fresh.learned.service["A"].mean_s > 250
    assert fresh.warm(h.log) == h.seq
    assert fresh.learned.service["A"].mean_s < 160

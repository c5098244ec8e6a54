"""Efficiency statistics on hand-made event sequences: exact counts, percentiles, the
historical best of the same weekday and hour, and the outliers of the handling-time model."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hall_daemon import events as ev
from hall_daemon.engine import DAY_STARTED
from hall_daemon.events import StoredEvent
from hall_daemon.model import CounterSpec, HallSpec, ServiceSpec
from hall_daemon.stats import (
    CANCELLED,
    NO_SHOW,
    SERVED,
    UNFINISHED,
    DaySummary,
    build_report,
    day_bounds,
    distribution,
    find_outliers,
    summarize_day,
)

pytestmark = pytest.mark.unit

TZ = ZoneInfo("Asia/Shanghai")
FRIDAY = date(2026, 11, 27)
SPEC = HallSpec(
    services=(
        ServiceSpec("A", "企业开办", "A", 1, name_en="Business"),
        ServiceSpec("B", "社保", "B", 2, name_en="Insurance"),
    ),
    counters=tuple(CounterSpec(i, f"{i}号窗口", ("A", "B"), f"Counter {i}") for i in range(1, 6)),
)


class Log:
    """Builds a day's stored events in seq order, times as local clock strings."""

    def __init__(self, day: date) -> None:
        self.day = day
        self.events: list[StoredEvent] = []

    def at(self, clock: str) -> datetime:
        h, m, *s = (int(x) for x in clock.split(":"))
        return datetime(
            self.day.year, self.day.month, self.day.day, h, m, s[0] if s else 0, tzinfo=TZ
        )

    def add(self, kind: str, clock: str | datetime, **data: Any) -> None:
        when = clock if isinstance(clock, datetime) else self.at(clock)
        n = len(self.events) + 1
        self.events.append(StoredEvent(n, f"id-{n}", kind, when, data))

    def issue(self, clock: str | datetime, number: str, **extra: Any) -> None:
        self.add(
            ev.TICKET_ISSUED,
            clock,
            number=number,
            service=number[0],
            priority=False,
            channel="dispenser",
            token=f"t{number}",
            **extra,
        )

    def summary(self) -> DaySummary:
        return summarize_day(SPEC, self.day, self.events)


def the_friday() -> Log:
    """Seven tickets covering every outcome; see the numbers in the test below."""
    g = Log(FRIDAY)
    # Yesterday's leftovers, cancelled by the engine at the reset hour: not today's A001.
    g.add(ev.TICKET_CANCELLED, "04:00:07", number="A001", service="A", reason="day_end")
    g.add(DAY_STARTED, "04:00:07", day=FRIDAY.isoformat())
    for clock, number in [
        ("09:00", "A001"),
        ("09:01", "A002"),
        ("09:02", "A003"),
        ("09:03", "A004"),
        ("09:04", "A005"),
        ("09:05", "B001"),
        ("09:10", "B002"),
    ]:
        g.issue(clock, number)
    # A001: wait 60 s at counter 1, serving then done: handling 300 s, rated 5.
    g.add(ev.TICKET_CALLED, "09:01:00", number="A001", service="A", counter=1)
    g.add(ev.TICKET_SERVING, "09:01:30", number="A001", service="A", counter=1)
    g.add(ev.TICKET_DONE, "09:06:30", number="A001", service="A", counter=1)
    g.add(ev.TICKET_RATED, "09:06:40", number="A001", service="A", counter=1, score=5)
    # A002: wait 120 s at counter 2, no serving press: handling from the call, 240 s, rated 3.
    g.add(ev.TICKET_CALLED, "09:03:00", number="A002", service="A", counter=2)
    g.add(ev.TICKET_DONE, "09:07:00", number="A002", service="A", counter=2)
    g.add(ev.TICKET_RATED, "09:07:05", number="A002", service="A", counter=2, score=3)
    # A003: wait 180 s at counter 1, recalled, never came.
    g.add(ev.TICKET_CALLED, "09:05:00", number="A003", service="A", counter=1)
    g.add(ev.TICKET_RECALLED, "09:05:30", number="A003", service="A", counter=1)
    g.add(ev.TICKET_NO_SHOW, "09:07:00", number="A003", service="A", counter=1)
    # A004: wait 240 s at counter 1, sent on to B, finished at counter 3 in 600 s.
    g.add(ev.TICKET_CALLED, "09:07:00", number="A004", service="A", counter=1)
    g.add(ev.TICKET_SERVING, "09:08:00", number="A004", service="A", counter=1)
    g.add(ev.TICKET_TRANSFERRED, "09:10:00", number="A004", to="B", counter=1, **{"from": "A"})
    g.add(ev.TICKET_CALLED, "09:20:00", number="A004", service="B", counter=3)
    g.add(ev.TICKET_SERVING, "09:21:00", number="A004", service="B", counter=3)
    g.add(ev.TICKET_DONE, "09:31:00", number="A004", service="B", counter=3)
    # A005: cancelled in the app before its turn.
    g.add(ev.TICKET_CANCELLED, "09:30:00", number="A005", service="A", reason="app")
    # B001: wait 300 s at counter 3, set aside, called back, served from 09:16: 240 s.
    g.add(ev.TICKET_CALLED, "09:10:00", number="B001", service="B", counter=3)
    g.add(ev.TICKET_SUSPENDED, "09:12:00", number="B001", service="B", counter=3)
    g.add(ev.TICKET_RESUMED, "09:15:00", number="B001", service="B", counter=3)
    g.add(ev.TICKET_CALLED, "09:15:00", number="B001", service="B", counter=3)
    g.add(ev.TICKET_SERVING, "09:16:00", number="B001", service="B", counter=3)
    g.add(ev.TICKET_DONE, "09:20:00", number="B001", service="B", counter=3)
    # B002 never called: unfinished at the end of the day.
    g.add(ev.COUNTER_CLOSED, "18:00", counter=1)
    return g


def row(report: dict[str, Any], kind: str, key: object) -> dict[str, Any]:
    return next(r for r in report[kind] if r["key"] == key)


def test_day_records_follow_each_ticket_to_its_end() -> None:
    s = the_friday().summary()
    by = {r.number: r for r in s.tickets}
    assert sorted(by) == ["A001", "A002", "A003", "A004", "A005", "B001", "B002"]
    assert [by[n].outcome for n in sorted(by)] == [
        SERVED,
        SERVED,
        NO_SHOW,
        SERVED,
        CANCELLED,
        SERVED,
        UNFINISHED,
    ]
    assert [by[n].wait_s for n in ("A001", "A002", "A003", "A004", "B001")] == [
        60,
        120,
        180,
        240,
        300,
    ]
    assert by["A004"].handle_s == 600 and by["A004"].end_service == "B"
    assert by["A004"].end_counter == 3 and by["A004"].transfers == (("A", 1),)
    assert by["B001"].handle_s == 240 and by["A002"].handle_s == 240
    assert by["A005"].wait_s is None and by["B002"].first_counter is None


def test_report_counts_percentiles_and_ratings_exactly() -> None:
    rep = build_report(SPEC, [the_friday().summary()], {})
    hall = rep["hall"]
    counts = {
        k: hall[k]
        for k in ("issued", "called", "served", "no_show", "cancelled", "transferred", "unfinished")
    }
    assert counts == {
        "issued": 7,
        "called": 5,
        "served": 4,
        "no_show": 1,
        "cancelled": 1,
        "transferred": 1,
        "unfinished": 1,
    }
    assert hall["wait"] == {"n": 5, "mean": 180.0, "median": 180.0, "p90": 276.0}
    assert hall["handle"] == {"n": 4, "mean": 345.0, "median": 270.0, "p90": 510.0}
    assert hall["ratings"] == {"n": 2, "mean": 4.0, "dist": [0, 0, 1, 0, 1]}

    a, b = row(rep, "services", "A"), row(rep, "services", "B")
    assert (a["issued"], a["served"], a["no_show"], a["cancelled"], a["transferred"]) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert a["wait"] == {"n": 4, "mean": 150.0, "median": 150.0, "p90": 222.0}
    assert a["handle"] == {"n": 2, "mean": 270.0, "median": 270.0, "p90": 294.0}
    assert (b["issued"], b["served"], b["unfinished"]) == (2, 2, 1)
    assert b["handle"]["mean"] == 420.0 and b["wait"]["mean"] == 300.0

    c1, c2, c3 = (row(rep, "counters", i) for i in (1, 2, 3))
    assert (c1["called"], c1["served"], c1["no_show"], c1["transferred"]) == (3, 1, 1, 1)
    assert c1["ratings"]["dist"] == [0, 0, 0, 0, 1] and c2["ratings"]["mean"] == 3.0
    assert (c3["called"], c3["served"], c3["handle"]["mean"]) == (1, 2, 420.0)
    assert row(rep, "counters", 4)["served"] == 0
    assert row(rep, "counters", 4)["handle"]["mean"] is None

    [nine] = hall["hourly"]
    assert nine == {
        "hour": 9,
        "issued": 7,
        "served": 4,
        "mean_wait": 180.0,
        "best_served": None,
        "best_mean_wait": None,
    }


def test_distribution_of_nothing_is_empty() -> None:
    assert distribution([]) == {"n": 0, "mean": None, "median": None, "p90": None}


def simple_day(day: date, hours: dict[int, list[int]]) -> DaySummary:
    """Tickets issued on the hour, called after `wait` seconds at counter 1, done 60 s later."""
    g = Log(day)
    g.add(DAY_STARTED, "04:00:01", day=day.isoformat())
    n = 0
    for hour, waits in hours.items():
        for wait in waits:
            n += 1
            number = f"A{n:03d}"
            issued = g.at(f"{hour}:00")
            g.issue(issued, number)
            g.add(
                ev.TICKET_CALLED,
                issued + timedelta(seconds=wait),
                number=number,
                service="A",
                counter=1,
            )
            g.add(
                ev.TICKET_DONE,
                issued + timedelta(seconds=wait + 60),
                number=number,
                service="A",
                counter=1,
            )
    return g.summary()


def test_historical_best_takes_the_same_weekday_and_hour_of_past_weeks() -> None:
    today = simple_day(FRIDAY, {9: [120, 180], 10: [100]})
    history = {
        s.day: s
        for s in [
            simple_day(FRIDAY - timedelta(days=7), {9: [100, 200, 300], 10: [50]}),
            simple_day(FRIDAY - timedelta(days=14), {9: [60, 60], 10: [500] * 4}),
            # A Thursday (another weekday) and a Friday nine weeks back: not history.
            simple_day(FRIDAY - timedelta(days=1), {9: [1] * 10, 10: [1] * 10}),
            simple_day(FRIDAY - timedelta(days=63), {9: [1] * 20, 10: [1] * 20}),
        ]
    }
    rep = build_report(SPEC, [today], history)
    hours = {h["hour"]: h for h in rep["hall"]["hourly"]}
    assert (hours[9]["best_served"], hours[9]["best_mean_wait"]) == (3, 60.0)
    assert (hours[10]["best_served"], hours[10]["best_mean_wait"]) == (4, 50.0)
    assert (hours[9]["mean_wait"], hours[10]["mean_wait"]) == (150.0, 100.0)
    # The period: the best hours added up; best waits weighted by today's 2 + 1 tickets.
    assert rep["hall"]["best"] == {"served": 7, "mean_wait": round((60 * 2 + 50) / 3, 1)}
    assert row(rep, "services", "A")["best"] == rep["hall"]["best"]
    assert row(rep, "counters", 1)["best"]["served"] == 7
    assert row(rep, "services", "B")["best"] == {"served": None, "mean_wait": None}


def test_a_range_sums_the_best_of_each_of_its_days() -> None:
    fri, sat = FRIDAY, FRIDAY + timedelta(days=1)
    days = [simple_day(fri, {9: [100]}), simple_day(sat, {9: [100, 100]})]
    history = {
        s.day: s
        for s in [
            simple_day(fri - timedelta(days=7), {9: [10, 20]}),  # 2 served, mean 15
            simple_day(sat - timedelta(days=7), {9: [40] * 5}),  # 5 served, mean 40
        ]
    }
    best = build_report(SPEC, days, history)["hall"]["best"]
    assert best == {"served": 7, "mean_wait": round((15 * 1 + 40 * 2) / 3, 1)}


# -- outliers -------------------------------------------------------------------------

BASE_S = {"A": 300.0, "B": 600.0}


def busy_day(slow_ticket: bool = False, slow_counter: int | None = None) -> DaySummary:
    """Two services, hours 9-11, counters 1-5, four tickets in every cell; handling times
    spread ±20% around the service's pace by a fixed pattern (no randomness)."""
    g = Log(FRIDAY)
    g.add(DAY_STARTED, "04:00:01", day=FRIDAY.isoformat())
    k = 0
    for hour in (9, 10, 11):
        for svc in ("A", "B"):
            for counter in range(1, 6):
                for rep in range(4):
                    k += 1
                    number = f"{svc}{k:03d}"
                    start = g.at(f"{hour}:{(counter * 10 + rep * 2) % 60:02d}")
                    handle = BASE_S[svc] * math.exp(0.2 * math.sin(k * 1.7))
                    if counter == slow_counter:
                        handle *= 2.0
                    if slow_ticket and (hour, svc, counter, rep) == (10, "A", 2, 1):
                        handle *= 5.0
                    g.issue(start - timedelta(seconds=30), number)
                    g.add(ev.TICKET_CALLED, start, number=number, service=svc, counter=counter)
                    g.add(
                        ev.TICKET_DONE,
                        start + timedelta(seconds=handle),
                        number=number,
                        service=svc,
                        counter=counter,
                    )
    return g.summary()


def flagged(day: DaySummary) -> tuple[list[str], list[int]]:
    out = find_outliers(day.tickets)
    assert out["model"]["fitted"]
    tickets = sorted(n for (_, n), o in out["tickets"].items() if o["flag"])
    counters = sorted(c for c, o in out["counters"].items() if o["flag"])
    return tickets, counters


def planted_number() -> str:
    # The ticket numbered in busy_day's loop at hour 10, service A, counter 2, rep 1.
    k = 1 * 2 * 5 * 4 + 0 * 5 * 4 + 1 * 4 + 1 + 1
    return f"A{k:03d}"


def test_clean_data_flags_nothing() -> None:
    assert flagged(busy_day()) == ([], [])


def test_a_planted_slow_ticket_is_flagged_and_nothing_else() -> None:
    tickets, counters = flagged(busy_day(slow_ticket=True))
    assert tickets == [planted_number()]
    assert counters == []
    rep = build_report(SPEC, [busy_day(slow_ticket=True)], {})
    [listed] = rep["outliers"]["tickets"]
    assert listed["number"] == planted_number() and listed["counter"] == 2
    assert listed["z"] > 3 and listed["hour"] == 10
    assert 4.0 < listed["handle_s"] / listed["expected_s"] < 6.0


def test_a_planted_slow_counter_is_flagged_but_its_tickets_are_explained() -> None:
    tickets, counters = flagged(busy_day(slow_counter=4))
    assert counters == [4]
    assert tickets == []
    rep = build_report(SPEC, [busy_day(slow_counter=4)], {})
    c4 = row(rep, "counters", 4)["outlier"]
    assert c4["flag"] and 1.8 < c4["ratio"] < 2.2
    assert not row(rep, "counters", 3)["outlier"]["flag"]
    assert [c["counter"] for c in rep["outliers"]["counters"]] == [4]


def test_too_few_tickets_give_no_model_and_say_why() -> None:
    out = find_outliers(the_friday().summary().tickets)
    assert not out["model"]["fitted"] and "fewer than" in out["model"]["reason"]
    assert out["tickets"] == {} and out["counters"] == {}


def test_day_bounds_run_from_reset_hour_to_reset_hour() -> None:
    start, end = day_bounds(SPEC, FRIDAY)
    assert start == datetime(2026, 11, 27, 4, tzinfo=TZ)
    assert end == datetime(2026, 11, 28, 4, tzinfo=TZ)

"""Hostile values for every command type: each is refused with a domain error or applied, and
nothing it leaves in the log can stop the replay, the snapshot, the next day or a restart.

Every field of every command gets, now and then, a value no adapter should send: times at
the calendar's edges with offsets up to ±23:59 or none, empty and huge strings, NUL, lone
surrogates, bidi overrides, huge and negative numbers, booleans, nested lists and dicts.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.engine import DAY_STARTED, Engine
from hall_daemon.events import Event, StoredEvent
from hall_daemon.forecast import make_forecaster
from hall_daemon.model import (
    CounterSpec,
    DomainError,
    HallSpec,
    OpeningWindow,
    ServiceSpec,
)
from hall_daemon.state import HallState

pytestmark = pytest.mark.unit

TZ = timezone(timedelta(hours=8))
BASE = datetime(2026, 12, 7, 9, 0, tzinfo=TZ)  # a Monday morning
SPEC = HallSpec(
    services=(
        ServiceSpec("A", "General", "A", 1),
        ServiceSpec("B", "Tax", "B", 2, hours=(OpeningWindow(time(9), time(17)),)),
        ServiceSpec("C", "Permits", "C", 3, daily_limit=3),
    ),
    counters=(
        CounterSpec(1, "Counter 1", ("A", "B")),
        CounterSpec(2, "Counter 2", ("B", "A")),
        CounterSpec(3, "Counter 3", ("C", "A")),
    ),
    timezone="Asia/Shanghai",
)

# -- hostile values -----------------------------------------------------------------------
offsets = st.one_of(
    st.sampled_from([timedelta(hours=-14), timedelta(hours=14), timedelta(0)]),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timedelta(minutes=m)),
    st.integers(-86399, 86399).map(lambda s: timedelta(seconds=s)),
).map(timezone)
edge_times = st.sampled_from(
    [
        datetime.fromisoformat("9999-12-31T20:00-14:00"),
        datetime.fromisoformat("9999-12-31T23:00-14:00"),
        datetime.fromisoformat("9999-12-31T23:59:59+00:00"),
        datetime.max.replace(tzinfo=timezone(-timedelta(hours=23, minutes=59))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=23, minutes=59))),
        datetime.min.replace(tzinfo=timezone(timedelta(hours=23, minutes=59))),
        datetime.min.replace(tzinfo=timezone(-timedelta(hours=23, minutes=59))),
        datetime.max,
        datetime.min,
        datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
    ]
)
any_times = st.one_of(
    edge_times,
    st.datetimes(timezones=st.one_of(st.none(), offsets)),
    # Near now, so that some of them pass and build appointments, with odd offsets.
    st.integers(-500 * 86400, 500 * 86400).flatmap(
        lambda s: offsets.map(lambda tz: (BASE + timedelta(seconds=s)).astimezone(tz))
    ),
)
nasty_texts = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "A\x00",
        "\ud800",
        "ok\udfff",
        "\u202eA",
        "A\u200f",
        "a\nb",
        "\t",
        "x" * 100_000,
        "A" * 65,
        "٣",
        "²",
        "１２",
        "A/+/#",
        "🎫" * 30,
        "办事大厅",
    ]
)
texts = st.one_of(
    nasty_texts, st.text(max_size=80), st.text(st.characters(codec=None), max_size=20)
)
ints = st.one_of(
    st.sampled_from([0, -1, 1000, 10**5000, -(10**5000), 2**63, True, False]),
    st.integers(),
)
nested: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
garbage = st.one_of(texts, ints, any_times, nested, st.floats())

# Values that usually pass, so that hostile ones meet a hall with tickets and appointments.
services = st.sampled_from(["A", "A", "B", "C", "Z"])
counters = st.sampled_from([1, 1, 2, 3])
refs = st.sampled_from(["A001", "A002", "B001", "C001", "tok-1", "tok-2"])
codes = st.sampled_from(["ap1", "ap2"])
tokens = st.integers(1, 40).map(lambda i: f"tok-{i}")
numbers = st.sampled_from(["1", "2", "A001", "12"])
scores = st.integers(1, 5)


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a good value; one time in five anything at all."""
    return st.one_of(good, good, good, good, garbage)


@st.composite
def appointment_times(draw: st.DrawFn) -> tuple[Any, Any]:
    if draw(st.integers(0, 2)) == 0:
        return draw(field(any_times)), draw(field(any_times))
    start = BASE + timedelta(minutes=draw(st.integers(-60, 600)))
    start = start.astimezone(draw(offsets))
    return start, start + timedelta(minutes=draw(st.integers(-30, 13 * 60)))


@st.composite
def upserts(draw: st.DrawFn) -> c.UpsertAppointment:
    start, end = draw(appointment_times())
    return c.UpsertAppointment(BASE, draw(field(codes)), draw(field(services)), start, end)


def built(cls: type, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, at=st.just(BASE), **{k: field(v) for k, v in fields.items()})


at_counter = [
    built(cls, counter=counters)
    for cls in (
        c.CallNext,
        c.Recall,
        c.Serving,
        c.Done,
        c.NoShow,
        c.Suspend,
        c.Resume,
        c.OpenCounter,
        c.PauseCounter,
        c.TogglePause,
        c.CloseCounter,
    )
]
commands = st.one_of(
    built(
        c.TakeTicket,
        service=services,
        token=tokens,
        channel=st.sampled_from(["dispenser", "remote", "counter"]),
        priority=st.booleans(),
        number=st.sampled_from([None, None, None, "A009", "B010"]),
    ),
    built(c.TakeTicket, service=services, token=tokens),
    built(c.CheckIn, code=codes, token=tokens),
    *at_counter,
    built(c.CallNumber, counter=counters, number=numbers),
    built(c.Transfer, counter=counters, service=services),
    built(c.Cancel, ticket=refs, reason=st.sampled_from(["cancelled", "app"])),
    built(c.Rate, counter=counters, score=scores),
    upserts(),
    upserts(),
    built(c.CancelAppointment, code=codes),
    built(
        c.ReportDevice,
        device=st.sampled_from(["d1", "d2"]),
        port=st.just("/dev/ttyUSB0"),
        kind=st.just("dispenser"),
        state=st.sampled_from(["online", "offline", "fault"]),
        detail=st.sampled_from(["", "paper-low"]),
    ),
    built(c.MoveTicket, ticket=refs, service=services),
    built(c.SetNotice, text=st.sampled_from(["", "维护 notice", " a\nb "])),
    built(c.RequestReprint, ticket=refs),
    built(c.ReplayCall, ticket=st.none() | refs, counter=st.none() | counters),
    built(c.Tick),
)
# Seconds to minutes apart, now and then a hostile clock of its own.
steps = st.lists(
    st.tuples(st.integers(0, 900), commands, st.one_of(st.none(), st.none(), garbage)),
    min_size=10,
    max_size=60,
)


# -- the checks ---------------------------------------------------------------------------
def storable(e: Event, seq: int) -> StoredEvent:
    """What the store does to an event (its time in full isoformat, its data as JSON text),
    and the MQTT outbox (the contract's line): UTF-8 both, no NUL for PostgreSQL."""
    stored = StoredEvent(seq, f"id-{seq}", e.type, e.at, e.data)
    line = ev.dumps(stored)
    assert "\x00" not in line and "\\u0000" not in line
    line.encode("utf-8")  # a lone surrogate raises here
    ev.loads(line)
    data = json.loads(json.dumps(e.data, ensure_ascii=False).encode("utf-8"))
    return StoredEvent(seq, stored.id, e.type, datetime.fromisoformat(e.at.isoformat()), data)


def json_round_trip(state: HallState) -> dict[str, Any]:
    d = state.to_dict()
    text = json.dumps(d, ensure_ascii=False)
    text.encode("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def recovered(log: list[StoredEvent], snapshot_at: int, snapshot: dict[str, Any]) -> Engine:
    engine = Engine(SPEC, state=HallState.from_dict(SPEC, snapshot))
    engine.replay(e.event for e in log[snapshot_at:])
    return engine


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps)
def test_hostile_commands_are_refused_or_applied_and_leave_a_log_that_recovers(
    run: list[tuple[int, c.Command, Any]],
) -> None:
    forecaster = make_forecaster(SPEC, replications=4)
    engine = Engine(SPEC, forecaster=forecaster)
    log: list[StoredEvent] = []
    middle: tuple[int, dict[str, Any]] | None = None
    clock = BASE
    for i, (gap, cmd, hostile_at) in enumerate(run):
        clock += timedelta(seconds=gap)
        at = clock if hostile_at is None else hostile_at
        if isinstance(cmd, c.UpsertAppointment) and hostile_at is None:
            shift = clock - BASE
            cmd = dataclasses.replace(cmd, at=at, start=_shift(cmd.start, shift))
            cmd = dataclasses.replace(cmd, end=_shift(cmd.end, shift))
        else:
            cmd = dataclasses.replace(cmd, at=at)
        try:
            out = engine.execute(cmd)
        except DomainError as exc:
            out = exc.events
            assert all(e.type in (ev.TICKET_CANCELLED, ev.COUNTER_CLOSED, DAY_STARTED) for e in out)
            assert isinstance(exc.message, str) and len(exc.message) < 1000
        for e in out:
            stored = storable(e, len(log) + 1)
            log.append(stored)
            forecaster.learn(stored, engine.state)
        if i == len(run) // 2:
            middle = (len(log), json_round_trip(engine.state))
    live = engine.state.to_dict()

    # The state replays from the log, from scratch and from a snapshot.
    scratch = Engine(SPEC)
    scratch.replay(e.event for e in log)
    assert scratch.state.to_dict() == live
    assert HallState.from_dict(SPEC, json_round_trip(engine.state)).to_dict() == live
    assert middle is not None
    assert recovered(log, *middle).state.to_dict() == live
    forecaster.outlook(engine.state, clock)

    # The next day begins, live and after a restart (a command's own clock may have run ahead).
    tomorrow = max([clock, *(e.at for e in log)]) + timedelta(days=1)
    for hall in (engine, recovered(log, *middle), scratch):
        out = hall.execute(c.Tick(tomorrow))
        assert [e.type for e in out][-1:] == [DAY_STARTED]
        for e in out:
            storable(e, 1)
        taken = hall.execute(c.TakeTicket(tomorrow, "A", "tok-tomorrow"))
        assert taken[-1].type == ev.TICKET_ISSUED


def _shift(value: Any, by: timedelta) -> Any:
    try:
        return value + by if isinstance(value, datetime) else value
    except OverflowError:
        return value


# -- the item of issue 17 that this guards ------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-31T20:00-14:00", "9999-12-31T23:00-14:00"),
        ("2026-12-08T09:00+08:00", "9999-12-31T23:59:59Z"),
        ("2026-12-08T09:00+08:00", "2026-12-08T21:01+08:00"),  # over 12 hours
        ("2028-01-20T09:00+08:00", "2028-01-20T10:00+08:00"),  # beyond 400 days
        ("2025-11-01T09:00+08:00", "2025-11-01T10:00+08:00"),  # 400 days ago
    ],
)
def test_an_appointment_the_contract_does_not_allow_is_refused_with_bad_time(
    start: str, end: str
) -> None:
    engine = Engine(SPEC)
    engine.execute(c.Tick(BASE))
    cmd = c.UpsertAppointment(
        BASE, "ap1", "A", datetime.fromisoformat(start), datetime.fromisoformat(end)
    )
    with pytest.raises(DomainError) as info:
        engine.execute(cmd)
    assert (info.value.code, info.value.slug) == (400, "bad-time")
    assert engine.state.appointments == {}
    engine.execute(c.Tick(BASE + timedelta(days=1)))  # the next day reset works


def test_an_old_log_with_a_year_9999_appointment_still_recovers_and_starts_the_next_day() -> None:
    """Logs written before the limits may hold one: it is dropped on replay."""
    far = {
        "code": "ap9",
        "service": "A",
        "start": "9999-12-31T20:00:00-14:00",
        "end": "9999-12-31T23:00:00-14:00",
    }
    fine = {
        **far,
        "code": "ap1",
        "start": "2026-12-07T10:00+08:00",
        "end": "2026-12-07T11:00+08:00",
    }
    engine = Engine(SPEC)
    engine.replay(
        [
            Event(DAY_STARTED, BASE, {"day": "2026-12-07"}),
            Event(ev.APPOINTMENT_UPSERTED, BASE, fine),
            Event(ev.APPOINTMENT_UPSERTED, BASE, far),
        ]
    )
    assert list(engine.state.appointments) == ["ap1"]
    out = engine.execute(c.Tick(BASE + timedelta(days=1)))
    assert out[-1].type == DAY_STARTED

    # A snapshot written then holds it too: it is dropped when the snapshot is read.
    snapshot = engine.state.to_dict()
    snapshot["appointments"].append({**far, "ticket": None})
    state = HallState.from_dict(SPEC, snapshot)
    assert "ap9" not in state.appointments
    Engine(SPEC, state=state).execute(c.Tick(BASE + timedelta(days=2)))


def test_the_business_day_of_a_time_at_the_calendars_edge_is_its_first_or_last_day() -> None:
    assert SPEC.business_day(datetime.fromisoformat("9999-12-31T23:00-14:00")).year == 9999
    assert SPEC.business_day(datetime.min.replace(tzinfo=UTC)).year == 1

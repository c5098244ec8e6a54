"""Property tests of the queue engine: random command sequences, invariants after every step.

Commands of every type, with valid and invalid arguments, at increasing times that may cross
the hall day's reset hour. After every command: the state is consistent (counters, queues,
suspended lists), every emitted event carries the contract's fields and agrees with the state
it was emitted from, replaying the log rebuilds the state, a snapshot round-trips, and a
refused command changed nothing but the new day it began.
"""

from __future__ import annotations

import dataclasses
from collections import Counter as Multiset
from datetime import datetime, time, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from hall_daemon import events as ev
from hall_daemon.commands import (
    CallNext,
    CallNumber,
    Cancel,
    CancelAppointment,
    CheckIn,
    CloseCounter,
    Command,
    Done,
    MoveTicket,
    NoShow,
    OpenCounter,
    PauseCounter,
    Rate,
    Recall,
    ReplayCall,
    ReportDevice,
    RequestReprint,
    Resume,
    Serving,
    SetNotice,
    Suspend,
    TakeTicket,
    Tick,
    TogglePause,
    Transfer,
    UpsertAppointment,
)
from hall_daemon.engine import DAY_STARTED, Engine
from hall_daemon.events import Event, StoredEvent
from hall_daemon.model import (
    CounterSpec,
    DomainError,
    HallSpec,
    OpeningWindow,
    PolicySpec,
    ServiceSpec,
)
from hall_daemon.state import (
    CALLED,
    CLOSED,
    OPEN,
    SERVING,
    SUSPENDED,
    TERMINAL,
    WAITING,
    HallState,
    Ticket,
)

pytestmark = pytest.mark.unit

TZ = timezone(timedelta(hours=8))
BASE = datetime(2024, 3, 4, 9, 0, tzinfo=TZ)  # a Monday morning


def make_spec(policy: PolicySpec) -> HallSpec:
    office_hours = OpeningWindow(time(9), time(17), frozenset(range(1, 6)))
    return HallSpec(
        services=(
            ServiceSpec("A", "General", "A", 1),
            ServiceSpec("B", "Tax", "B", 2, hours=(office_hours,)),
            ServiceSpec("C", "Permits", "C", 3, daily_limit=3),
        ),
        counters=(
            CounterSpec(1, "Counter 1", ("A", "B")),
            CounterSpec(2, "Counter 2", ("B", "A")),
            CounterSpec(3, "Counter 3", ("C", "A")),
        ),
        timezone="Asia/Shanghai",
        day_reset_hour=4,
        policy=policy,
    )


# -- strategies -------------------------------------------------------------------------------
policies = st.builds(
    PolicySpec,
    name=st.sampled_from(["weighted-wait", "fifo"]),
    priority_streak_limit=st.sampled_from([0, 1, 3]),
    preference_decay=st.sampled_from([0.5, 1.0]),
    no_show_after_recalls=st.sampled_from([0, 1, 3]),
)
T0 = st.just(BASE)  # every command's time is set when it runs
FRESH = "fresh"  # a new token is made when the command runs
BUSY = 0  # a counter with a ticket at hand (one with suspended tickets for Resume), else 1
counters = st.sampled_from([BUSY, BUSY, BUSY, 1, 2, 3, 9])
services = st.sampled_from(["A", "A", "A", "B", "B", "C", "Z"])
tokens = st.integers(1, 30).map(lambda i: f"tok{i}")  # the first 30 made, reused
new_tokens = st.sampled_from([FRESH, FRESH, FRESH, FRESH, "tok1"])
numbers = st.builds(lambda p, n: f"{p}{n:03d}", st.sampled_from("ABC"), st.integers(0, 8))
digits = st.sampled_from(["1", "2", "3", "4", "01", "002", "0", "1000", " 2 ", "X1"])
codes = st.sampled_from(["ap1", "ap2", "nope"])
new_codes = st.sampled_from(["ap1", "ap1", "ap1", "ap2", "ap2", "ap2", "", "x" * 65])


@st.composite
def upserts(draw: st.DrawFn) -> UpsertAppointment:
    start = BASE + timedelta(seconds=draw(st.integers(-1800, 2400)))
    end = start + timedelta(seconds=draw(st.integers(-300, 3600)))
    service = draw(st.sampled_from(["A", "B", "C", "Z"]))
    return UpsertAppointment(BASE, draw(new_codes), service, start, end)


takes = st.builds(
    TakeTicket,
    at=T0,
    service=services,
    token=new_tokens,
    channel=st.sampled_from(["dispenser", "remote", "counter"]),
    priority=st.sampled_from([False, False, True]),
    number=st.sampled_from([None] * 25 + ["A005", "B002", "C001", "A1", "Z001", "a002", "B999"]),
)
call_next = st.builds(CallNext, at=T0, counter=counters)
# Weighted: tickets have to be taken and called for the rest to have something to act on.
checkins = st.builds(CheckIn, at=T0, code=codes, token=new_tokens)
at_counter = [
    st.builds(CallNumber, at=T0, counter=counters, number=st.one_of(digits, numbers)),
    st.builds(Recall, at=T0, counter=counters),
    st.builds(Serving, at=T0, counter=counters),
    st.builds(Done, at=T0, counter=counters),
    st.builds(NoShow, at=T0, counter=counters),
    st.builds(Suspend, at=T0, counter=counters),
    st.builds(Resume, at=T0, counter=counters),
    st.builds(Transfer, at=T0, counter=counters, service=services),
    st.builds(Rate, at=T0, counter=counters, score=st.integers(0, 6)),
]
others = [
    st.builds(OpenCounter, at=T0, counter=counters),
    st.builds(PauseCounter, at=T0, counter=counters),
    st.builds(TogglePause, at=T0, counter=counters),
    st.builds(CloseCounter, at=T0, counter=counters),
    st.builds(
        Cancel,
        at=T0,
        ticket=st.one_of(numbers, tokens),
        reason=st.sampled_from(["cancelled", "app"]),
    ),
    upserts(),
    st.builds(CancelAppointment, at=T0, code=codes),
    st.builds(
        ReportDevice,
        at=T0,
        device=st.sampled_from(["d1", "d2"]),
        port=st.just("/dev/ttyUSB0"),
        kind=st.just("dispenser"),
        state=st.sampled_from(["online", "offline", "fault", "bogus"]),
        detail=st.sampled_from(["", "paper"]),
    ),
    st.builds(Tick, at=T0),
    # The admin's actions.
    st.builds(MoveTicket, at=T0, ticket=st.one_of(numbers, tokens), service=services),
    st.builds(MoveTicket, at=T0, ticket=st.one_of(numbers, tokens), service=services),
    st.builds(SetNotice, at=T0, text=st.sampled_from(["", "维护 notice", " a\nb ", "x" * 501])),
    st.builds(RequestReprint, at=T0, ticket=st.one_of(numbers, tokens)),
    st.builds(
        ReplayCall,
        at=T0,
        ticket=st.one_of(st.none(), numbers),
        counter=st.one_of(st.none(), counters),
    ),
]
# Weighted so that tickets are taken and called often enough for the rest to act on them.
commands: st.SearchStrategy[Command] = st.sampled_from(
    [takes] * 6 + [call_next] * 5 + at_counter * 2 + others + [upserts()] * 2 + [checkins] * 3
).flatmap(lambda strategy: strategy)


@st.composite
def gaps(draw: st.DrawFn) -> int:
    """Mostly seconds to minutes apart; now and then hours, so a run may cross 04:00."""
    if draw(st.integers(0, 14)) == 0:
        return draw(st.sampled_from([3600, 5 * 3600, 20 * 3600]))
    return draw(st.integers(0, 300))


runs = st.lists(st.tuples(gaps(), commands), min_size=20, max_size=100)


def timed(cmd: Command, when: datetime, fresh: str, state: HallState) -> Command:
    """The command as it runs at `when`.

    An appointment's window moves with it; FRESH becomes the token `fresh`; BUSY becomes a
    counter that has something to act on, if any.
    """
    if isinstance(cmd, UpsertAppointment):
        shift = when - BASE
        return dataclasses.replace(cmd, at=when, start=cmd.start + shift, end=cmd.end + shift)
    if isinstance(cmd, TakeTicket | CheckIn) and cmd.token == FRESH:
        return dataclasses.replace(cmd, at=when, token=fresh)
    if getattr(cmd, "counter", None) == BUSY:
        busy = [
            c.id
            for c in state.counters.values()
            if (c.suspended if isinstance(cmd, Resume) else c.current is not None)
        ]
        return dataclasses.replace(cmd, at=when, counter=busy[0] if busy else 1)  # type: ignore[call-arg]
    return dataclasses.replace(cmd, at=when)


# -- the contract ---------------------------------------------------------------------------
TICKET_AT_COUNTER = {"number", "service", "counter"}
REQUIRED: dict[str, set[str]] = {
    ev.TICKET_ISSUED: {"number", "service", "priority", "channel", "ahead", "forecast", "token"},
    ev.TICKET_CALLED: TICKET_AT_COUNTER,
    ev.TICKET_RECALLED: TICKET_AT_COUNTER,
    ev.TICKET_SERVING: TICKET_AT_COUNTER,
    ev.TICKET_DONE: TICKET_AT_COUNTER,
    ev.TICKET_NO_SHOW: TICKET_AT_COUNTER,
    ev.TICKET_SUSPENDED: TICKET_AT_COUNTER,
    ev.TICKET_RESUMED: TICKET_AT_COUNTER,
    ev.TICKET_TRANSFERRED: {"number", "from", "to", "counter"},
    ev.TICKET_CANCELLED: {"number", "service", "reason"},
    ev.TICKET_RATED: {"number", "service", "counter", "score"},
    ev.COUNTER_OPENED: {"counter", "services"},
    ev.COUNTER_PAUSED: {"counter"},
    ev.COUNTER_CLOSED: {"counter"},
    ev.DEVICE_ONLINE: {"device", "port", "kind", "detail"},
    ev.DEVICE_OFFLINE: {"device", "port", "kind", "detail"},
    ev.DEVICE_FAULT: {"device", "port", "kind", "detail"},
    ev.APPOINTMENT_UPSERTED: {"code", "service", "start", "end"},
    ev.APPOINTMENT_CANCELLED: {"code"},
    DAY_STARTED: {"day"},
    ev.NOTICE_SET: {"text"},
    ev.REPRINT_REQUESTED: {"number", "service"},
    ev.REPLAY_REQUESTED: TICKET_AT_COUNTER,
}
TERMINAL_EVENTS = {ev.TICKET_DONE, ev.TICKET_NO_SHOW, ev.TICKET_CANCELLED}


def expected_pick(state: HallState, counter_id: int, now: datetime) -> Ticket | None:
    """The calling policy, recomputed by brute force over all tickets (not the queues).

    Urgent tickets first unless the counter called `priority_streak_limit` of them in a row
    and a normal one waits; then fifo: the earliest issued; weighted-wait: the longest wait
    (+1 s) times preference_decay**rank, ties to the earlier issued.
    """
    spec = state.spec.policy
    counter = state.counters[counter_id]
    waiting = [
        t for t in state.tickets.values() if t.state == WAITING and t.service in counter.services
    ]
    urgent = [t for t in waiting if t.urgent]
    normal = [t for t in waiting if not t.urgent]
    starving = counter.priority_streak >= spec.priority_streak_limit
    pool = urgent if urgent and not (starving and normal) else normal
    if not pool:
        return None
    if spec.name == "fifo":
        return min(pool, key=lambda t: t.key)

    def score(t: Ticket) -> tuple[float, float, int]:
        rank = counter.services.index(t.service)
        wait = max(now.timestamp() - t.key[0], 0.0) + 1.0
        return (-wait * spec.preference_decay**rank, *t.key)

    return min(pool, key=score)


class Hall:
    """Runs commands and checks everything after each one."""

    def __init__(self, spec: HallSpec) -> None:
        self.spec = spec
        self.engine = Engine(spec)
        self.shadow = Engine(spec)  # fed only the emitted events
        self.log: list[Event] = []
        self.day = 0  # hall days begun so far
        self.lives: dict[tuple[int, str], list[str]] = {}  # (day, number) -> its ticket events

    def run(self, cmd: Command) -> None:
        before = self.engine.state.to_dict()
        state = self.engine.state
        expected_call, expected_recall = None, None
        if isinstance(cmd, CallNext) and cmd.counter in state.counters:
            expected_call = expected_pick(state, cmd.counter, cmd.at)
        if isinstance(cmd, Recall) and cmd.counter in state.counters:
            number = state.counters[cmd.counter].current
            if number is not None:
                t, k = state.tickets[number], self.spec.policy.no_show_after_recalls
                no_show = k and t.recalls >= k and t.state == CALLED
                expected_recall = (ev.TICKET_NO_SHOW if no_show else ev.TICKET_RECALLED, number)
        try:
            out = self.engine.execute(cmd)
            error: DomainError | None = None
        except DomainError as exc:
            out, error = exc.events, exc
        for e in out:
            assert e.at == cmd.at
            self.observe(e)
        if error is not None:
            # Nothing changed but the new day it began: the state before, plus its events.
            assert all(e.type in (ev.TICKET_CANCELLED, ev.COUNTER_CLOSED, DAY_STARTED) for e in out)
            expected = Engine(self.spec, state=HallState.from_dict(self.spec, before))
            expected.replay(out)
            assert expected.state.to_dict() == self.engine.state.to_dict()
        elif isinstance(cmd, CallNext) and not any(e.type == DAY_STARTED for e in out):
            calls = [e.data["number"] for e in out if e.type == ev.TICKET_CALLED]
            assert calls == ([expected_call.number] if expected_call else [])
        elif isinstance(cmd, Recall) and not any(e.type == DAY_STARTED for e in out):
            assert [(e.type, e.data["number"]) for e in out] == [expected_recall]
        self.check_state()

    # -- every event: its fields, and agreement with the state it was emitted from --------
    def observe(self, e: Event) -> None:
        d, s = e.data, self.shadow.state
        assert e.type in REQUIRED, e.type
        missing = REQUIRED[e.type] - d.keys()
        assert not missing, (e.type, missing)
        ev.loads(ev.dumps(StoredEvent(len(self.log) + 1, "id", e.type, e.at, d)))  # JSON-able
        if e.type.startswith("ticket."):
            self.observe_ticket(e, s)
        elif e.type.startswith("counter."):
            counter = s.counters[d["counter"]]
            if e.type == ev.COUNTER_OPENED:
                assert counter.state != OPEN
                assert d["services"] == list(counter.services)
            elif e.type == ev.COUNTER_PAUSED:
                assert counter.state == OPEN
            else:
                assert counter.state != CLOSED
        elif e.type.startswith("device."):
            assert s.devices.get(d["device"]) != (e.type.split(".")[1], d["detail"])
        elif e.type == ev.NOTICE_SET:
            assert d["text"] != s.notice and len(d["text"]) <= 500 and "\n" not in d["text"]
        elif e.type == ev.REPRINT_REQUESTED:
            t = s.tickets[d["number"]]
            assert not t.finished and d["service"] == t.service
        elif e.type == ev.REPLAY_REQUESTED:
            t = s.tickets[d["number"]]
            assert t.state in (CALLED, SERVING) and t.counter == d["counter"]
            assert s.counters[d["counter"]].current == t.number
        elif e.type == DAY_STARTED:
            assert s.day is None or d["day"] > s.day.isoformat()
            assert all(t.finished for t in s.tickets.values())
            assert all(c.state == CLOSED for c in s.counters.values())
            self.day += 1
        self.shadow.apply(e)
        self.log.append(e)

    def observe_ticket(self, e: Event, s: HallState) -> None:
        d, kind = e.data, e.type
        life = self.lives.setdefault((self.day, d["number"]), [])
        if kind == ev.TICKET_ISSUED:
            assert life == [], f"{d['number']} issued twice on one day"
            assert d["number"] not in s.tickets
            assert d["token"] not in s.by_token
            assert d["number"][:-3] == s.services[d["service"]].prefix
            assert isinstance(d["priority"], bool)
            assert d["channel"] in ("dispenser", "remote", "appointment", "counter")
            urgent = d["priority"] or "appointment" in d
            assert d["ahead"] == s.ahead_if_issued(d["service"], urgent)
            assert set(d["forecast"]) >= {"wait_s", "p10_s", "p90_s", "method"}
            f = d["forecast"]
            assert 0 <= f["p10_s"] <= f["wait_s"] <= f["p90_s"]
            assert (d["channel"] == "appointment") == ("appointment" in d)
            life.append(kind)
            return
        assert life, f"{kind} for {d['number']}, never issued today"
        assert not (set(life) & TERMINAL_EVENTS) or kind == ev.TICKET_RATED, (kind, life)
        life.append(kind)
        t = s.tickets[d["number"]]
        if kind == ev.TICKET_TRANSFERRED:
            assert d["from"] == t.service != d["to"] and d["to"] in s.services
        else:
            assert d["service"] == t.service
        # Every ticket event names the appointment the ticket came from (the contract requires
        # it of done, no_show, suspended and resumed; the others carry it too).
        assert d.get("appointment") == t.appointment
        counter = s.counters[d["counter"]] if d.get("counter") is not None else None
        if kind == ev.TICKET_CALLED:
            assert counter is not None and counter.state == OPEN and counter.current is None
            assert t.state == WAITING and t.service in counter.services
        elif kind == ev.TICKET_RESUMED:
            assert t.state == SUSPENDED and counter is not None and counter.state == OPEN
        elif kind in (ev.TICKET_RECALLED, ev.TICKET_DONE, ev.TICKET_SUSPENDED):
            assert counter is not None and counter.current == t.number
            assert t.state in (CALLED, SERVING)
        elif kind == ev.TICKET_TRANSFERRED and d["counter"] is None:
            assert t.state == WAITING  # an admin's move of a waiting ticket
        elif kind == ev.TICKET_TRANSFERRED:
            assert counter is not None and counter.current == t.number
        elif kind in (ev.TICKET_SERVING, ev.TICKET_NO_SHOW):
            assert counter is not None and counter.current == t.number
            assert t.state == CALLED  # an applicant who arrived is never a no-show
        elif kind == ev.TICKET_CANCELLED:
            assert not t.finished
            at_counter = t.state in (CALLED, SERVING)
            assert d.get("counter") == (t.counter if at_counter else None)
        elif kind == ev.TICKET_RATED:
            assert counter is not None and counter.last == t.number
            assert not t.rated and 1 <= d["score"] <= 5

    # -- the state after every command ----------------------------------------------------
    def check_state(self) -> None:
        s = self.engine.state
        d = s.to_dict()
        assert self.shadow.state.to_dict() == d  # the log alone rebuilds the hall
        restored = HallState.from_dict(self.spec, d)
        assert restored.to_dict() == d
        assert restored.urgent_queue == s.urgent_queue
        assert restored.normal_queue == s.normal_queue

        # tickets at counters
        current = [c.current for c in s.counters.values() if c.current is not None]
        assert len(current) == len(set(current))
        for c in s.counters.values():
            if c.state == CLOSED:
                assert c.current is None
            if c.current is not None:
                t = s.tickets[c.current]
                assert t.state in (CALLED, SERVING) and t.counter == c.id
            if c.last is not None:
                assert c.last in s.tickets
            assert len(c.suspended) == len(set(c.suspended))
            for n in c.suspended:
                assert s.tickets[n].state == SUSPENDED and s.tickets[n].counter == c.id
        at_counters = {n for c in s.counters.values() for n in c.suspended}
        for t in s.tickets.values():
            if t.state in (CALLED, SERVING):
                assert t.counter is not None and s.counters[t.counter].current == t.number
            if t.state == SUSPENDED:
                assert t.number in at_counters
            assert s.by_token[t.token] is t
            assert (t.finished_at is not None) == (t.state in TERMINAL)
        assert len(s.by_token) == len(s.tickets)

        # queues: every waiting ticket in exactly one queue, once; nothing else in them
        seen: Multiset[tuple[float, int]] = Multiset()
        for code in s.services:
            for urgent, q in ((True, s.urgent_queue[code]), (False, s.normal_queue[code])):
                assert q == sorted(q)
                for key in q:
                    t = s.by_key[key]
                    assert (t.state, t.service, t.urgent, t.key) == (WAITING, code, urgent, key)
                    assert s.tickets[t.number] is t
                seen.update(q)
            assert s.waiting(code) == sum(
                1 for t in s.tickets.values() if t.state == WAITING and t.service == code
            )
        assert all(n == 1 for n in seen.values())
        assert set(seen) == set(s.by_key)
        assert set(seen) == {t.key for t in s.tickets.values() if t.state == WAITING}

    def finish(self, when: datetime) -> None:
        """Close the last day, then check every ticket's whole life and the JSON replay."""
        self.run(Tick(when + timedelta(days=1)))
        for (_, number), life in self.lives.items():
            assert life[0] == ev.TICKET_ISSUED
            terminal = [k for k in life if k in TERMINAL_EVENTS]
            assert len(terminal) == 1, (number, life)
            after = life[life.index(terminal[0]) + 1 :]
            assert set(after) <= {ev.TICKET_RATED}, (number, life)
        fresh = Engine(self.spec)
        for seq, e in enumerate(self.log, 1):
            fresh.apply(ev.loads(ev.dumps(StoredEvent(seq, str(seq), e.type, e.at, e.data))).event)
        assert fresh.state.to_dict() == self.engine.state.to_dict()


@pytest.mark.unit
@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(policy=policies, run=runs)
def test_random_command_sequences_keep_the_invariants(
    policy: PolicySpec, run: list[tuple[int, Command]]
) -> None:
    hall = Hall(make_spec(policy))
    when = BASE
    for i, (gap, cmd) in enumerate(run, 1):
        when += timedelta(seconds=gap)
        actual = timed(cmd, when, f"tok{i}", hall.engine.state)
        note(repr(actual))
        hall.run(actual)
    hall.finish(when)

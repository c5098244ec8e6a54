"""Example tests of the queue engine: every command, every refusal, as a hall would see them.

The hall: services A (always open), B (always open) and C (Mon-Fri 09:00-17:00, 3 tickets a
day); counter 1 serves A then B, counter 2 serves B then A, counter 3 serves C then A.
2024-03-04 is a Monday; the hall day changes at 04:00 Asia/Shanghai (+08:00).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from unittest.mock import ANY

import pytest

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
    Conflict,
    CounterSpec,
    DomainError,
    HallSpec,
    Invalid,
    LimitReached,
    NotFound,
    OpeningWindow,
    PolicySpec,
    ServiceSpec,
)
from hall_daemon.state import HallState

pytestmark = pytest.mark.unit

TZ = timezone(timedelta(hours=8))
MONDAY = 4  # 2024-03-04


def at(hour: int, minute: int = 0, second: int = 0, day: int = MONDAY) -> datetime:
    return datetime(2024, 3, day, hour, minute, second, tzinfo=TZ)


def make_spec(**policy: Any) -> HallSpec:
    office_hours = OpeningWindow(time(9), time(17), frozenset(range(1, 6)))
    return HallSpec(
        services=(
            ServiceSpec("A", "General", "A", 1),
            ServiceSpec("B", "Tax", "B", 2),
            ServiceSpec("C", "Permits", "C", 3, hours=(office_hours,), daily_limit=3),
        ),
        counters=(
            CounterSpec(1, "Counter 1", ("A", "B")),
            CounterSpec(2, "Counter 2", ("B", "A")),
            CounterSpec(3, "Counter 3", ("C", "A")),
        ),
        timezone="Asia/Shanghai",
        day_reset_hour=4,
        policy=PolicySpec(**policy),
    )


Seen = list[tuple[str, dict[str, Any]]]


class Hall:
    """An engine plus the log of every event it emitted (including those on refusals)."""

    def __init__(self, start: datetime | None = None, **policy: Any) -> None:
        self.spec = make_spec(**policy)
        self.engine = Engine(self.spec)
        self.log: list[Event] = []
        self.tokens = 0
        first = self.do(Tick(start or at(8)))
        day = self.spec.business_day(start or at(8)).isoformat()
        assert first == [(DAY_STARTED, {"day": day})]

    @property
    def state(self) -> HallState:
        return self.engine.state

    def do(self, cmd: Command) -> Seen:
        out = self.engine.execute(cmd)
        self.log.extend(out)
        return [(e.type, e.data) for e in out]

    def fails(self, cmd: Command, kind: type[DomainError], slug: str) -> DomainError:
        """The command is refused with `kind`/`slug`; nothing changes apart from its .events."""
        before = self.state.to_dict()
        with pytest.raises(kind) as info:
            self.engine.execute(cmd)
        err = info.value
        assert type(err) is kind and err.slug == slug
        self.log.extend(err.events)
        if not err.events:
            assert self.state.to_dict() == before
        return err

    def token(self) -> str:
        self.tokens += 1
        return f"tok-{self.tokens}"

    def take(self, service: str, when: datetime, **kw: Any) -> str:
        out = self.do(TakeTicket(when, service, kw.pop("token", None) or self.token(), **kw))
        assert out[-1][0] == ev.TICKET_ISSUED
        number: str = out[-1][1]["number"]
        return number

    def waiting(self, service: str) -> list[str]:
        return [t.number for t in self.state.waiting_tickets(service)]

    def ticket_state(self, number: str) -> str:
        return self.state.tickets[number].state


def opened(counter: int, services: list[str]) -> tuple[str, dict[str, Any]]:
    return (ev.COUNTER_OPENED, {"counter": counter, "services": services})


def tev(kind: str, number: str, service: str, counter: int, **more: Any) -> tuple[str, Any]:
    return (kind, {"number": number, "service": service, "counter": counter, **more})


def called(number: str, service: str, counter: int) -> tuple[str, Any]:
    return tev(ev.TICKET_CALLED, number, service, counter)


def done(number: str, service: str, counter: int, **more: Any) -> tuple[str, Any]:
    return tev(ev.TICKET_DONE, number, service, counter, **more)


# -- the hall day ---------------------------------------------------------------------------
def test_first_command_ever_starts_the_day_and_only_the_first() -> None:
    engine = Engine(make_spec())
    first = engine.execute(Tick(at(9)))
    assert [(e.type, e.data, e.at) for e in first] == [(DAY_STARTED, {"day": "2024-03-04"}, at(9))]
    assert engine.execute(Tick(at(9, 1))) == []
    assert engine.state.day == date(2024, 3, 4)


def test_first_command_before_the_reset_hour_belongs_to_the_previous_day() -> None:
    hall = Hall(start=at(3, 59, 59, day=5))
    assert hall.state.day == date(2024, 3, 4)
    assert hall.do(Tick(at(4, 0, 0, day=5))) == [(DAY_STARTED, {"day": "2024-03-05"})]


def test_first_command_ever_may_be_a_ticket() -> None:
    engine = Engine(make_spec())
    out = engine.execute(TakeTicket(at(9), "A", "t"))
    assert [e.type for e in out] == [DAY_STARTED, ev.TICKET_ISSUED]
    assert out[1].data["number"] == "A001"


def test_new_day_cancels_unfinished_tickets_closes_counters_and_restarts_numbers() -> None:
    hall = Hall()
    assert [hall.take(s, at(9, i)) for i, s in enumerate("AAB")] == ["A001", "A002", "B001"]
    hall.do(CallNext(at(9, 10), 1))  # A001 called at 1
    assert hall.do(CallNext(at(9, 11), 2))[-1] == called("B001", "B", 2)
    hall.do(Suspend(at(9, 12), 2))  # B001 set aside at 2
    hall.do(OpenCounter(at(9, 13), 3))
    hall.do(PauseCounter(at(9, 14), 3))
    hall.take("A", at(9, 15))  # A003
    hall.do(CallNext(at(9, 16), 3))  # counter 3 takes A002 (weighted wait)
    hall.do(Done(at(9, 17), 3))  # A002 done: finished, not cancelled at day end

    assert hall.do(Tick(at(3, 59, 59, day=5))) == []  # still Monday's hall day
    out = hall.do(TakeTicket(at(4, 0, 0, day=5), "B", "tok-new"))
    assert out == [
        # A001 was called at counter 1; B001 was set aside (not at a counter)
        (
            ev.TICKET_CANCELLED,
            {"number": "A001", "service": "A", "counter": 1, "reason": "day_end"},
        ),
        (ev.TICKET_CANCELLED, {"number": "B001", "service": "B", "reason": "day_end"}),
        (ev.TICKET_CANCELLED, {"number": "A003", "service": "A", "reason": "day_end"}),
        (ev.COUNTER_CLOSED, {"counter": 1}),
        (ev.COUNTER_CLOSED, {"counter": 2}),
        (ev.COUNTER_CLOSED, {"counter": 3}),
        (DAY_STARTED, {"day": "2024-03-05"}),
        (
            ev.TICKET_ISSUED,
            {
                "number": "B001",
                "service": "B",
                "priority": False,
                "channel": "dispenser",
                "ahead": 0,
                "forecast": ANY,
                "token": "tok-new",
            },
        ),
    ]
    s = hall.state
    assert s.day == date(2024, 3, 5)
    assert list(s.tickets) == ["B001"]
    assert set(s.by_token) == {"tok-new"}
    assert [(c.state, c.current, c.suspended, c.last) for c in s.counters.values()] == [
        ("closed", None, [], None)
    ] * 3
    assert hall.take("A", at(4, 1, day=5)) == "A001"
    assert hall.waiting("A") == ["A001"] and hall.waiting("B") == ["B001"]


def test_day_change_before_a_refused_command_is_kept_on_the_error() -> None:
    hall = Hall()
    hall.take("A", at(9))
    err = hall.fails(TakeTicket(at(10, day=5), "Z", "t"), NotFound, "unknown-service")
    assert [(e.type, e.data) for e in err.events] == [
        (ev.TICKET_CANCELLED, {"number": "A001", "service": "A", "reason": "day_end"}),
        (DAY_STARTED, {"day": "2024-03-05"}),
    ]
    assert hall.state.day == date(2024, 3, 5)
    assert hall.state.tickets == {}
    assert hall.do(Tick(at(10, 1, day=5))) == []


def test_naive_command_time_is_invalid() -> None:
    hall = Hall()
    err = hall.fails(Tick(datetime(2024, 3, 4, 9)), Invalid, "invalid")
    assert err.code == 400 and err.events == []


# -- taking tickets -------------------------------------------------------------------------
def test_take_ticket_numbers_ahead_and_forecast() -> None:
    hall = Hall()
    out = hall.do(TakeTicket(at(9), "A", "tok-a1"))
    assert out == [
        (
            ev.TICKET_ISSUED,
            {
                "number": "A001",
                "service": "A",
                "priority": False,
                "channel": "dispenser",
                "ahead": 0,
                # A is served by 3 closed counters: (0+1)*300/3 - 300/6 = 50 s
                "forecast": {"wait_s": 50, "p10_s": 0, "p90_s": 114, "method": "queue-length"},
                "token": "tok-a1",
            },
        )
    ]
    assert hall.take("A", at(9, 1), channel="remote") == "A002"
    assert hall.take("B", at(9, 2)) == "B001"
    out = hall.do(TakeTicket(at(9, 3), "A", "tok-a3", channel="counter"))
    assert out[0][1]["number"] == "A003"
    assert out[0][1]["ahead"] == 2
    assert out[0][1]["channel"] == "counter"
    assert hall.waiting("A") == ["A001", "A002", "A003"]
    assert hall.state.waiting("A") == 3 and hall.state.waiting("B") == 1
    assert hall.state.waiting_for_counter(3) == 3  # C + A
    a3 = hall.state.tickets["A003"]
    assert hall.state.ahead_of(a3) == 2
    assert hall.state.by_token["tok-a3"] is a3
    assert a3.issued_at == at(9, 3) and a3.channel == "counter"


def test_priority_ticket_goes_ahead_of_normal_ones() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    out = hall.do(TakeTicket(at(9, 2), "A", "p", priority=True))
    assert out[0][1]["number"] == "A003"
    assert out[0][1]["priority"] is True
    assert out[0][1]["ahead"] == 0
    assert hall.waiting("A") == ["A003", "A001", "A002"]
    out = hall.do(TakeTicket(at(9, 3), "A", "p2", priority=True))
    assert out[0][1]["ahead"] == 1
    assert hall.do(TakeTicket(at(9, 4), "A", "n"))[0][1]["ahead"] == 4
    assert hall.state.ahead_of(hall.state.tickets["A001"]) == 2


def test_take_ticket_unknown_service() -> None:
    hall = Hall()
    err = hall.fails(TakeTicket(at(9), "Z", "t"), NotFound, "unknown-service")
    assert err.code == 404


@pytest.mark.parametrize(
    "when",
    [at(8, 59, 59), at(17), at(10, day=9)],  # before, at the end, on Saturday
)
def test_take_ticket_outside_opening_hours(when: datetime) -> None:
    hall = Hall(start=when - timedelta(minutes=1))
    err = hall.fails(TakeTicket(when, "C", "t"), Conflict, "service-closed")
    assert err.code == 409
    assert hall.take("A", when) == "A001"  # A has no hours: always open


def test_take_ticket_daily_limit() -> None:
    hall = Hall()
    assert [hall.take("C", at(9, i)) for i in range(3)] == ["C001", "C002", "C003"]
    err = hall.fails(TakeTicket(at(9, 5), "C", "t"), LimitReached, "daily-limit")
    assert err.code == 429
    # cancelling does not give the number back: the limit counts tickets issued
    hall.do(Cancel(at(9, 6), "C001"))
    hall.fails(TakeTicket(at(9, 7), "C", "t2"), LimitReached, "daily-limit")
    # the next day the limit starts again
    assert hall.take("C", at(9, day=5)) == "C001"


def test_take_ticket_duplicate_token() -> None:
    hall = Hall()
    hall.take("A", at(9), token="same")
    hall.fails(TakeTicket(at(9, 1), "B", "same"), Conflict, "duplicate-token")


def test_self_numbering_dispenser() -> None:
    hall = Hall()
    out = hall.do(TakeTicket(at(9), "A", "t1", number="A005"))
    assert out[0][1]["number"] == "A005"
    assert hall.take("A", at(9, 1)) == "A006"  # the host continues after the printed number
    assert hall.take("A", at(9, 2), number="A002") == "A002"  # an unused lower number is fine
    assert hall.take("A", at(9, 3)) == "A007"
    hall.fails(TakeTicket(at(9, 4), "A", "t5", number="A005"), Conflict, "duplicate-number")
    hall.fails(TakeTicket(at(9, 4), "A", "t6", number="A006"), Conflict, "duplicate-number")
    for bad in ["B007", "A000", "A5", "A0005", "a008", "AA008", ""]:
        err = hall.fails(TakeTicket(at(9, 5), "A", "t7", number=bad), Invalid, "bad-number")
        assert err.code == 400
    assert hall.waiting("A") == ["A005", "A006", "A002", "A007"]


def test_numbers_run_out_at_999() -> None:
    hall = Hall()
    assert hall.take("B", at(9), number="B999") == "B999"
    hall.fails(TakeTicket(at(9, 1), "B", "t"), LimitReached, "daily-limit")
    assert hall.take("B", at(9, 2), number="B998") == "B998"


# -- calling --------------------------------------------------------------------------------
def test_call_next_opens_a_closed_counter_and_calls() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    assert hall.do(CallNext(at(9, 5), 1)) == [opened(1, ["A", "B"]), called("A001", "A", 1)]
    c1, a1 = hall.state.counters[1], hall.state.tickets["A001"]
    assert (c1.state, c1.current, c1.since) == ("open", "A001", at(9, 5))
    assert (a1.state, a1.counter, a1.called_at) == ("called", 1, at(9, 5))
    assert hall.waiting("A") == ["A002"]
    assert hall.state.serving_numbers("A") == ["A001"]
    assert [c.id for c in hall.state.open_counters("A")] == [1]

    # with a current ticket: finish it, call the next
    assert hall.do(CallNext(at(9, 6), 1)) == [done("A001", "A", 1), called("A002", "A", 1)]
    assert hall.ticket_state("A001") == "done"
    assert hall.state.tickets["A001"].finished_at == at(9, 6)
    assert hall.state.counters[1].last == "A001"

    # nobody waits: finish and stay idle; then nothing at all
    assert hall.do(CallNext(at(9, 7), 1)) == [done("A002", "A", 1)]
    assert hall.state.counters[1].current is None
    assert hall.do(CallNext(at(9, 8), 1)) == []


def test_call_next_on_a_paused_counter_opens_finishes_and_calls() -> None:
    hall = Hall()
    hall.take("B", at(9))
    hall.take("B", at(9, 1))
    hall.do(CallNext(at(9, 2), 2))
    assert hall.do(PauseCounter(at(9, 3), 2)) == [(ev.COUNTER_PAUSED, {"counter": 2})]
    assert hall.state.counters[2].current == "B001"  # pausing does not finish the ticket
    assert hall.do(CallNext(at(9, 4), 2)) == [
        opened(2, ["B", "A"]),
        done("B001", "B", 2),
        called("B002", "B", 2),
    ]


def test_call_next_on_a_closed_counter_with_nobody_waiting_just_opens_it() -> None:
    hall = Hall()
    assert hall.do(CallNext(at(9), 3)) == [opened(3, ["C", "A"])]
    assert hall.state.counters[3].state == "open"


def test_call_next_unknown_counter() -> None:
    hall = Hall()
    hall.take("A", at(9))
    for cmd in [
        CallNext(at(9, 1), 9),
        CallNumber(at(9, 1), 9, "1"),
        Recall(at(9, 1), 9),
        Serving(at(9, 1), 9),
        Done(at(9, 1), 9),
        NoShow(at(9, 1), 9),
        Suspend(at(9, 1), 9),
        Resume(at(9, 1), 9),
        Transfer(at(9, 1), 9, "B"),
        OpenCounter(at(9, 1), 9),
        PauseCounter(at(9, 1), 9),
        TogglePause(at(9, 1), 9),
        CloseCounter(at(9, 1), 9),
        Rate(at(9, 1), 9, 5),
    ]:
        err = hall.fails(cmd, NotFound, "unknown-counter")
        assert err.code == 404


@pytest.mark.parametrize(("b_issued", "expected"), [(at(9), "A001"), (at(8, 55), "B001")])
def test_weighted_wait_prefers_the_counters_first_service(
    b_issued: datetime, expected: str
) -> None:
    # A waited 300+1 s (weight 1); B waited 600+1 s -> 300.5 or 900+1 s -> 450.5 (weight 0.5)
    hall = Hall(start=at(8, 50))
    hall.take("B", b_issued)
    hall.take("A", at(9, 5))
    out = hall.do(CallNext(at(9, 10), 1))
    assert out[-1] == called(expected, expected[0], 1)


def test_weighted_wait_ties_go_to_the_preferred_service() -> None:
    hall = Hall()
    hall.take("B", at(9))
    hall.take("A", at(9))
    assert hall.do(CallNext(at(9), 1))[-1] == called("A001", "A", 1)
    assert hall.do(CallNext(at(9), 2))[-1] == called("B001", "B", 2)


def test_fifo_takes_strict_issue_order_across_services() -> None:
    hall = Hall(name="fifo")
    hall.take("B", at(9))
    hall.take("A", at(9, 5))
    hall.take("A", at(9, 6), priority=True)
    # urgent first, then issue order regardless of the counter's preference
    assert hall.do(CallNext(at(9, 10), 1))[-1] == called("A002", "A", 1)
    assert hall.do(CallNext(at(9, 11), 1))[-1] == called("B001", "B", 1)
    assert hall.do(CallNext(at(9, 12), 1))[-1] == called("A001", "A", 1)


def test_urgent_tickets_first_but_a_normal_one_after_a_streak() -> None:
    hall = Hall()  # priority_streak_limit 3
    for i in range(4):
        hall.take("A", at(9, i), priority=True)  # A001..A004
    hall.take("A", at(9, 4))  # A005, normal
    calls, streaks = [], []
    for i in range(5):
        calls.append(hall.do(CallNext(at(9, 10 + i), 1))[-1][1]["number"])
        streaks.append(hall.state.counters[1].priority_streak)
    assert calls == ["A001", "A002", "A003", "A005", "A004"]
    assert streaks == [1, 2, 3, 0, 1]


def test_urgent_streak_continues_when_no_normal_ticket_waits() -> None:
    hall = Hall(priority_streak_limit=1)
    hall.take("A", at(9), priority=True)
    hall.take("A", at(9, 1), priority=True)
    hall.take("B", at(9, 2))  # a normal ticket, but not for counter 3
    assert hall.do(CallNext(at(9, 5), 3))[-1] == called("A001", "A", 3)
    assert hall.do(CallNext(at(9, 6), 3))[-1] == called("A002", "A", 3)
    assert hall.state.counters[3].priority_streak == 2


def test_streak_is_per_counter() -> None:
    hall = Hall(priority_streak_limit=1)
    hall.take("A", at(9), priority=True)
    hall.take("A", at(9, 1), priority=True)
    hall.take("A", at(9, 2))
    assert hall.do(CallNext(at(9, 5), 1))[-1] == called("A001", "A", 1)
    assert hall.do(CallNext(at(9, 6), 3))[-1] == called("A002", "A", 3)  # 3 has no streak
    assert hall.do(CallNext(at(9, 7), 1))[-1] == called("A003", "A", 1)


# -- call a number ----------------------------------------------------------------------------
def test_call_number_by_digits_follows_the_counters_preference() -> None:
    hall = Hall()
    hall.take("B", at(9), number="B012")
    hall.take("A", at(9, 1), number="A012")
    hall.take("A", at(9, 2), number="A001")
    assert hall.do(CallNumber(at(9, 5), 1, "12")) == [opened(1, ["A", "B"]), called("A012", "A", 1)]
    assert hall.do(CallNumber(at(9, 6), 2, "012")) == [
        opened(2, ["B", "A"]),
        called("B012", "B", 2),
    ]
    # the current ticket is finished first
    assert hall.do(CallNumber(at(9, 7), 1, " 1 ")) == [
        done("A012", "A", 1),
        called("A001", "A", 1),
    ]
    assert hall.waiting("A") == [] and hall.waiting("B") == []


def test_call_number_digits_falls_back_to_a_later_service() -> None:
    hall = Hall()
    hall.take("B", at(9), number="B007")
    assert hall.do(CallNumber(at(9, 5), 1, "7"))[-1] == called("B007", "B", 1)


def test_call_number_full_number() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.take("B", at(9, 2))
    assert hall.do(CallNumber(at(9, 5), 2, "a002")) == [
        opened(2, ["B", "A"]),
        called("A002", "A", 2),
    ]
    assert hall.waiting("A") == ["A001"]
    # B001 is not a service of counter 3; A002 is called elsewhere; A009 does not exist
    for ref in ["B001", "A002", "A009", "12", "X1", ""]:
        hall.fails(CallNumber(at(9, 6), 3, ref), NotFound, "unknown-ticket")
    assert hall.state.counters[3].state == "closed"  # a refused call does not open it


@pytest.mark.parametrize("ref", ["0", "000", "1000"])
def test_call_number_out_of_range(ref: str) -> None:
    hall = Hall()
    hall.take("A", at(9))
    err = hall.fails(CallNumber(at(9, 1), 1, ref), Invalid, "bad-number")
    assert err.code == 400


def test_call_number_of_a_suspended_ticket_resumes_it_even_at_another_counter() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    assert hall.do(Suspend(at(9, 2), 1)) == [tev(ev.TICKET_SUSPENDED, "A001", "A", 1)]
    assert hall.do(CallNumber(at(9, 3), 2, "1")) == [
        opened(2, ["B", "A"]),
        tev(ev.TICKET_RESUMED, "A001", "A", 2),
        called("A001", "A", 2),
    ]
    assert hall.state.counters[1].suspended == []
    a1 = hall.state.tickets["A001"]
    assert (a1.state, a1.counter) == ("called", 2)
    hall.fails(Resume(at(9, 4), 1), Conflict, "none-suspended")


# -- at the counter ---------------------------------------------------------------------------
def test_recall_then_no_show_after_k_recalls() -> None:
    hall = Hall()  # no_show_after_recalls 3
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    for i in range(3):
        assert hall.do(Recall(at(9, 3 + i), 1)) == [tev(ev.TICKET_RECALLED, "A001", "A", 1)]
        assert hall.state.tickets["A001"].recalls == i + 1
    assert hall.do(Recall(at(9, 6), 1)) == [tev(ev.TICKET_NO_SHOW, "A001", "A", 1)]
    assert hall.ticket_state("A001") == "no_show"
    assert hall.state.counters[1].current is None
    assert hall.state.counters[1].last is None  # a no-show is not rated
    hall.fails(Recall(at(9, 7), 1), Conflict, "no-current-ticket")
    # the next ticket starts with no recalls
    hall.do(CallNext(at(9, 8), 1))
    assert hall.do(Recall(at(9, 9), 1)) == [tev(ev.TICKET_RECALLED, "A002", "A", 1)]


def test_recall_never_no_show_when_k_is_zero() -> None:
    hall = Hall(no_show_after_recalls=0)
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    for i in range(10):
        assert hall.do(Recall(at(9, 2 + i), 1)) == [tev(ev.TICKET_RECALLED, "A001", "A", 1)]
    assert hall.ticket_state("A001") == "called"


def test_recalls_count_again_after_the_ticket_is_called_again() -> None:
    hall = Hall(no_show_after_recalls=1)
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    assert hall.do(Recall(at(9, 2), 1))[0][0] == ev.TICKET_RECALLED
    hall.do(Suspend(at(9, 3), 1))
    hall.do(Resume(at(9, 4), 1))
    assert hall.state.tickets["A001"].recalls == 0
    assert hall.do(Recall(at(9, 5), 1))[0][0] == ev.TICKET_RECALLED
    assert hall.do(Recall(at(9, 6), 1))[0][0] == ev.TICKET_NO_SHOW


def test_recall_of_an_arrived_applicant_is_never_a_no_show() -> None:
    hall = Hall(no_show_after_recalls=1)
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    hall.do(Serving(at(9, 2), 1))
    for i in range(3):
        assert hall.do(Recall(at(9, 3 + i), 1)) == [tev(ev.TICKET_RECALLED, "A001", "A", 1)]
    assert hall.ticket_state("A001") == "serving"


def test_serving() -> None:
    hall = Hall()
    hall.fails(Serving(at(9), 1), Conflict, "no-current-ticket")
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    assert hall.do(Serving(at(9, 2), 1)) == [tev(ev.TICKET_SERVING, "A001", "A", 1)]
    assert hall.ticket_state("A001") == "serving"
    assert hall.do(Serving(at(9, 3), 1)) == []  # already there
    assert hall.do(Done(at(9, 4), 1)) == [done("A001", "A", 1)]


def test_done() -> None:
    hall = Hall()
    hall.fails(Done(at(9), 1), Conflict, "no-current-ticket")
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    assert hall.do(Done(at(9, 3), 1)) == [done("A001", "A", 1)]
    c1 = hall.state.counters[1]
    assert (c1.state, c1.current, c1.last, c1.since) == ("open", None, "A001", at(9, 3))
    assert hall.ticket_state("A001") == "done"
    assert hall.waiting("A") == ["A002"]  # DONE calls nobody
    hall.fails(Done(at(9, 4), 1), Conflict, "no-current-ticket")


def test_no_show() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    hall.do(CallNext(at(9, 3), 1))  # A001 done, A002 called
    assert hall.do(NoShow(at(9, 4), 1)) == [tev(ev.TICKET_NO_SHOW, "A002", "A", 1)]
    assert hall.ticket_state("A002") == "no_show"
    assert hall.state.counters[1].current is None
    assert hall.state.counters[1].last == "A001"  # the evaluator still rates the last served
    hall.fails(NoShow(at(9, 5), 1), Conflict, "no-current-ticket")


def test_no_show_of_an_arrived_applicant_is_refused() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    hall.do(Serving(at(9, 2), 1))
    err = hall.fails(NoShow(at(9, 3), 1), Conflict, "applicant-arrived")
    assert err.code == 409
    assert hall.ticket_state("A001") == "serving"
    assert hall.state.counters[1].current == "A001"


def test_suspend_sets_the_ticket_aside() -> None:
    hall = Hall()
    hall.fails(Suspend(at(9), 1), Conflict, "no-current-ticket")
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    hall.do(Serving(at(9, 3), 1))
    assert hall.do(Suspend(at(9, 4), 1)) == [tev(ev.TICKET_SUSPENDED, "A001", "A", 1)]
    a1, c1 = hall.state.tickets["A001"], hall.state.counters[1]
    assert (a1.state, a1.counter) == ("suspended", 1)
    assert (c1.current, c1.suspended) == (None, ["A001"])
    assert hall.waiting("A") == ["A002"]  # not back in the queue
    assert hall.do(CallNext(at(9, 5), 1)) == [called("A002", "A", 1)]


def test_resume_calls_back_the_earliest_suspended_ticket() -> None:
    hall = Hall()
    for i in range(3):
        hall.take("A", at(9, i))
    hall.do(CallNext(at(9, 5), 1))
    hall.do(Suspend(at(9, 6), 1))  # A001
    hall.do(CallNext(at(9, 7), 1))
    hall.do(Suspend(at(9, 8), 1))  # A002
    hall.do(CallNext(at(9, 9), 1))  # A003 current
    assert hall.state.counters[1].suspended == ["A001", "A002"]
    assert hall.do(Resume(at(9, 10), 1)) == [
        done("A003", "A", 1),
        tev(ev.TICKET_RESUMED, "A001", "A", 1),
        called("A001", "A", 1),
    ]
    assert hall.state.counters[1].suspended == ["A002"]
    assert hall.waiting("A") == []
    # close the counter (finishing A001): resuming opens it again
    assert hall.do(CloseCounter(at(9, 11), 1)) == [
        done("A001", "A", 1),
        (ev.COUNTER_CLOSED, {"counter": 1}),
    ]
    assert hall.do(Resume(at(9, 12), 1)) == [
        opened(1, ["A", "B"]),
        tev(ev.TICKET_RESUMED, "A002", "A", 1),
        called("A002", "A", 1),
    ]
    err = hall.fails(Resume(at(9, 13), 1), Conflict, "none-suspended")
    assert err.code == 409
    hall.fails(Resume(at(9, 13), 2), Conflict, "none-suspended")


def test_transfer_keeps_number_and_original_issue_time() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("B", at(9, 5))
    hall.do(CallNext(at(9, 10), 1))  # A001
    assert hall.do(Transfer(at(9, 12), 1, "B")) == [
        (ev.TICKET_TRANSFERRED, {"number": "A001", "from": "A", "to": "B", "counter": 1})
    ]
    a1, c1 = hall.state.tickets["A001"], hall.state.counters[1]
    assert (a1.state, a1.service, a1.counter, a1.issued_at) == ("waiting", "B", None, at(9))
    assert (c1.current, c1.last) == (None, "A001")
    assert hall.waiting("B") == ["A001", "B001"]
    assert hall.state.ahead_of(a1) == 0
    assert hall.state.ahead_of(hall.state.tickets["B001"]) == 1
    # a ticket issued after the transfer still queues behind it
    assert hall.do(TakeTicket(at(9, 13), "B", "x"))[0][1]["ahead"] == 2
    assert hall.do(CallNext(at(9, 15), 2)) == [opened(2, ["B", "A"]), called("A001", "B", 2)]
    assert hall.do(Done(at(9, 16), 2)) == [done("A001", "B", 2)]


def test_transfer_refusals() -> None:
    hall = Hall()
    hall.fails(Transfer(at(9), 1, "B"), Conflict, "no-current-ticket")
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    hall.fails(Transfer(at(9, 2), 1, "A"), Conflict, "same-service")
    hall.fails(Transfer(at(9, 2), 1, "Z"), NotFound, "unknown-service")
    assert hall.state.counters[1].current == "A001"


def test_transfer_of_an_urgent_ticket_keeps_it_urgent() -> None:
    hall = Hall()
    hall.take("B", at(8, 30))
    hall.take("A", at(9), priority=True)
    hall.do(CallNext(at(9, 1), 1))
    assert hall.do(Serving(at(9, 2), 1))[0][0] == ev.TICKET_SERVING
    hall.do(Transfer(at(9, 3), 1, "B"))
    assert hall.waiting("B") == ["A001", "B001"]
    assert hall.do(CallNext(at(9, 4), 2))[-1] == called("A001", "B", 2)


# -- counters ---------------------------------------------------------------------------------
def test_open_pause_toggle_close() -> None:
    hall = Hall()
    err = hall.fails(PauseCounter(at(9), 1), Conflict, "counter-closed")
    assert err.code == 409
    assert hall.do(OpenCounter(at(9, 1), 1)) == [opened(1, ["A", "B"])]
    assert hall.do(OpenCounter(at(9, 2), 1)) == []
    assert hall.do(PauseCounter(at(9, 3), 1)) == [(ev.COUNTER_PAUSED, {"counter": 1})]
    assert hall.do(PauseCounter(at(9, 4), 1)) == []
    assert hall.state.counters[1].state == "paused"
    assert hall.do(OpenCounter(at(9, 5), 1)) == [opened(1, ["A", "B"])]
    assert hall.do(TogglePause(at(9, 6), 1)) == [(ev.COUNTER_PAUSED, {"counter": 1})]
    assert hall.do(TogglePause(at(9, 7), 1)) == [opened(1, ["A", "B"])]
    assert hall.do(TogglePause(at(9, 8), 2)) == [opened(2, ["B", "A"])]  # closed: opens
    assert hall.do(CloseCounter(at(9, 9), 1)) == [(ev.COUNTER_CLOSED, {"counter": 1})]
    assert hall.do(CloseCounter(at(9, 10), 1)) == []
    c1 = hall.state.counters[1]
    assert (c1.state, c1.since) == ("closed", at(9, 9))
    assert hall.state.open_counters("A") == [hall.state.counters[2]]


def test_close_finishes_the_current_ticket() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 3))
    hall.do(PauseCounter(at(9, 2), 3))
    assert hall.do(CloseCounter(at(9, 3), 3)) == [
        done("A001", "A", 3),
        (ev.COUNTER_CLOSED, {"counter": 3}),
    ]
    assert hall.state.counters[3].last == "A001"


# -- cancel -----------------------------------------------------------------------------------
def test_cancel_by_number_or_token() -> None:
    hall = Hall()
    hall.take("A", at(9), token="tok-x")
    hall.take("A", at(9, 1))
    assert hall.do(Cancel(at(9, 2), "A002")) == [
        (ev.TICKET_CANCELLED, {"number": "A002", "service": "A", "reason": "cancelled"})
    ]
    assert hall.do(Cancel(at(9, 3), "tok-x", reason="app")) == [
        (ev.TICKET_CANCELLED, {"number": "A001", "service": "A", "reason": "app"})
    ]
    assert hall.waiting("A") == []
    assert hall.ticket_state("A001") == "cancelled"
    assert hall.state.tickets["A001"].finished_at == at(9, 3)
    err = hall.fails(Cancel(at(9, 4), "A001"), Conflict, "already-finished")
    assert err.code == 409
    err = hall.fails(Cancel(at(9, 4), "A003"), NotFound, "unknown-ticket")
    assert err.code == 404
    hall.fails(Cancel(at(9, 4), "nope"), NotFound, "unknown-ticket")


def test_cancel_a_called_ticket_frees_its_counter() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    hall.do(Serving(at(9, 3), 1))
    assert hall.do(Cancel(at(9, 4), "A001")) == [
        (
            ev.TICKET_CANCELLED,
            {"number": "A001", "service": "A", "counter": 1, "reason": "cancelled"},
        )
    ]
    c1 = hall.state.counters[1]
    assert (c1.state, c1.current, c1.last) == ("open", None, None)
    assert hall.do(CallNext(at(9, 5), 1)) == [called("A002", "A", 1)]  # nothing to finish


def test_cancel_a_suspended_ticket() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    hall.do(Suspend(at(9, 2), 1))
    hall.do(Cancel(at(9, 3), "A001"))
    assert hall.state.counters[1].suspended == []
    hall.fails(Resume(at(9, 4), 1), Conflict, "none-suspended")
    hall.fails(Cancel(at(9, 5), "A001"), Conflict, "already-finished")


def test_finished_tickets_cannot_be_cancelled() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    hall.do(CallNext(at(9, 3), 1))
    hall.do(NoShow(at(9, 4), 1))
    hall.fails(Cancel(at(9, 5), "A001"), Conflict, "already-finished")  # done
    hall.fails(Cancel(at(9, 5), "A002"), Conflict, "already-finished")  # no_show


# -- rate -------------------------------------------------------------------------------------
def test_rate_the_ticket_finished_last() -> None:
    hall = Hall()
    err = hall.fails(Rate(at(9), 1, 5), Conflict, "nothing-to-rate")
    assert err.code == 409
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.do(CallNext(at(9, 2), 1))
    hall.fails(Rate(at(9, 3), 1, 4), Conflict, "nothing-to-rate")  # still being served
    hall.do(CallNext(at(9, 4), 1))  # A001 done, A002 called
    for bad in [0, 6, -1]:
        err = hall.fails(Rate(at(9, 5), 1, bad), Invalid, "bad-score")
        assert err.code == 400
    assert hall.do(Rate(at(9, 5), 1, 4)) == [
        (ev.TICKET_RATED, {"number": "A001", "service": "A", "counter": 1, "score": 4})
    ]
    assert hall.state.tickets["A001"].rated is True
    hall.fails(Rate(at(9, 6), 1, 5), Conflict, "already-rated")
    hall.do(NoShow(at(9, 7), 1))  # a no-show is not what the evaluator rates
    hall.fails(Rate(at(9, 8), 1, 5), Conflict, "already-rated")
    hall.fails(Rate(at(9, 8), 2, 5), Conflict, "nothing-to-rate")


def test_rate_a_transferred_ticket_once() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    hall.do(Transfer(at(9, 2), 1, "B"))
    assert hall.do(Rate(at(9, 3), 1, 1)) == [
        (ev.TICKET_RATED, {"number": "A001", "service": "B", "counter": 1, "score": 1})
    ]
    hall.do(CallNext(at(9, 4), 2))
    hall.do(Done(at(9, 5), 2))
    assert hall.state.counters[2].last == "A001"
    hall.fails(Rate(at(9, 6), 2, 5), Conflict, "already-rated")


def test_rating_does_not_survive_the_day() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.do(CallNext(at(9, 1), 1))
    hall.do(Done(at(9, 2), 1))
    hall.fails(Rate(at(9, day=5), 1, 5), Conflict, "nothing-to-rate")


# -- appointments -----------------------------------------------------------------------------
def upsert(code: str, service: str, start: datetime, end: datetime, when: datetime) -> Command:
    return UpsertAppointment(when, code, service, start, end)


def test_upsert_and_cancel_appointment() -> None:
    hall = Hall()
    out = hall.do(upsert("AP1", "B", at(10), at(10, 30), at(8, 1)))
    assert out == [
        (
            ev.APPOINTMENT_UPSERTED,
            {
                "code": "AP1",
                "service": "B",
                "start": "2024-03-04T10:00:00+08:00",
                "end": "2024-03-04T10:30:00+08:00",
            },
        )
    ]
    a = hall.state.appointments["AP1"]
    assert (a.service, a.start, a.end, a.ticket) == ("B", at(10), at(10, 30), None)
    hall.do(upsert("AP1", "A", at(11), at(11, 30), at(8, 2)))  # a change
    assert hall.state.appointments["AP1"].service == "A"
    assert hall.do(CancelAppointment(at(8, 3), "AP1")) == [
        (ev.APPOINTMENT_CANCELLED, {"code": "AP1"})
    ]
    assert hall.state.appointments == {}
    err = hall.fails(CancelAppointment(at(8, 4), "AP1"), NotFound, "unknown-code")
    assert err.code == 404
    hall.fails(CheckIn(at(10, 50), "AP1", "t"), NotFound, "unknown-code")


def test_upsert_appointment_refusals() -> None:
    hall = Hall()
    hall.fails(upsert("AP1", "Z", at(10), at(11), at(8, 1)), NotFound, "unknown-service")
    hall.fails(upsert("", "A", at(10), at(11), at(8, 1)), Invalid, "bad-code")
    hall.fails(upsert("x" * 65, "A", at(10), at(11), at(8, 1)), Invalid, "bad-code")
    hall.fails(upsert("AP1", "A", at(11), at(11), at(8, 1)), Invalid, "bad-time")
    hall.fails(upsert("AP1", "A", at(11), at(10), at(8, 1)), Invalid, "bad-time")
    naive = datetime(2024, 3, 4, 10)
    hall.fails(upsert("AP1", "A", naive, at(11), at(8, 1)), Invalid, "bad-time")
    hall.fails(upsert("AP1", "A", at(10), naive, at(8, 1)), Invalid, "bad-time")
    assert hall.do(upsert("x" * 64, "A", at(10), at(11), at(8, 1)))[0][0] == (
        ev.APPOINTMENT_UPSERTED
    )


def test_check_in_window_and_urgent_ticket() -> None:
    hall = Hall()
    hall.do(upsert("AP1", "B", at(10), at(10, 30), at(8, 1)))
    hall.take("B", at(9))
    hall.take("B", at(9, 1), priority=True)
    err = hall.fails(CheckIn(at(9, 29, 59), "AP1", "t-ap"), Conflict, "too-early")
    assert err.code == 409
    out = hall.do(CheckIn(at(9, 30), "AP1", "t-ap"))
    assert out == [
        (
            ev.TICKET_ISSUED,
            {
                "number": "B003",
                "service": "B",
                "priority": False,
                "channel": "appointment",
                "ahead": 1,  # only the priority ticket: urgent ones go first
                "forecast": ANY,
                "token": "t-ap",
                "appointment": "AP1",
            },
        )
    ]
    assert hall.state.appointments["AP1"].ticket == "B003"
    t = hall.state.tickets["B003"]
    assert t.urgent and t.appointment == "AP1" and t.channel == "appointment"
    assert hall.waiting("B") == ["B002", "B003", "B001"]
    err = hall.fails(CheckIn(at(9, 31), "AP1", "t-again"), Conflict, "already-checked-in")
    hall.fails(upsert("AP1", "B", at(11), at(12), at(9, 31)), Conflict, "already-checked-in")

    hall.do(CallNext(at(9, 40), 2))  # B002
    assert hall.do(CallNext(at(9, 41), 2)) == [
        done("B002", "B", 2),
        tev(ev.TICKET_CALLED, "B003", "B", 2, appointment="AP1"),
    ]
    hall.do(Serving(at(9, 42), 2))
    hall.do(Suspend(at(9, 43), 2))
    assert hall.log[-1].data == {
        "number": "B003",
        "service": "B",
        "counter": 2,
        "appointment": "AP1",
    }
    assert hall.do(Resume(at(9, 44), 2)) == [
        tev(ev.TICKET_RESUMED, "B003", "B", 2, appointment="AP1"),
        tev(ev.TICKET_CALLED, "B003", "B", 2, appointment="AP1"),
    ]
    assert hall.do(Recall(at(9, 45), 2)) == [
        tev(ev.TICKET_RECALLED, "B003", "B", 2, appointment="AP1")
    ]
    assert hall.do(Done(at(9, 46), 2)) == [done("B003", "B", 2, appointment="AP1")]


def test_appointment_tickets_name_their_appointment_in_every_ticket_event() -> None:
    hall = Hall()
    hall.do(upsert("AP1", "A", at(9), at(10), at(8, 1)))
    hall.do(upsert("AP2", "A", at(9), at(10), at(8, 1)))
    hall.do(upsert("AP3", "A", at(9), at(10), at(8, 1)))
    for i, code in enumerate(["AP1", "AP2", "AP3"]):
        hall.do(CheckIn(at(9, i), code, f"t-{code}"))
    hall.do(CallNext(at(9, 5), 1))  # A001 (AP1)
    assert hall.do(Transfer(at(9, 6), 1, "B")) == [
        (
            ev.TICKET_TRANSFERRED,
            {"number": "A001", "from": "A", "to": "B", "counter": 1, "appointment": "AP1"},
        )
    ]
    assert hall.do(Rate(at(9, 7), 1, 5)) == [
        tev(ev.TICKET_RATED, "A001", "B", 1, appointment="AP1", score=5)
    ]
    assert hall.do(Cancel(at(9, 8), "A002")) == [
        (
            ev.TICKET_CANCELLED,
            {"number": "A002", "service": "A", "reason": "cancelled", "appointment": "AP2"},
        )
    ]
    hall.do(CallNext(at(9, 9), 3))  # A003 (AP3)
    assert hall.do(NoShow(at(9, 10), 3)) == [
        tev(ev.TICKET_NO_SHOW, "A003", "A", 3, appointment="AP3")
    ]
    out = hall.do(Tick(at(4, day=5)))
    assert out[0] == (
        ev.TICKET_CANCELLED,
        {"number": "A001", "service": "B", "reason": "day_end", "appointment": "AP1"},
    )


def test_check_in_at_the_end_is_allowed() -> None:
    hall = Hall()
    hall.do(upsert("AP1", "A", at(10), at(10, 30), at(8, 1)))
    out = hall.do(CheckIn(at(10, 30), "AP1", "t1"))
    assert out[0][1]["number"] == "A001" and out[0][1]["appointment"] == "AP1"
    hall.do(upsert("AP2", "A", at(10), at(10, 30), at(8, 1)))
    hall.fails(CheckIn(at(10, 30, 1), "AP2", "t2"), Conflict, "expired")


def test_check_in_ignores_hours_and_daily_limit_but_not_tokens() -> None:
    hall = Hall(start=at(7))
    hall.do(upsert("EARLY", "C", at(8), at(8, 30), at(7, 1)))
    hall.fails(TakeTicket(at(8, 10), "C", "t0"), Conflict, "service-closed")
    assert hall.do(CheckIn(at(8, 10), "EARLY", "t1"))[0][1]["number"] == "C001"
    for i in range(2):
        hall.take("C", at(9, i))
    hall.fails(TakeTicket(at(9, 5), "C", "t2"), LimitReached, "daily-limit")
    hall.do(upsert("LATE", "C", at(9, 30), at(10), at(9, 6)))
    hall.fails(CheckIn(at(9, 30), "LATE", "t1"), Conflict, "duplicate-token")
    assert hall.do(CheckIn(at(9, 30), "LATE", "t3"))[0][1]["number"] == "C004"
    hall.fails(CheckIn(at(9, 31), "NOPE", "t4"), NotFound, "unknown-code")


def test_appointments_that_ended_are_dropped_at_the_new_day() -> None:
    hall = Hall()
    hall.do(upsert("TODAY", "A", at(10), at(11), at(8, 1)))
    hall.do(upsert("TOMORROW", "A", at(10, day=5), at(11, day=5), at(8, 2)))
    hall.do(Tick(at(4, day=5)))
    assert list(hall.state.appointments) == ["TOMORROW"]
    assert hall.do(CheckIn(at(9, 45, day=5), "TOMORROW", "t"))[0][1]["number"] == "A001"


def test_an_appointment_checked_in_before_the_reset_hour_is_gone_the_next_day() -> None:
    hall = Hall()
    hall.do(upsert("LATE", "A", at(3, 0, day=5), at(5, 0, day=5), at(22)))
    hall.do(CheckIn(at(3, 30, day=5), "LATE", "t-late"))  # still Monday's hall day
    hall.do(Tick(at(4, day=5)))  # Tuesday begins: Monday's ticket was cancelled
    assert hall.state.appointments == {}
    hall.fails(CheckIn(at(4, 30, day=5), "LATE", "t2"), NotFound, "unknown-code")


# -- devices ----------------------------------------------------------------------------------
def test_report_device_only_on_change() -> None:
    hall = Hall()

    def report(state: Any, detail: str = "", minute: int = 0) -> Seen:
        return hall.do(ReportDevice(at(9, minute), "kp3", "/dev/ttyUSB0", "keypad", state, detail))

    data = {"device": "kp3", "port": "/dev/ttyUSB0", "kind": "keypad", "detail": ""}
    assert report("online") == [(ev.DEVICE_ONLINE, data)]
    assert report("online", minute=1) == []
    assert report("fault", "cover open", 2) == [(ev.DEVICE_FAULT, {**data, "detail": "cover open"})]
    assert report("fault", "cover open", 3) == []
    assert report("fault", "paper out", 4) == [(ev.DEVICE_FAULT, {**data, "detail": "paper out"})]
    assert report("offline", minute=5) == [(ev.DEVICE_OFFLINE, data)]
    assert hall.state.devices == {"kp3": ("offline", "")}
    hall.fails(
        ReportDevice(at(9, 6), "kp3", "p", "keypad", "broken", ""),  # type: ignore[arg-type]
        Invalid,
        "bad-state",
    )


# -- the log rebuilds the hall --------------------------------------------------------------
def busy_day(hall: Hall) -> None:
    hall.do(upsert("AP1", "B", at(10), at(10, 30), at(8, 1)))
    for i, s in enumerate("AABBCA"):
        hall.take(s, at(9, i), priority=(i == 3))
    hall.do(CallNext(at(9, 10), 1))
    hall.do(CallNext(at(9, 11), 2))
    hall.do(Serving(at(9, 12), 2))
    hall.do(Suspend(at(9, 13), 2))
    hall.do(CallNext(at(9, 14), 3))
    hall.do(Transfer(at(9, 15), 3, "B"))
    hall.do(CheckIn(at(9, 40), "AP1", "ap"))
    hall.do(Recall(at(9, 41), 1))
    hall.do(Rate(at(9, 42), 3, 3))
    hall.do(CallNumber(at(9, 43), 1, "2"))
    hall.do(Cancel(at(9, 44), "A003"))
    hall.do(PauseCounter(at(9, 45), 1))
    hall.do(ReportDevice(at(9, 46), "d1", "p", "dispenser", "fault", "paper"))
    hall.fails(NoShow(at(9, 47), 3), Conflict, "no-current-ticket")
    hall.do(Resume(at(9, 48), 2))
    hall.take("A", at(9, 49))
    err = hall.fails(TakeTicket(at(5, day=5), "Z", "z"), NotFound, "unknown-service")
    assert err.events[-1].type == DAY_STARTED
    assert hall.do(Tick(at(5, 1, day=5))) == []


def test_replay_of_the_log_rebuilds_the_same_state() -> None:
    hall = Hall()
    busy_day(hall)
    fresh = Engine(hall.spec)
    fresh.replay(hall.log)
    assert fresh.state.to_dict() == hall.state.to_dict()


def test_replay_through_the_contract_json_rebuilds_the_same_state() -> None:
    hall = Hall()
    busy_day(hall)
    fresh = Engine(hall.spec)
    for seq, e in enumerate(hall.log, 1):
        stored = StoredEvent(seq, f"id-{seq}", e.type, e.at, e.data)
        fresh.apply(ev.loads(ev.dumps(stored)).event)
    assert fresh.state.to_dict() == hall.state.to_dict()


def test_snapshot_round_trip_mid_day() -> None:
    hall = Hall()
    busy_day(hall)  # ends on the next day with nothing left
    hall2 = Hall()
    for i, s in enumerate("AABB"):
        hall2.take(s, at(9, i), priority=(i == 1))
    hall2.do(CallNext(at(9, 5), 1))
    hall2.do(CallNext(at(9, 6), 2))
    hall2.do(Suspend(at(9, 7), 2))
    hall2.do(ReportDevice(at(9, 8), "d1", "p", "dispenser", "online"))
    for h in (hall, hall2):
        d = h.state.to_dict()
        restored = HallState.from_dict(h.spec, d)
        assert restored.to_dict() == d
    # a restored engine carries on exactly as the original
    restored_engine = Engine(
        hall2.spec, state=HallState.from_dict(hall2.spec, hall2.state.to_dict())
    )
    cmds: list[Command] = [CallNext(at(9, 10), 1), Resume(at(9, 11), 2), CallNext(at(9, 12), 3)]
    for cmd in cmds:
        assert restored_engine.execute(cmd) == hall2.engine.execute(cmd)
    assert restored_engine.state.to_dict() == hall2.state.to_dict()


# -- the admin's actions ----------------------------------------------------------------------
def test_move_a_waiting_ticket_keeps_its_place_by_issue_time() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("B", at(9, 5))
    assert hall.do(MoveTicket(at(9, 10), "a001".upper(), "B")) == [
        (ev.TICKET_TRANSFERRED, {"number": "A001", "from": "A", "to": "B", "counter": None})
    ]
    a1 = hall.state.tickets["A001"]
    assert (a1.state, a1.service, a1.counter, a1.issued_at) == ("waiting", "B", None, at(9))
    assert hall.waiting("A") == [] and hall.waiting("B") == ["A001", "B001"]
    assert all(c.last is None for c in hall.state.counters.values())  # nobody served it
    assert hall.do(CallNext(at(9, 11), 2)) == [opened(2, ["B", "A"]), called("A001", "B", 2)]
    # replaying the log rebuilds the same queues
    replayed = Engine(hall.spec)
    replayed.replay(hall.log)
    assert replayed.state.to_dict() == hall.state.to_dict()


def test_move_refusals() -> None:
    hall = Hall()
    hall.fails(MoveTicket(at(9), "A001", "B"), NotFound, "unknown-ticket")
    hall.take("A", at(9), token="tok-secret-long-1")
    hall.fails(MoveTicket(at(9, 1), "A001", "A"), Conflict, "same-service")
    hall.fails(MoveTicket(at(9, 1), "A001", "Z"), NotFound, "unknown-service")
    hall.do(CallNext(at(9, 2), 1))
    hall.fails(MoveTicket(at(9, 3), "tok-secret-long-1", "B"), Conflict, "not-waiting")


def test_set_notice_is_logged_replayed_and_snapshotted() -> None:
    hall = Hall()
    assert hall.do(SetNotice(at(9), "  今日 16:00\n停止取号  ")) == [
        (ev.NOTICE_SET, {"text": "今日 16:00 停止取号"})
    ]
    assert hall.do(SetNotice(at(9, 1), "今日 16:00 停止取号")) == []  # no change, no event
    assert hall.state.notice == "今日 16:00 停止取号"
    assert HallState.from_dict(hall.spec, hall.state.to_dict()).notice == hall.state.notice
    replayed = Engine(hall.spec)
    replayed.replay(hall.log)
    assert replayed.state.notice == hall.state.notice
    hall.do(Tick(at(9, day=MONDAY + 1)))  # the notice outlives the hall day
    assert hall.state.notice == "今日 16:00 停止取号"
    assert hall.do(SetNotice(at(10, day=MONDAY + 1), "")) == [(ev.NOTICE_SET, {"text": ""})]
    hall.fails(SetNotice(at(10, day=MONDAY + 1), "x" * 501), Invalid, "notice-too-long")


def test_old_snapshots_without_a_notice_still_load() -> None:
    hall = Hall()
    d = hall.state.to_dict()
    del d["notice"]
    assert HallState.from_dict(hall.spec, d).notice == ""


def test_reprint_request_names_the_ticket_never_its_token() -> None:
    hall = Hall()
    hall.take("A", at(9), token="tok-secret-long-2")
    out = hall.do(RequestReprint(at(9, 1), "tok-secret-long-2"))
    assert out == [(ev.REPRINT_REQUESTED, {"number": "A001", "service": "A"})]
    hall.do(Cancel(at(9, 2), "A001"))
    hall.fails(RequestReprint(at(9, 3), "A001"), Conflict, "already-finished")
    hall.fails(RequestReprint(at(9, 3), "A999"), NotFound, "unknown-ticket")


def test_replay_call_by_counter_or_ticket() -> None:
    hall = Hall()
    hall.take("A", at(9))
    hall.take("A", at(9, 1))
    hall.fails(ReplayCall(at(9, 2), counter=1), Conflict, "no-current-ticket")
    hall.fails(ReplayCall(at(9, 2), ticket="A002"), Conflict, "not-called")
    hall.fails(ReplayCall(at(9, 2)), Invalid, "bad-request")
    hall.do(CallNext(at(9, 3), 1))
    replay = tev(ev.REPLAY_REQUESTED, "A001", "A", 1)
    assert hall.do(ReplayCall(at(9, 4), counter=1)) == [replay]
    assert hall.do(Serving(at(9, 5), 1))[0][0] == ev.TICKET_SERVING
    assert hall.do(ReplayCall(at(9, 6), ticket="A001")) == [replay]
    assert hall.state.tickets["A001"].recalls == 0  # a replay is not a recall


def test_hand_issued_ticket_uses_the_counter_channel() -> None:
    hall = Hall()
    out = hall.do(TakeTicket(at(9), "B", "tok-hand", channel="counter"))
    assert out[0][1]["channel"] == "counter" and out[0][1]["number"] == "B001"

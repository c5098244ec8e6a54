"""What the screen, kiosk and applicant pages show, computed from the hall's read-only state.

Pure: no I/O, no asyncio, no clock (the caller passes `now`). Every view is plain JSON data
that the feeds send as it is, so these functions decide alone what leaves the daemon:

- screen and kiosk views are public (any TV or kiosk in the hall shows them): ticket
  numbers, service and counter names, counts and forecasts, never a token or anything
  personal;
- a ticket view describes one ticket to whoever holds its token, and nothing of any other
  ticket beyond the count of people ahead.

Views hold absolute values (never increments), so a patch that arrives twice, or after a
full state that already had it, does no harm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hall_daemon.config import HallConfig, ScreenConfig
from hall_daemon.forecast import Forecaster
from hall_daemon.state import WAITING, HallState, Ticket

JSON = dict[str, Any]

# How many calls the log keeps: enough for the longest recent-calls list (20) of a screen
# that shows one service among many busy ones.
CALL_LOG_SIZE = 256


# --- recent calls ---------------------------------------------------------------------------


@dataclass(slots=True)
class CallRecord:
    number: str
    service: str
    counter: int
    called_at: datetime


class CallLog:
    """Ticket numbers in the order they were last announced, newest last.

    The state keeps each ticket's latest call (its counter and `called_at`) but not the
    order of announcements: a recall moves a number to the top of the screens' lists while
    the speakers repeat it. So the log follows the bus's events, and `rebuild` recovers it
    from the state (in call order; recalls before a restart are forgotten) at start-up,
    after a new hall day and after the bus dropped events.
    """

    def __init__(self, keep: int = CALL_LOG_SIZE) -> None:
        self.keep = keep
        self._log: OrderedDict[str, CallRecord] = OrderedDict()

    def rebuild(self, state: HallState) -> None:
        called = [
            t
            for t in state.tickets.values()
            if t.called_at is not None and t.counter is not None and t.state != WAITING
        ]
        called.sort(key=lambda t: (t.called_at, t.order))
        self._log.clear()
        for t in called[-self.keep :]:
            assert t.called_at is not None and t.counter is not None  # filtered above
            self._log[t.number] = CallRecord(t.number, t.service, t.counter, t.called_at)

    def called(self, number: str, service: str, counter: int, at: datetime) -> None:
        self._log.pop(number, None)
        self._log[number] = CallRecord(number, service, counter, at)
        while len(self._log) > self.keep:
            self._log.popitem(last=False)

    def recalled(self, number: str) -> None:
        if number in self._log:
            self._log.move_to_end(number)

    def entries(self, state: HallState) -> Iterator[tuple[CallRecord, Ticket]]:
        """Newest first; only calls that still stand.

        A record stands while its ticket's latest call is this one at this counter and the
        ticket has not gone back to waiting (transferred, or resumed from suspension).
        Checking `called_at` also keeps yesterday's A001 from passing for today's.
        """
        for rec in reversed(self._log.values()):
            t = state.tickets.get(rec.number)
            if (
                t is not None
                and t.called_at == rec.called_at
                and t.counter == rec.counter
                and t.state != WAITING
            ):
                yield rec, t


# --- what a screen shows ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScreenScope:
    """The services and counters one screen shows, and how many past calls it lists."""

    services: tuple[str, ...]
    counters: tuple[int, ...]
    recent_calls: int


def screen_scope(config: HallConfig, screen: ScreenConfig) -> ScreenScope:
    services = screen.services or tuple(s.code for s in config.services)
    if screen.counters is not None:
        counters = screen.counters
    else:
        # A screen for some services shows the counters that serve them, not all the hall's.
        counters = tuple(c.id for c in config.counters if set(c.services) & set(services))
    return ScreenScope(tuple(services), tuple(counters), screen.recent_calls)


def queue_entry(state: HallState, forecaster: Forecaster, service: str, now: datetime) -> JSON:
    """One service's queue: how many wait and how long a ticket taken now would wait."""
    waiting = state.waiting(service)
    f = forecaster(state, service, waiting, now)
    return {
        "waiting": waiting,
        "wait_s": f["wait_s"],
        "p10_s": f["p10_s"],
        "p90_s": f["p90_s"],
        "open": len(state.open_counters(service)),
    }


def counter_entry(state: HallState, counter: int) -> JSON:
    c = state.counters[counter]
    t = state.tickets.get(c.current) if c.current else None
    return {"state": c.state, "ticket": c.current, "status": t.state if t else None}


def call_entry(rec: CallRecord, t: Ticket) -> JSON:
    return {"number": rec.number, "service": rec.service, "counter": rec.counter, "status": t.state}


def screen_view(
    state: HallState, scope: ScreenScope, forecaster: Forecaster, log: CallLog, now: datetime
) -> JSON:
    """The changing part of a screen. `calls[0]` is the newest call (the big banner), the
    rest are the recent-calls list."""
    return {
        "queues": {s: queue_entry(state, forecaster, s, now) for s in scope.services},
        **screen_calls(state, scope, log),
    }


def screen_calls(state: HallState, scope: ScreenScope, log: CallLog) -> JSON:
    """The part of a screen a call changes that needs no forecast: the calls and counters."""
    services, counters = set(scope.services), set(scope.counters)
    calls: list[JSON] = []
    for rec, t in log.entries(state):
        if rec.service in services and rec.counter in counters:
            calls.append(call_entry(rec, t))
            if len(calls) > scope.recent_calls:
                break
    return {
        "counters": {str(c): counter_entry(state, c) for c in scope.counters},
        "calls": calls,
    }


def screen_meta(config: HallConfig, screen: ScreenConfig, scope: ScreenScope) -> JSON:
    """The part of a screen that changes only with config.yaml (sent with every full state,
    so a restart with a changed config reaches the pages without a reload)."""
    services = {s.code: s for s in config.services}
    counters = {c.id: c for c in config.counters}
    return {
        "id": screen.id,
        "title": screen.title,
        "orientation": screen.orientation,
        "language": screen.language,
        "recent_calls": screen.recent_calls,
        "hall": hall_names(config),
        "services": [
            {
                "code": code,
                "name": services[code].name,
                "name_en": services[code].name_en,
                "prefix": services[code].prefix,
            }
            for code in scope.services
        ],
        "counters": [
            {"id": cid, "name": counters[cid].name, "name_en": counters[cid].name_en}
            for cid in scope.counters
        ],
    }


def hall_names(config: HallConfig) -> JSON:
    return {"name": config.hall.name, "name_en": config.hall.name_en}


def matches_scope(scope: ScreenScope, service: str, counter: int) -> bool:
    return service in scope.services and counter in scope.counters


# --- what the kiosk shows -----------------------------------------------------------------


def kiosk_entry(state: HallState, forecaster: Forecaster, service: str, now: datetime) -> JSON:
    """One service button: can a ticket be taken now, and if not, why (closed or full)."""
    spec = state.services[service]
    q = queue_entry(state, forecaster, service, now)
    reason: str | None = None
    if not spec.is_open(now.astimezone(state.spec.tz())):
        reason = "closed"
    elif (
        state.issued.get(service, 0) >= spec.daily_limit
        or state.next_number.get(spec.prefix, 1) > 999
    ):
        reason = "full"
    return {"available": reason is None, "reason": reason, "waiting": q["waiting"], **_wait(q)}


def kiosk_view(state: HallState, forecaster: Forecaster, now: datetime) -> JSON:
    return {"services": {s: kiosk_entry(state, forecaster, s, now) for s in state.services}}


def kiosk_meta(config: HallConfig) -> JSON:
    return {
        "hall": hall_names(config),
        "services": [
            {"code": s.code, "name": s.name, "name_en": s.name_en, "prefix": s.prefix}
            for s in config.services
        ],
    }


def _wait(q: JSON) -> JSON:
    return {"wait_s": q["wait_s"], "p10_s": q["p10_s"], "p90_s": q["p90_s"]}


# --- what one ticket's holder sees -----------------------------------------------------------


def ticket_view(
    state: HallState, config: HallConfig, forecaster: Forecaster, token: str, now: datetime
) -> JSON | None:
    """The ticket with this token, or None if there is none (unknown, or gone with its day).

    `ahead` and `forecast` only while it waits; `counter` while a counter has it (called,
    serving, suspended) or finished it.
    """
    t = state.by_token.get(token)
    if t is None:
        return None
    spec = state.services[t.service]
    view: JSON = {
        "number": t.number,
        "service": t.service,
        "service_name": spec.name,
        "service_name_en": spec.name_en,
        "state": t.state,
        "priority": t.urgent,
        "ahead": None,
        "forecast": None,
        "counter": None,
        "counter_name": None,
        "counter_name_en": None,
        "recalls": t.recalls,
    }
    if t.state == WAITING:
        ahead = state.ahead_of(t)
        view["ahead"] = ahead
        # The learned forecaster knows each waiting ticket by itself; others by position.
        per_ticket = getattr(forecaster, "ticket", None)
        f = per_ticket(state, t.number, now) if callable(per_ticket) else None
        view["forecast"] = _wait(f or forecaster(state, t.service, ahead, now))
    elif t.counter is not None:
        counter = next((c for c in config.counters if c.id == t.counter), None)
        view["counter"] = t.counter
        if counter is not None:
            view.update(counter_name=counter.name, counter_name_en=counter.name_en)
    return view


# --- patches ---------------------------------------------------------------------------------


def diff_view(old: JSON, new: JSON) -> JSON:
    """The sections of `new` that differ from `old`: keyed sections entry by entry, lists
    whole (a recent-calls list is a few short entries). Empty if nothing changed."""
    patch: JSON = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            changed = {k: v for k, v in value.items() if before.get(k) != v}
            if changed:
                patch[key] = changed
        elif value != before:
            patch[key] = value
    return patch

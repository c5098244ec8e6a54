"""The simple predictors a wait forecast has to beat, each learning only from the past.

Each takes every event (with the state after it) through `learn`, and answers `predict`
for a waiting ticket with a wait in seconds. They are the literature's usual yardsticks:
the hour-of-day mean, the mean of the last 10 waits, LES (the wait of the last ticket of
the service to enter service), HOL (the elapsed wait of the ticket at the head of the
line), the queue-length predictor (n+1)/(s·μ) and the Berlin ZMS display's
⌊(k+1)·avg/W⌋ minutes.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime

from .. import events as ev
from ..events import StoredEvent
from ..model import HallSpec
from ..state import OPEN, HallState, Ticket


class History:
    """What the baselines share: each ticket's first-call wait and each service's handling time."""

    def __init__(self, spec: HallSpec) -> None:
        self.tz = spec.tz()
        self.prior_s = {s.code: s.mean_service_s for s in spec.services}
        self._issued: dict[tuple[str, str], datetime] = {}  # (day, number) -> issue time
        self._called: dict[str, datetime] = {}  # number -> call time, for handling times
        self._day = ""
        self.listeners: list[Callable[[str, datetime, float], None]] = []  # service, issued, wait
        self.handled: dict[str, tuple[int, float]] = defaultdict(lambda: (0, 0.0))

    def learn(self, e: StoredEvent, state: HallState) -> None:
        d = e.data
        if e.type == ev.TICKET_ISSUED:
            self._issued[(self._day, d["number"])] = e.at
        elif e.type == ev.TICKET_CALLED:
            issued = self._issued.pop((self._day, d["number"]), None)
            if issued is not None:  # a first call: the wait is known now
                wait = max((e.at - issued).total_seconds(), 0.0)
                for listen in self.listeners:
                    listen(d["service"], issued, wait)
            self._called[d["number"]] = e.at
        elif e.type == ev.TICKET_DONE:
            called = self._called.pop(d["number"], None)
            if called is not None:
                n, total = self.handled[d["service"]]
                self.handled[d["service"]] = (n + 1, total + (e.at - called).total_seconds())
        elif e.type in (ev.TICKET_NO_SHOW, ev.TICKET_CANCELLED):
            self._called.pop(d["number"], None)
            if e.type == ev.TICKET_CANCELLED:
                self._issued.pop((self._day, d["number"]), None)
        elif e.type == "hall.day_started":
            self._day = str(d["day"])
            self._issued = {k: v for k, v in self._issued.items() if k[0] == self._day}
            self._called.clear()

    def mean_handling_s(self, service: str) -> float:
        """Mean time from call to done, from history; the configured figure until then."""
        n, total = self.handled[service]
        return total / n if n else self.prior_s.get(service, 300.0)


class Baseline:
    name = ""

    def __init__(self, history: History) -> None:
        self.history = history

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        raise NotImplementedError


class HourOfDayMean(Baseline):
    name = "hour-of-day mean"

    def __init__(self, history: History) -> None:
        super().__init__(history)
        self.cells: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0])
        self.overall = [0, 0.0]
        history.listeners.append(self._wait)

    def _wait(self, service: str, issued: datetime, wait: float) -> None:
        cell = self.cells[(service, issued.astimezone(self.history.tz).hour)]
        cell[0] += 1
        cell[1] += wait
        self.overall[0] += 1
        self.overall[1] += wait

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        n, total = self.cells.get((ticket.service, now.astimezone(self.history.tz).hour), (0, 0))
        if n:
            return total / n
        return self.overall[1] / self.overall[0] if self.overall[0] else 0.0


class LastTenMean(Baseline):
    name = "last-10 mean"

    def __init__(self, history: History) -> None:
        super().__init__(history)
        self.recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=10))
        self.any: deque[float] = deque(maxlen=10)
        history.listeners.append(self._wait)

    def _wait(self, service: str, issued: datetime, wait: float) -> None:
        self.recent[service].append(wait)
        self.any.append(wait)

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        waits = self.recent.get(ticket.service) or self.any
        return sum(waits) / len(waits) if waits else 0.0


class LastToEnterService(Baseline):
    name = "LES"

    def __init__(self, history: History) -> None:
        super().__init__(history)
        self.last: dict[str, float] = {}
        history.listeners.append(self._wait)

    def _wait(self, service: str, issued: datetime, wait: float) -> None:
        self.last[service] = wait

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        return self.last.get(ticket.service, 0.0)


class HeadOfLine(Baseline):
    name = "HOL"

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        ahead = [t for t in state.waiting_tickets(ticket.service) if t.number != ticket.number]
        return max((now - ahead[0].issued_at).total_seconds(), 0.0) if ahead else 0.0


def _servers(state: HallState, service: str) -> int:
    """Counters open for the service now; those that serve it at all if none is open."""
    serving = [c for c in state.counters.values() if service in c.services]
    return max(sum(1 for c in serving if c.state == OPEN) or len(serving), 1)


class QueueLength(Baseline):
    name = "queue-length"

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        n = state.ahead_of(ticket)
        return (
            (n + 1) * self.history.mean_handling_s(ticket.service) / _servers(state, ticket.service)
        )


class Zms(Baseline):
    """ZMS shows ⌊(k+1)·avg/W⌋ in whole minutes."""

    name = "ZMS"

    def predict(self, state: HallState, ticket: Ticket, now: datetime) -> float:
        k = state.ahead_of(ticket)
        avg_min = self.history.mean_handling_s(ticket.service) / 60.0
        return 60.0 * math.floor((k + 1) * avg_min / _servers(state, ticket.service))


BASELINES: tuple[type[Baseline], ...] = (
    HourOfDayMean,
    LastTenMean,
    LastToEnterService,
    HeadOfLine,
    QueueLength,
    Zms,
)


def make_baselines(spec: HallSpec) -> tuple[History, list[Baseline]]:
    history = History(spec)
    return history, [cls(history) for cls in BASELINES]

"""What the forecaster learns from the event log, one event at a time (O(1) each).

Service times are lognormal per service and, where a counter has served enough, per
counter and service (shrunk towards the service's figure). Besides: how often a called
applicant does not come and what that costs the counter, how fast waiting applicants give
up, how long a pause lasts, and arrivals per service by weekday and hour for the outlook
and for the priority tickets that will overtake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime

from .. import events as ev
from ..events import StoredEvent
from ..model import HallSpec
from ..state import HallState

HALF_LIFE = 400.0  # observations: service times drift (new clerks, new rules), so old ones fade
PRIOR_WEIGHT = 5.0  # the configured mean counts as this many observations
PRIOR_SIGMA = 0.6  # log-sd of a service time until data say otherwise
SHRINK = 20.0  # a counter's own figure needs this many services to count as much as its service's


@dataclass(slots=True)
class LogStat:
    """Exponentially weighted mean and variance of log(duration), with a prior."""

    weight: float
    mean: float
    var: float

    @classmethod
    def prior(
        cls, mean_s: float, sigma: float = PRIOR_SIGMA, weight: float = PRIOR_WEIGHT
    ) -> LogStat:
        mu = math.log(max(mean_s, 1.0)) - sigma * sigma / 2
        return cls(weight, mu, sigma * sigma)

    def add(self, seconds: float) -> None:
        x = math.log(max(seconds, 1.0))
        decay = 0.5 ** (1.0 / HALF_LIFE)
        self.weight = self.weight * decay + 1.0
        a = 1.0 / self.weight
        d = x - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d)

    @property
    def sigma(self) -> float:
        return min(max(math.sqrt(self.var), 0.15), 1.5)

    @property
    def mean_s(self) -> float:
        return math.exp(self.mean + self.var / 2)


@dataclass(slots=True)
class Rate:
    """Events per unit of exposure, exponentially weighted."""

    events: float = 0.0
    exposure: float = 0.0

    def add(self, events: float, exposure: float, decay: float = 0.999) -> None:
        self.events = self.events * decay + events
        self.exposure = self.exposure * decay + exposure

    def value(self, prior: float, prior_exposure: float) -> float:
        return (self.events + prior * prior_exposure) / (self.exposure + prior_exposure)


@dataclass
class Learned:
    """Everything the forecaster knows of the hall; changed only through `learn`."""

    spec: HallSpec
    service: dict[str, LogStat] = field(default_factory=dict)
    desk: dict[tuple[int, str], LogStat] = field(default_factory=dict)
    no_show: dict[str, Rate] = field(default_factory=dict)  # no-shows per call
    no_show_cost: LogStat = field(default_factory=lambda: LogStat.prior(60.0, 0.5))
    abandon: Rate = field(default_factory=Rate)  # give-ups per waiting second
    pause: LogStat = field(default_factory=lambda: LogStat.prior(600.0, 0.8))
    # seconds a counter takes to call after finishing, with people waiting
    gap: LogStat = field(default_factory=lambda: LogStat.prior(5.0, 1.0))
    # arrivals[service][weekday 0-6][hour], and for urgent ones; days seen per weekday
    arrivals: dict[str, list[list[float]]] = field(default_factory=dict)
    urgent_arrivals: dict[str, list[list[float]]] = field(default_factory=dict)
    waits: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)
    days: list[set[date]] = field(default_factory=lambda: [set() for _ in range(7)])
    version: int = 0

    def __post_init__(self) -> None:
        for s in self.spec.services:
            self.service[s.code] = LogStat.prior(s.mean_service_s)
            self.no_show[s.code] = Rate()
            self.arrivals[s.code] = [[0.0] * 24 for _ in range(7)]
            self.urgent_arrivals[s.code] = [[0.0] * 24 for _ in range(7)]
            self.waits[s.code] = [[(0.0, 0.0)] * 24 for _ in range(7)]
        self._tz = self.spec.tz()
        self._enqueued: dict[str, datetime] = {}  # number -> when it (re)joined a queue
        self._paused: dict[int, datetime] = {}
        self._freed: dict[int, datetime] = {}  # counter -> when it finished with people waiting

    # -- what the simulator asks ------------------------------------------------------------
    def service_time(self, counter: int, service: str) -> tuple[float, float]:
        """(mu, sigma) of log service seconds at this counter for this service."""
        base = self.service[service]
        own = self.desk.get((counter, service))
        if own is None:
            return base.mean, base.sigma
        w = own.weight / (own.weight + SHRINK)
        return w * own.mean + (1 - w) * base.mean, w * own.sigma + (1 - w) * base.sigma

    def no_show_p(self, service: str) -> float:
        return min(self.no_show[service].value(0.03, 20.0), 0.5)

    def call_gap_s(self) -> float:
        """Typical seconds between finishing one applicant and calling the next: the median,
        because the long gaps are clerks (or call-centre agents) away rather than the pace."""
        return math.exp(self.gap.mean)

    def abandon_rate(self) -> float:
        """Give-ups per second of waiting; a prior of one per ten hours."""
        return self.abandon.value(1.0 / 36000.0, 36000.0 * 5)

    def urgent_rate(self, service: str, at: datetime) -> float:
        """Urgent arrivals per second expected around `at`, from weekday x hour history."""
        local = at.astimezone(self._tz)
        wd, h = local.weekday(), local.hour
        n = len(self.days[wd])
        all_days = sum(len(d) for d in self.days)
        if all_days == 0:
            return 0.0
        rows = self.urgent_arrivals[service]
        per_all = sum(rows[d][h] for d in range(7)) / all_days
        per_wd = rows[wd][h] / n if n else per_all
        k = 2.0
        return ((n * per_wd + k * per_all) / (n + k)) / 3600.0

    # -- learning ------------------------------------------------------------------------
    def learn(self, e: StoredEvent, state: HallState) -> None:
        d = e.data
        kind = e.type
        self.version += 1
        if kind == ev.TICKET_ISSUED:
            self._enqueued[d["number"]] = e.at
            local = e.at.astimezone(self._tz)
            wd = local.weekday()
            self.days[wd].add(local.date())
            svc = d["service"]
            if svc in self.arrivals:
                self.arrivals[svc][wd][local.hour] += 1
                if d.get("priority") or d.get("appointment"):
                    self.urgent_arrivals[svc][wd][local.hour] += 1
        elif kind == ev.TICKET_CALLED:
            freed = self._freed.pop(d["counter"], None)
            if freed is not None:
                took = (e.at - freed).total_seconds()
                if 0 <= took < 900:  # longer is a break, not the pace of calling
                    self.gap.add(took)
            joined = self._enqueued.pop(d["number"], None)
            if joined is not None:
                self.abandon.add(0.0, (e.at - joined).total_seconds())
        elif kind in (ev.TICKET_DONE, ev.TICKET_TRANSFERRED, ev.TICKET_NO_SHOW):
            self._finished_at_counter(e, state)
            c = d.get("counter")
            if isinstance(c, int) and c in state.counters and state.waiting_for_counter(c):
                self._freed[c] = e.at
        elif kind == ev.TICKET_RESUMED:
            self._enqueued[d["number"]] = e.at
        elif kind == ev.TICKET_CANCELLED:
            joined = self._enqueued.pop(d["number"], None)
            if joined is not None and d.get("reason") != "day_end":
                self.abandon.add(1.0, (e.at - joined).total_seconds())
        elif kind == ev.COUNTER_PAUSED:
            self._freed.pop(d["counter"], None)
            self._paused[d["counter"]] = e.at
        elif kind == ev.COUNTER_OPENED:
            since = self._paused.pop(d["counter"], None)
            if since is not None:
                self.pause.add((e.at - since).total_seconds())
        elif kind == ev.COUNTER_CLOSED:
            self._paused.pop(d["counter"], None)
            self._freed.pop(d["counter"], None)
        if kind == ev.TICKET_TRANSFERRED:
            self._enqueued[d["number"]] = e.at

    def _finished_at_counter(self, e: StoredEvent, state: HallState) -> None:
        t = state.tickets.get(e.data["number"])
        if t is None or t.called_at is None:
            return
        took = (e.at - t.called_at).total_seconds()
        service = e.data.get("from", e.data.get("service"))
        if service not in self.service:
            return
        if e.type == ev.TICKET_NO_SHOW:
            self.no_show[service].add(1.0, 1.0)
            self.no_show_cost.add(took)
            return
        self.no_show[service].add(0.0, 1.0)
        if took <= 0:
            return
        self.service[service].add(took)
        counter = e.data.get("counter")
        if isinstance(counter, int):
            key = (counter, service)
            own = self.desk.get(key)
            if own is None:
                base = self.service[service]
                own = self.desk[key] = LogStat(0.0, base.mean, base.var)
            own.add(took)

    def record_wait(self, service: str, issued_at: datetime, wait_s: float) -> None:
        """A first call's wait, for the outlook's expected wait by weekday and hour."""
        if service not in self.waits:
            return
        local = issued_at.astimezone(self._tz)
        cell = self.waits[service][local.weekday()]
        n, total = cell[local.hour]
        cell[local.hour] = (n + 1, total + wait_s)

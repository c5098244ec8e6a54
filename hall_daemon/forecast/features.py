"""What the forecaster's learned stage sees of the hall when it predicts a wait.

For each target (a waiting ticket, or a ticket taken now in a service): the snapshot
simulation's answer, the queue ahead of it, the counters that serve its service (open,
paused, busy, and how many the hall usually has open over the next hour, learned per
counter and quarter hour: the lunch schedule), the hour and weekday, the pace of the last
minutes (calls and arrivals), the classic predictors (hour-of-day mean, last 10 waits,
LES, HOL, queue length), how many lately left the line unserved and after how long, how
long the tickets ahead have waited so far, and the waits of the last minutes, of today and
of the last few tickets. Everything is learned from events already committed, in O(1) per
event; nothing looks ahead.

Most columns belong to the service, so they are computed once per service and shared by
all of its waiting tickets.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from datetime import datetime

import numpy as np

from .. import events as ev
from ..events import StoredEvent
from ..model import HallSpec
from ..state import OPEN, PAUSED, HallState
from .recent import Average, Window, share

NAMES = (
    "sim",  # the simulation's mean wait
    "sim_spread",
    "sim_at_once",
    "ahead",
    "urgent_ahead",
    "priority",
    "hol",  # elapsed wait of the first ticket ahead
    "queue_length",  # (ahead + 1) · handling / open counters
    "open",  # counters open for the service, weighted by its place in their lists
    "open_count",
    "paused",
    "busy",
    "idle",
    "usually_open_now",  # what the schedule says, for comparison with what is open
    "usually_open_next_hour",
    "competing",  # tickets of other services waiting for the same open counters
    "waiting_in_hall",
    "handling_s",
    "hour",
    "weekday",
    "service",
    "hour_mean_wait",
    "last10_wait",
    "les",  # the wait of the last ticket of the service to be called
    "calls_5min",  # calls in this service in the last 5 minutes
    "hall_calls_15min",
    "arrivals_15min",
    "since_call",  # seconds since this service's last call
    "active_counters",  # counters that called anyone in the last 10 minutes: real staffing
    "active_for_service",  # of those, the ones that serve this service
    "waiting_shared",  # tickets waiting in every service its counters take (each once)
    "urgent_in_hall",  # priority tickets and appointments waiting anywhere
    "hall_mean_elapsed",  # how long the people waiting in the hall have waited, on average
    "hall_max_elapsed",
    "recent_wait",  # mean wait of this service's tickets called in the last 10 minutes
    "hall_recent_wait",  # the same over the whole hall
    "hall_les",  # the wait of the last ticket called anywhere
    "serving_longest",  # of its counters busy with someone, the longest time at it so far
    "serving_shortest",
    "paused_longest",  # of its paused counters, the longest pause so far
    # Of this service's tickets that stopped waiting lately, the share that left unserved
    # (callers hanging up): where many leave, the line ahead melts faster than it is served.
    "left_share_15min",
    "left_share_30min",
    "left_share_60min",
    "hall_left_share_30min",
    "left_waited_30min",  # how long those who left had waited: the callers' patience
    "left_30min",
    "ahead_staying",  # ahead × (1 − left share): the tickets ahead likely still to be served
    "ahead_mean_elapsed",  # how long the tickets ahead have waited so far
    "service_max_elapsed",  # the same over every waiting ticket of the service
    "service_mean_elapsed",
    # The waits themselves at several memories: the last few, today, the last half hour.
    "wait_avg10",  # exponentially weighted over about the last 10 of this service
    "wait_avg3",
    "hall_wait_avg20",
    "today_wait",
    "hall_today_wait",
    "wait_30min",  # this service's tickets called in the last 30 minutes
    "hall_wait_30min",
    "wait_60min",
)
SLOT_S = 900  # the schedule's resolution: a quarter hour
SLOTS = 96
SCHEDULE_DECAY = 0.9  # per day a counter is seen: the schedule follows changes in weeks


class Schedule:
    """Per counter and quarter hour of the day, the share of days it was open then."""

    def __init__(self, spec: HallSpec) -> None:
        self.tz = spec.tz()
        self.share: dict[int, np.ndarray] = {c.id: np.zeros(SLOTS) for c in spec.counters}
        self.seen: np.ndarray = np.zeros(SLOTS)  # decayed count of days seen per slot
        self._slot = -1
        self._day: object = None
        # usually_open's answers since the last sample: every row of an update asks the same
        # (counter, time, span) again, and the shares only change at a quarter hour.
        self._memo: dict[tuple[int, datetime, float], float] = {}

    def learn(self, at: datetime, state: HallState) -> None:
        """Sample every counter once at each quarter hour the log passes through."""
        local = at.astimezone(self.tz)
        slot = (local.hour * 3600 + local.minute * 60) // SLOT_S
        if state.day != self._day:
            self._day, self._slot = state.day, -1
        if slot == self._slot:
            return
        self._slot = slot
        self._memo.clear()
        self.seen[slot] = self.seen[slot] * SCHEDULE_DECAY + 1.0
        for c in state.counters.values():
            row = self.share.setdefault(c.id, np.zeros(SLOTS))
            row[slot] = row[slot] * SCHEDULE_DECAY + (1.0 if c.state == OPEN else 0.0)

    def usually_open(self, counter: int, at: datetime, hours: float) -> float:
        """The mean share of days the counter was open from `at` over the next `hours`."""
        key = (counter, at, hours)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) > 4096:  # many distinct times between two samples
                self._memo.clear()
            found = self._memo[key] = self._usually_open(counter, at, hours)
        return found

    def _usually_open(self, counter: int, at: datetime, hours: float) -> float:
        row = self.share.get(counter)
        if row is None:
            return 0.0
        local = at.astimezone(self.tz)
        first = (local.hour * 3600 + local.minute * 60) // SLOT_S
        span = range(first, min(first + max(int(hours * 4), 1), SLOTS))
        seen = [self.seen[s] for s in span]
        if not any(seen):
            return math.nan
        return float(sum(row[s] for s in span) / max(sum(seen), 1e-9))


class FeatureBook:
    """Learns the running figures the features need; builds feature rows on demand."""

    def __init__(self, spec: HallSpec) -> None:
        self.spec = spec
        self.tz = spec.tz()
        self.codes = [s.code for s in spec.services]
        self.index = {code: i for i, code in enumerate(self.codes)}
        self.schedule = Schedule(spec)
        self.prior_handling = {s.code: s.mean_service_s for s in spec.services}
        self.handled: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
        self.hour_waits: dict[tuple[str, int], tuple[int, float]] = defaultdict(lambda: (0, 0.0))
        self.all_waits = (0, 0.0)
        self.last10: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=10))
        self.les: dict[str, float] = {}
        self.hall_les = math.nan
        # (call time, wait) of first calls in the last hour, per service and hall-wide
        self.recent: dict[str, Window] = defaultdict(lambda: Window(3600))
        self.hall_recent = Window(1800)
        self.average: dict[str, tuple[Average, Average]] = defaultdict(
            lambda: (Average(0.9), Average(0.7))
        )
        self.hall_average = Average(0.95)
        self.today: dict[str, Average] = defaultdict(lambda: Average(1.0))  # plain means
        self.hall_today = Average(1.0)
        self.calls: dict[str, Window] = defaultdict(lambda: Window(3600))  # call times
        self.hall_calls = Window(1800)
        # (time, how long it had waited) of tickets that left the line unserved
        self.left: dict[str, Window] = defaultdict(lambda: Window(3600))
        self.hall_left = Window(1800)
        self.arrivals: dict[str, Window] = defaultdict(lambda: Window(900))
        self.last_call: dict[str, float] = {}
        self.counter_calls: dict[int, float] = {}  # counter -> its last call
        self._called: dict[str, datetime] = {}  # number -> call time, for handling times
        self._elapsed_key: tuple[object, ...] = ()
        self._elapsed_value: dict[str, float] = {}

    # -- learning ------------------------------------------------------------------------
    def learn(self, e: StoredEvent, state: HallState) -> None:
        d = e.data
        t = e.at.timestamp()
        self.schedule.learn(e.at, state)
        if e.type == ev.TICKET_ISSUED:
            self.arrivals[d["service"]].add(t)
        elif e.type == ev.TICKET_CALLED:
            s = d["service"]
            self.calls[s].add(t)
            self.hall_calls.add(t)
            self.last_call[s] = t
            if isinstance(d.get("counter"), int):
                self.counter_calls[d["counter"]] = t
            self._called[d["number"]] = e.at
        elif e.type == ev.TICKET_DONE:
            called = self._called.pop(d["number"], None)
            if called is not None:
                w, total = self.handled[d["service"]]
                took = (e.at - called).total_seconds()
                # Exponentially weighted: a hall's pace drifts with staff and rules.
                self.handled[d["service"]] = (w * 0.995 + 1.0, total * 0.995 + took)
        elif e.type in (ev.TICKET_NO_SHOW, ev.TICKET_CANCELLED, ev.TICKET_TRANSFERRED):
            self._called.pop(d["number"], None)
            if e.type == ev.TICKET_CANCELLED:
                self._left(e, state)
        elif e.type == "hall.day_started":
            self._called.clear()
            self.today.clear()
            self.hall_today = Average(1.0)

    def _left(self, e: StoredEvent, state: HallState) -> None:
        """A ticket left the line while waiting (not at a counter, not swept at day end)."""
        d = e.data
        ticket = state.tickets.get(d["number"])
        if "counter" in d or d.get("reason") == "day_end" or ticket is None:
            return
        t = e.at.timestamp()
        waited = t - ticket.issued_at.timestamp()
        self.left[d["service"]].add(t, waited)
        self.hall_left.add(t, waited)

    def first_wait(self, service: str, issued_at: datetime, wait_s: float) -> None:
        """A ticket's first call: what it waited, for the wait-based columns."""
        hour = issued_at.astimezone(self.tz).hour
        n, total = self.hour_waits[(service, hour)]
        self.hour_waits[(service, hour)] = (n + 1, total + wait_s)
        n, total = self.all_waits
        self.all_waits = (n + 1, total + wait_s)
        self.last10[service].append(wait_s)
        self.les[service] = wait_s
        self.hall_les = wait_s
        called = issued_at.timestamp() + wait_s
        self.recent[service].add(called, wait_s)
        self.hall_recent.add(called, wait_s)
        for average in (*self.average[service], self.hall_average, self.today[service]):
            average.add(wait_s)
        self.hall_today.add(wait_s)

    def handling_s(self, service: str) -> float:
        w, total = self.handled[service]
        return total / w if w >= 1 else self.prior_handling.get(service, 300.0)

    # -- rows ----------------------------------------------------------------------------
    def service_row(self, state: HallState, service: str, now: datetime) -> dict[str, float]:
        """The columns every target of `service` shares."""
        t = now.timestamp()
        local = now.astimezone(self.tz)
        weighted = count = paused = busy = 0.0
        now_share = next_share = 0.0
        competing = 0
        active = [c for c, at in self.counter_calls.items() if at >= t - 600]
        active_here = sum(
            1 for c in active if c in state.counters and service in state.counters[c].services
        )
        shared: set[str] = set()
        serving: list[float] = []
        pauses: list[float] = []
        for c in state.counters.values():
            if service not in c.services:
                continue
            shared.update(c.services)
            w = 1.0 / (1 + c.services.index(service))
            now_share += w * self.schedule.usually_open(c.id, now, 0.25)
            next_share += w * self.schedule.usually_open(c.id, now, 1.0)
            since = t - c.since.timestamp() if c.since is not None else math.nan
            if c.state == OPEN and c.current is not None:
                serving.append(since)
            elif c.state == PAUSED:
                pauses.append(since)
            if c.state == OPEN:
                weighted += w
                count += 1
                busy += c.current is not None
                competing += sum(state.waiting(s) for s in c.services if s != service)
            elif c.state == PAUSED:
                paused += 1
        n, total = self.hour_waits.get((service, local.hour), (0, 0.0))
        hour_mean = total / n if n else (self.all_waits[1] / max(self.all_waits[0], 1))
        recent = self.last10.get(service)
        last = self.last_call.get(service)
        calls = self.calls[service]
        left = self.left[service]
        waits = self.recent[service]
        average, average3 = self.average[service]
        return {
            "open": weighted,
            "open_count": count,
            "paused": paused,
            "busy": busy,
            "idle": count - busy,
            "usually_open_now": now_share,
            "usually_open_next_hour": next_share,
            "competing": float(competing),
            "waiting_in_hall": float(
                sum(len(q) for q in state.normal_queue.values())
                + sum(len(q) for q in state.urgent_queue.values())
            ),
            "handling_s": self.handling_s(service),
            "hour": local.hour + local.minute / 60,
            "weekday": float(local.weekday()),
            "service": float(self.index.get(service, -1)),
            "hour_mean_wait": hour_mean,
            "last10_wait": sum(recent) / len(recent) if recent else math.nan,
            "les": self.les.get(service, math.nan),
            "calls_5min": float(calls.count(t - 300)),
            "hall_calls_15min": float(self.hall_calls.count(t - 900)),
            "arrivals_15min": float(self.arrivals[service].count(t - 900)),
            "since_call": min(t - last, 3600.0) if last is not None else math.nan,
            "active_counters": float(len(active)),
            "active_for_service": float(active_here),
            "waiting_shared": float(sum(state.waiting(s) for s in shared if s in state.services)),
            "urgent_in_hall": float(sum(len(q) for q in state.urgent_queue.values())),
            "recent_wait": waits.mean(t - 600),
            "hall_recent_wait": self.hall_recent.mean(t - 600),
            "hall_les": self.hall_les,
            "serving_longest": max(serving, default=math.nan),
            "serving_shortest": min(serving, default=math.nan),
            "paused_longest": max(pauses, default=math.nan),
            **{
                f"left_share_{span // 60}min": share(left.count(t - span), calls.count(t - span))
                for span in (900, 1800, 3600)
            },
            "hall_left_share_30min": share(
                self.hall_left.count(t - 1800), self.hall_calls.count(t - 1800)
            ),
            "left_waited_30min": left.mean(t - 1800),
            "left_30min": float(left.count(t - 1800)),
            "wait_avg10": average.value,
            "wait_avg3": average3.value,
            "hall_wait_avg20": self.hall_average.value,
            "today_wait": self.today[service].value,
            "hall_today_wait": self.hall_today.value,
            "wait_30min": waits.mean(t - 1800),
            "hall_wait_30min": self.hall_recent.mean(t - 1800),
            "wait_60min": waits.mean(t - 3600),
            **self._elapsed(state, t),
        }

    def _elapsed(self, state: HallState, t: float) -> dict[str, float]:
        # A hall's waiting applicants are few hundred at most: one pass, cached per snapshot.
        key = (id(state), len(state.tickets), state.order, t)
        if self._elapsed_key != key:
            waits = [
                t - state.by_key[k].issued_at.timestamp()
                for q in (*state.urgent_queue.values(), *state.normal_queue.values())
                for k in q
            ]
            self._elapsed_value = {
                "hall_mean_elapsed": sum(waits) / len(waits) if waits else 0.0,
                "hall_max_elapsed": max(waits, default=0.0),
            }
            self._elapsed_key = key
        return self._elapsed_value

    def rows(
        self,
        state: HallState,
        now: datetime,
        targets: list[tuple[str, str | None]],
        sim: dict[str, tuple[float, float, bool]],
    ) -> np.ndarray:
        """One row per target: (service, ticket number or None for a ticket taken now).
        `sim` holds the simulation's (mean, spread, at once) by target name."""
        out = np.empty((len(targets), len(NAMES)))
        t_now = now.timestamp()
        by_service: dict[str, list[int]] = defaultdict(list)
        for i, (service, _) in enumerate(targets):
            by_service[service].append(i)
        for service, idx in by_service.items():
            base = self.service_row(state, service, now)
            out[idx] = [base.get(k, math.nan) for k in NAMES]
            line = [state.by_key[k] for k in state.urgent_queue[service]]
            n_urgent = len(line)
            line += [state.by_key[k] for k in state.normal_queue[service]]
            place = {x.number: k for k, x in enumerate(line)}
            head_wait = max(t_now - line[0].issued_at.timestamp(), 0.0) if line else 0.0
            # Elapsed waits in calling order; their running sums give each target's "ahead".
            elapsed = [t_now - x.issued_at.timestamp() for x in line]
            summed = np.cumsum([0.0, *elapsed])
            out[idx, _SERVICE_MAX_ELAPSED] = max(elapsed, default=0.0)
            out[idx, _SERVICE_MEAN_ELAPSED] = summed[-1] / len(elapsed) if elapsed else 0.0
            staying = 1.0 - base["left_share_30min"]
            for i in idx:
                number = targets[i][1]
                if number is None:
                    ahead, priority, name = len(line), False, "*" + service
                else:
                    ahead = place.get(number, len(line))
                    priority, name = state.tickets[number].urgent, number
                mean, spread, at_once = sim.get(name, (math.nan, math.nan, False))
                row = out[i]
                row[_SIM], row[_SPREAD] = mean, spread
                row[_AT_ONCE] = math.nan if math.isnan(mean) else float(at_once)
                row[_AHEAD], row[_URGENT_AHEAD] = ahead, min(ahead, n_urgent)
                row[_PRIORITY] = priority
                row[_HOL] = head_wait if ahead > 0 else 0.0
                row[_QUEUE_LENGTH] = (ahead + 1) * base["handling_s"] / max(base["open_count"], 1.0)
                row[_AHEAD_STAYING] = ahead * staying
                row[_AHEAD_ELAPSED] = summed[ahead] / ahead if ahead else 0.0
        return out


(
    _SIM,
    _SPREAD,
    _AT_ONCE,
    _AHEAD,
    _URGENT_AHEAD,
    _PRIORITY,
    _HOL,
    _QUEUE_LENGTH,
    _AHEAD_STAYING,
    _AHEAD_ELAPSED,
    _SERVICE_MAX_ELAPSED,
    _SERVICE_MEAN_ELAPSED,
) = (
    NAMES.index(k)
    for k in (
        "sim",
        "sim_spread",
        "sim_at_once",
        "ahead",
        "urgent_ahead",
        "priority",
        "hol",
        "queue_length",
        "ahead_staying",
        "ahead_mean_elapsed",
        "service_max_elapsed",
        "service_mean_elapsed",
    )
)

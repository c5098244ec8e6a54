"""Shared helpers for the benchmarks: a 50-counter hall and a realistic command stream.

`make_spec()` is a busy district hall: 10 services, 50 counters each serving 2-4 services in
order of preference, always open, 999 numbers a day per service.

`HallSim` plays hall days minute by minute and yields every command it makes with the events
the engine answered (or the DomainError it refused with). It drives its own `Engine` as an
oracle, so each counter reacts to what really happened (called someone or found nobody,
the applicant was cancelled meanwhile...), like the clerks at a real hall; a fresh Engine
fed the same commands produces the same events, because the engine is deterministic.

A day: a Tick at 04:00 (the daemon's clock closes yesterday), appointments synced from the
backend at 07:30, counters opening around 08:30, ~2,500-3,000 arrivals between 08:30 and
17:00 with a morning peak (~10:00) and an afternoon peak (~14:45), clerks calling, recalling,
serving, finishing, transferring, suspending and resuming, evaluators rating, staggered lunch
and short breaks, a few remote cancels and printer faults, counters closing once the queue
is empty after 17:00. Times are aware datetimes at +08:00. Same seed, same stream.
"""

from __future__ import annotations

import base64
import heapq
import math
import random
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, NamedTuple

from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.engine import Engine
from hall_daemon.events import Event
from hall_daemon.model import CounterSpec, DomainError, HallSpec, ServiceSpec

TZ = timezone(timedelta(hours=8))
FIRST_DAY = date(2026, 10, 29)  # 30 days before the results' date, 2026-11-28

# Share of the day's arrivals, and the mean service time (seconds), per service.
SERVICE_SHARE = (0.16, 0.14, 0.13, 0.12, 0.10, 0.09, 0.08, 0.07, 0.06, 0.05)
SERVICE_MEAN_S = (300, 360, 420, 240, 480, 360, 300, 540, 240, 420)
SERVICE_NAMES = (
    ("企业开办", "Business registration"),
    ("社保医保", "Social and health insurance"),
    ("不动产登记", "Real estate registration"),
    ("公积金", "Housing provident fund"),
    ("税务", "Taxation"),
    ("户籍", "Household registration"),
    ("出入境", "Exit and entry"),
    ("交通车驾", "Vehicles and driving"),
    ("民政婚姻", "Civil affairs"),
    ("综合咨询", "General enquiries"),
)


def make_spec(counters: int = 50, services: int = 10, seed: int = 0) -> HallSpec:
    """The benchmark hall; counters get a primary service in proportion to its demand."""
    if not 2 <= services <= len(SERVICE_SHARE):
        raise ValueError(f"services must be 2..{len(SERVICE_SHARE)}")
    rnd = random.Random(seed)
    svc = tuple(
        ServiceSpec(
            code=chr(ord("A") + i),
            name=SERVICE_NAMES[i][0],
            name_en=SERVICE_NAMES[i][1],
            prefix=chr(ord("A") + i),
            number=i + 1,
            hours=(),  # always open
            daily_limit=999,
            mean_service_s=float(SERVICE_MEAN_S[i]),
        )
        for i in range(services)
    )
    codes = [s.code for s in svc]
    shares = _shares(services)
    # Largest-remainder apportionment of the counters to primary services.
    quotas = [counters * w for w in shares]
    primaries = [int(q) for q in quotas]
    by_remainder = sorted(range(services), key=lambda i: quotas[i] - primaries[i], reverse=True)
    for i in by_remainder[: counters - sum(primaries)]:
        primaries[i] += 1
    desks: list[CounterSpec] = []
    for i, n in enumerate(primaries):
        for _ in range(n):
            others = [x for x in codes if x != codes[i]]
            extra = rnd.sample(others, rnd.randint(1, 3))  # 2-4 services in all
            cid = len(desks) + 1
            name, name_en = f"{cid}号窗口", f"Counter {cid}"
            desks.append(CounterSpec(cid, name, (codes[i], *extra), name_en=name_en))
    return HallSpec(services=svc, counters=tuple(desks), timezone="Asia/Shanghai")


def _shares(services: int) -> list[float]:
    raw = SERVICE_SHARE[:services]
    total = sum(raw)
    return [w / total for w in raw]


class Step(NamedTuple):
    """One command as the hall got it, what the engine answered, and the refusal if any."""

    command: c.Command
    events: list[Event]
    error: DomainError | None


@dataclass
class _Desk:
    id: int
    services: tuple[str, ...]
    gen: int = 0  # bumped to void the desk's scheduled actions
    idle: bool = False
    working: bool = False
    lunch_at: datetime | None = None
    lunch_s: int = 0
    break_at: datetime | None = None
    break_s: int = 0
    current: str | None = None  # as the sim believes; the engine's state is the truth
    suspended_ready: dict[str, datetime] = field(default_factory=dict)


def _clock(day: date, hh: int, mm: int = 0, ss: float = 0.0) -> datetime:
    return datetime.combine(day, time(hh, mm), TZ) + timedelta(seconds=ss)


class HallSim:
    """A deterministic simulation of hall days; iterate `steps()` for the command stream."""

    def __init__(
        self,
        spec: HallSpec,
        seed: int = 1,
        first_day: date = FIRST_DAY,
        tickets_per_day: tuple[int, int] = (2500, 3000),
    ) -> None:
        self.spec = spec
        self.rnd = random.Random(seed)
        self.first_day = first_day
        self.tickets_per_day = tickets_per_day
        self.engine = Engine(spec)
        self.codes = [s.code for s in spec.services]
        self.shares = _shares(len(self.codes))
        self.mean_s = {s.code: s.mean_service_s for s in spec.services}
        self.desks = {k.id: _Desk(k.id, k.services) for k in spec.counters}
        self._heap: list[tuple[datetime, int, str, int, int, Any]] = []
        self._seq = 0
        self._out: list[Step] = []
        self.day = first_day
        self.close_from = _clock(first_day, 17)

    # -- the stream ---------------------------------------------------------------------
    def steps(self, days: int | None = None) -> Iterator[Step]:
        """Every command of `days` hall days (forever if None), in time order."""
        d = 0
        while days is None or d < days:
            self._plan_day(self.first_day + timedelta(days=d))
            while self._heap:
                at, _, kind, desk, gen, arg = heapq.heappop(self._heap)
                if desk and self.desks[desk].gen != gen:
                    continue  # voided: the desk was woken earlier, or closed
                getattr(self, "_on_" + kind)(at, desk, arg)
                if self._out:
                    yield from self._out
                    self._out.clear()
            d += 1

    def commands(self, n: int) -> list[c.Command]:
        """The first `n` commands (as many days as that takes)."""
        out: list[c.Command] = []
        for step in self.steps():
            out.append(step.command)
            if len(out) >= n:
                break
        return out

    # -- plumbing -----------------------------------------------------------------------
    def _at(self, at: datetime, kind: str, desk: int = 0, arg: Any = None) -> None:
        self._seq += 1
        gen = self.desks[desk].gen if desk else 0
        heapq.heappush(self._heap, (at, self._seq, kind, desk, gen, arg))

    def _exec(self, cmd: c.Command) -> Step:
        try:
            step = Step(cmd, self.engine.execute(cmd), None)
        except DomainError as exc:
            step = Step(cmd, exc.events, exc)
        self._out.append(step)
        return step

    def _u(self, lo: float, hi: float) -> timedelta:
        return timedelta(seconds=self.rnd.uniform(lo, hi))

    def _token(self) -> str:
        return base64.urlsafe_b64encode(self.rnd.randbytes(16)).rstrip(b"=").decode()

    # -- a day's plan ---------------------------------------------------------------------
    def _plan_day(self, day: date) -> None:
        rnd = self.rnd
        self.day = day
        self.close_from = _clock(day, 17)
        self._at(_clock(day, 4, 0, 7), "tick")
        lo, hi = self.tickets_per_day
        n = min(max(round(rnd.gauss((lo + hi) / 2, (hi - lo) / 4)), lo), hi)
        for i in range(n):
            at = self._arrival_time(day)
            service = rnd.choices(self.codes, self.shares)[0]
            if rnd.random() < 0.05:  # an appointment made online, checked in at the dispenser
                code = f"AP{day:%m%d}{i:04d}"
                start = at + timedelta(minutes=rnd.choice((0, 5, 10, 15, 20)))
                sync = _clock(day, 7, 30) + self._u(0, 3000)
                self._at(sync, "appointment", 0, (code, service, start))
                self._at(at, "check_in", 0, code)
                continue
            token = self._token()
            channel = "remote" if rnd.random() < 0.2 else "dispenser"
            priority = rnd.random() < 0.07
            self._at(at, "arrive", 0, (service, token, channel, priority))
            if rnd.random() < 0.015:  # changed their mind in the app
                self._at(at + self._u(300, 3600), "cancel", 0, token)
        for _ in range(2):  # a printer runs out of paper and is fixed
            at = _clock(day, 9) + self._u(0, 7 * 3600)
            self._at(at, "device", 0, ("fault", "out of paper"))
            self._at(at + self._u(300, 900), "device", 0, ("online", ""))
        for desk in self.desks.values():
            desk.gen += 1
            desk.idle = desk.working = False
            desk.current = None
            desk.suspended_ready.clear()
            if rnd.random() < 0.08:
                continue  # the clerk is away today
            desk.lunch_at = _clock(day, 11, 40) + self._u(0, 3600) if rnd.random() < 0.6 else None
            desk.lunch_s = rnd.randint(30, 60) * 60
            desk.break_at = _clock(day, 15) + self._u(0, 5400) if rnd.random() < 0.3 else None
            desk.break_s = rnd.randint(5, 15) * 60
            self._at(_clock(day, 8, 25) + self._u(0, 600), "open", desk.id)
        self._at(_clock(day, 19, 30), "hard_stop")

    def _arrival_time(self, day: date) -> datetime:
        """Minutes after 08:30 up to 17:00: a morning and an afternoon peak on a base load."""
        rnd = self.rnd
        while True:
            r = rnd.random()
            if r < 0.45:
                m = rnd.gauss(90, 50)  # ~10:00
            elif r < 0.80:
                m = rnd.gauss(375, 50)  # ~14:45
            else:
                m = rnd.uniform(0, 510)
            if 0 <= m < 510:
                return _clock(day, 8, 30) + timedelta(seconds=round(m * 60, 3))

    # -- actions not tied to a counter ----------------------------------------------------
    def _on_tick(self, at: datetime, _desk: int, _arg: Any) -> None:
        self._exec(c.Tick(at))

    def _on_appointment(self, at: datetime, _desk: int, arg: Any) -> None:
        code, service, start = arg
        self._exec(c.UpsertAppointment(at, code, service, start, start + timedelta(minutes=30)))

    def _on_check_in(self, at: datetime, _desk: int, code: str) -> None:
        step = self._exec(c.CheckIn(at, code, self._token()))
        if step.error is None:
            self._wake(at, step.events[-1].data["service"])

    def _on_arrive(self, at: datetime, _desk: int, arg: Any) -> None:
        service, token, channel, priority = arg
        step = self._exec(c.TakeTicket(at, service, token, channel=channel, priority=priority))
        if step.error is None:
            self._wake(at, service)

    def _on_cancel(self, at: datetime, _desk: int, token: str) -> None:
        self._exec(c.Cancel(at, token, reason="app"))

    def _on_device(self, at: datetime, _desk: int, arg: Any) -> None:
        state, detail = arg
        self._exec(c.ReportDevice(at, "printer-2", "ttyS1", "printer", state, detail))

    def _on_hard_stop(self, at: datetime, _desk: int, _arg: Any) -> None:
        for desk in self.desks.values():
            if desk.working:
                self._close(at, desk)

    def _wake(self, at: datetime, service: str) -> None:
        """A new ticket: one idle clerk who serves it notices and presses NEXT."""
        idle = [d for d in self.desks.values() if d.idle and service in d.services]
        if idle:
            desk = self.rnd.choice(idle)
            desk.idle = False
            desk.gen += 1
            self._at(at + self._u(3, 25), "next", desk.id)

    # -- a counter's day --------------------------------------------------------------------
    def _on_open(self, at: datetime, desk_id: int, _arg: Any) -> None:
        desk = self.desks[desk_id]
        desk.working = True
        self._exec(c.OpenCounter(at, desk_id))
        self._at(at + self._u(5, 60), "next", desk_id)

    def _on_next(self, at: datetime, desk_id: int, _arg: Any) -> None:
        """The clerk is free (or finishing implicitly): break, resume, or call someone."""
        desk, rnd = self.desks[desk_id], self.rnd
        desk.idle = False
        length = 0
        if desk.lunch_at is not None and at >= desk.lunch_at:
            length, desk.lunch_at = desk.lunch_s, None
        elif desk.break_at is not None and at >= desk.break_at:
            length, desk.break_at = desk.break_s, None
        if length:
            if desk.current is not None:
                self._exec(c.Done(at, desk_id))
                desk.current = None
            self._exec(c.PauseCounter(at + self._u(1, 5), desk_id))
            self._at(at + timedelta(seconds=length), "back", desk_id)
            return
        state = self.engine.state.counters[desk_id]
        if state.suspended and desk.suspended_ready.get(state.suspended[0], at) <= at:
            step = self._exec(c.Resume(at, desk_id))
        elif rnd.random() < 0.005 and (number := self._someone_waiting(desk)):
            step = self._exec(c.CallNumber(at, desk_id, number))
        else:
            step = self._exec(c.CallNext(at, desk_id))
        called = next((e for e in step.events if e.type == ev.TICKET_CALLED), None)
        if called is None:
            desk.current = None
            if at >= self.close_from:
                self._at(at + self._u(30, 180), "close", desk_id)
            else:
                desk.idle = True
                desk.gen += 1
                self._at(at + self._u(120, 300), "next", desk_id)
            return
        desk.current = called.data["number"]
        self._called(at, desk)

    def _someone_waiting(self, desk: _Desk) -> str | None:
        waiting = self.engine.state.waiting_tickets(desk.services[0])
        if not waiting:
            return None
        t = self.rnd.choice(waiting[:5])
        return str(int(t.number[-3:]))  # the keypad's digits-only CALL

    def _called(self, at: datetime, desk: _Desk) -> None:
        rnd = self.rnd
        r = rnd.random()
        if r < 0.05:  # never comes: three recalls, then no-show
            for k in (1, 2, 3):
                self._at(at + timedelta(seconds=30 * k), "recall", desk.id)
            self._at(at + timedelta(seconds=125), "no_show", desk.id)
            return
        if r < 0.15:  # late: one recall
            self._at(at + self._u(25, 40), "recall", desk.id)
            arrive = at + self._u(45, 100)
        else:
            arrive = at + self._u(10, 60)
        self._at(arrive, "serving", desk.id)
        mean = self.mean_s[self.engine.state.tickets[desk.current].service] if desk.current else 400
        sigma = 0.5
        length = rnd.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
        self._at(arrive + timedelta(seconds=min(max(length, 45), 3 * 3600)), "finish", desk.id)

    def _on_recall(self, at: datetime, desk_id: int, _arg: Any) -> None:
        self._exec(c.Recall(at, desk_id))

    def _on_serving(self, at: datetime, desk_id: int, _arg: Any) -> None:
        self._exec(c.Serving(at, desk_id))

    def _on_no_show(self, at: datetime, desk_id: int, _arg: Any) -> None:
        self._exec(c.NoShow(at, desk_id))
        self.desks[desk_id].current = None
        self._at(at + self._u(5, 20), "next", desk_id)

    def _on_finish(self, at: datetime, desk_id: int, _arg: Any) -> None:
        desk, rnd = self.desks[desk_id], self.rnd
        r = rnd.random()
        if r < 0.04:  # belongs to another service
            number = desk.current
            here = self.engine.state.tickets[number].service if number else desk.services[0]
            to = rnd.choice([x for x in self.codes if x != here])
            self._exec(c.Transfer(at, desk_id, to))
            desk.current = None
            self._at(at + self._u(5, 20), "next", desk_id)
        elif r < 0.07:  # papers missing: set aside, called back once they are fetched
            if desk.current is not None:
                desk.suspended_ready[desk.current] = at + self._u(300, 900)
            self._exec(c.Suspend(at, desk_id))
            desk.current = None
            self._at(at + self._u(5, 20), "next", desk_id)
        elif r < 0.82:  # DONE, the applicant rates, the clerk takes a breath
            self._exec(c.Done(at, desk_id))
            desk.current = None
            if rnd.random() < 0.55:
                self._at(at + self._u(3, 20), "rate", desk_id)
            self._at(at + self._u(10, 60), "next", desk_id)
        else:  # NEXT straight away (finishes the current ticket)
            if rnd.random() < 0.3:
                self._at(at + self._u(2, 10), "rate", desk_id)
            self._on_next(at, desk_id, None)

    def _on_rate(self, at: datetime, desk_id: int, _arg: Any) -> None:
        score = self.rnd.choices((5, 4, 3, 2, 1), (80, 12, 5, 2, 1))[0]
        self._exec(c.Rate(at, desk_id, score))

    def _on_back(self, at: datetime, desk_id: int, _arg: Any) -> None:
        if self.rnd.random() < 0.5:
            self._exec(c.TogglePause(at, desk_id))
        else:
            self._exec(c.OpenCounter(at, desk_id))
        self._at(at + self._u(2, 20), "next", desk_id)

    def _on_close(self, at: datetime, desk_id: int, _arg: Any) -> None:
        self._close(at, self.desks[desk_id])

    def _close(self, at: datetime, desk: _Desk) -> None:
        self._exec(c.CloseCounter(at, desk.id))
        desk.working = desk.idle = False
        desk.current = None
        desk.gen += 1  # void whatever it had planned


def steps(spec: HallSpec, seed: int = 1, days: int | None = None) -> Iterator[Step]:
    return HallSim(spec, seed=seed).steps(days)


def rss_kib() -> int:
    """The process's resident set size now, in KiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def describe(stream: list[Step]) -> dict[str, Any]:
    """Counts that show what a stream is made of."""
    kinds: dict[str, int] = {}
    refused: dict[str, int] = {}
    events = 0
    for s in stream:
        name = type(s.command).__name__
        kinds[name] = kinds.get(name, 0) + 1
        events += len(s.events)
        if s.error is not None:
            refused[s.error.slug] = refused.get(s.error.slug, 0) + 1
    return {"commands": len(stream), "events": events, "kinds": kinds, "refused": refused}

"""A synthetic service hall, simulated with simpy, that runs on the real engine.

Eight counters over four services with overlapping service lists in preference order,
two daily peaks of time-varying Poisson arrivals, some counters closing for lunch, 10 %
priority tickets, called applicants who do not come (the counter recalls, waits, then
marks a no-show), lognormal service times per service and a speed factor per counter,
weekdays only. Every decision is a command to `Engine.execute` at the simulated time, so
the log is the one a daemon would have written. Seeded and deterministic.

    .venv/bin/python bench/synthhall.py --days 25 --out bench/out/synthhall.jsonl
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Generator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import simpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.engine import Engine
from hall_daemon.events import Event, StoredEvent
from hall_daemon.forecast.replay import write_log
from hall_daemon.model import CounterSpec, HallSpec, ServiceSpec

TZ = "Asia/Shanghai"
START = date(2026, 3, 2)  # a Monday
# code, name, mean service time (s), tickets on an ordinary day
SERVICES = (
    ("A", "户籍 household registry", 240.0, 185),
    ("B", "出入境 exit and entry", 420.0, 80),
    ("C", "社保 social insurance", 300.0, 130),
    ("D", "税务 tax", 540.0, 72),
)
SIGMA = 0.5  # log-sd of every service time
# counter, services in preference order, speed factor (>1: slower)
COUNTERS = (
    (1, ("A", "C"), 1.0),
    (2, ("A", "C"), 0.9),
    (3, ("A", "B"), 1.1),
    (4, ("B", "A"), 1.0),
    (5, ("B",), 1.2),
    (6, ("C", "D"), 0.95),
    (7, ("D", "C"), 1.0),
    (8, ("D",), 1.05),
)
LUNCH = {
    2: (time(12, 0), time(13, 30)),
    4: (time(11, 45), time(13, 0)),
    7: (time(12, 0), time(13, 30)),
}
OPENS, DISPENSER_STOPS, LAST_CALL = time(8, 30), time(16, 30), time(17, 30)
PRIORITY_SHARE = 0.10
NO_SHOW_P = 0.05
RECALL_EVERY_S = 30.0  # a no-show is recalled twice, then marked after this long again
WEEKDAY_FACTOR = (1.2, 1.05, 1.0, 0.95, 0.85)  # Monday .. Friday


def make_spec() -> HallSpec:
    return HallSpec(
        services=tuple(
            ServiceSpec(code=code, name=name, prefix=code, number=i, mean_service_s=300.0)
            for i, (code, name, _, _) in enumerate(SERVICES, 1)
        ),
        counters=tuple(
            CounterSpec(id=cid, name=f"{cid}号窗口", services=svcs) for cid, svcs, _ in COUNTERS
        ),
        timezone=TZ,
    )


def peak_shape(hours: float) -> float:
    """Arrivals per hour relative to the day's mean: a morning and an afternoon peak."""
    morning = math.exp(-0.5 * ((hours - 9.75) / 0.8) ** 2)
    afternoon = math.exp(-0.5 * ((hours - 14.75) / 1.0) ** 2)
    return 0.25 + 1.1 * morning + 0.9 * afternoon


SHAPE_MAX = 1.6
SHAPE_MEAN = 0.25 + (1.1 * 0.8 + 0.9 * 1.0) * math.sqrt(2 * math.pi) / 8.0  # over 08:30-16:30


@dataclass
class Day:
    """One simulated day: a simpy environment whose clock counts seconds from local midnight."""

    hall: SynthHall
    day: date
    env: simpy.Environment
    arrived: simpy.Event

    def at(self) -> datetime:
        # The log keeps whole seconds; so does the engine here, so replay matches exactly.
        midnight = datetime.combine(self.day, time(), tzinfo=self.hall.tz)
        return midnight + timedelta(seconds=math.floor(self.env.now))

    def secs(self, t: time) -> float:
        return t.hour * 3600.0 + t.minute * 60.0 + t.second


class SynthHall:
    def __init__(self, seed: int = 1, scale: float = 1.0) -> None:
        self.spec = make_spec()
        self.tz = ZoneInfo(TZ)
        self.engine = Engine(self.spec)
        self.rng = random.Random(seed)
        self.scale = scale
        self.log: list[StoredEvent] = []
        self._tokens = 0

    def execute(self, cmd: c.Command) -> list[Event]:
        out = self.engine.execute(cmd)
        for e in out:
            seq = len(self.log) + 1
            self.log.append(StoredEvent(seq, f"synth-{seq}", e.type, e.at, e.data))
        return out

    # -- processes --------------------------------------------------------------------------
    def arrivals(self, d: Day, code: str, per_day: float) -> Generator[Any, Any, None]:
        """Thinning: candidates at the peak rate, kept with probability shape/peak."""
        rate_max = per_day * SHAPE_MAX / (8 * 3600.0 * SHAPE_MEAN)  # per second at the peak
        yield d.env.timeout(d.secs(OPENS) - d.env.now)
        while True:
            yield d.env.timeout(self.rng.expovariate(rate_max))
            if d.env.now >= d.secs(DISPENSER_STOPS):
                return
            if self.rng.random() * SHAPE_MAX > peak_shape(d.env.now / 3600.0):
                continue
            self._tokens += 1
            priority = self.rng.random() < PRIORITY_SHARE
            token = f"synth-token-{self._tokens}"
            self.execute(c.TakeTicket(d.at(), code, token, priority=priority))
            wake, d.arrived = d.arrived, d.env.event()
            wake.succeed()

    def counter(
        self, d: Day, cid: int, services: tuple[str, ...], speed: float
    ) -> Generator[Any, Any, None]:
        env = d.env
        means = {code: mean for code, _, mean, _ in SERVICES}
        yield env.timeout(d.secs(OPENS) + self.rng.uniform(0, 300) - env.now)
        self.execute(c.OpenCounter(d.at(), cid))
        lunch = LUNCH.get(cid)
        while True:
            now = env.now
            if lunch and d.secs(lunch[0]) <= now < d.secs(lunch[1]):
                self.execute(c.CloseCounter(d.at(), cid))
                yield env.timeout(d.secs(lunch[1]) + self.rng.uniform(0, 240) - env.now)
                self.execute(c.OpenCounter(d.at(), cid))
                continue
            waiting = sum(self.engine.state.waiting(s) for s in services)
            if now >= d.secs(LAST_CALL) or (now >= d.secs(DISPENSER_STOPS) and not waiting):
                self.execute(c.CloseCounter(d.at(), cid))
                return
            called = [
                e for e in self.execute(c.CallNext(d.at(), cid)) if e.type == ev.TICKET_CALLED
            ]
            if not called:
                until = [d.secs(DISPENSER_STOPS), d.secs(LAST_CALL)]
                if lunch:
                    until.append(d.secs(lunch[0]))
                later = [t for t in until if t > now]
                yield d.arrived | env.timeout((min(later) if later else now + 60) - now)
                continue
            service = called[0].data["service"]
            if self.rng.random() < NO_SHOW_P:
                for _ in range(2):
                    yield env.timeout(RECALL_EVERY_S)
                    self.execute(c.Recall(d.at(), cid))
                yield env.timeout(RECALL_EVERY_S)
                self.execute(c.NoShow(d.at(), cid))
                continue
            yield env.timeout(self.rng.uniform(15, 45))  # walking to the counter
            self.execute(c.Serving(d.at(), cid))
            mean = means[service] * speed
            mu = math.log(mean) - SIGMA * SIGMA / 2
            yield env.timeout(self.rng.lognormvariate(mu, SIGMA))
            self.execute(c.Done(d.at(), cid))

    def simulate_day(self, day: date) -> None:
        env = simpy.Environment()
        d = Day(self, day, env, env.event())
        volume = WEEKDAY_FACTOR[day.weekday()] * self.rng.lognormvariate(0, 0.1) * self.scale
        for code, _, _, per_day in SERVICES:
            env.process(self.arrivals(d, code, per_day * volume))
        for cid, services, speed in COUNTERS:
            env.process(self.counter(d, cid, services, speed))
        env.run(until=24 * 3600 - 1)


def weekdays(start: date, count: int) -> list[date]:
    out: list[date] = []
    day = start
    while len(out) < count:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


def generate(
    days: int = 25, seed: int = 1, scale: float = 1.0, start: date = START
) -> list[StoredEvent]:
    """The event log of `days` simulated weekdays from `start`."""
    hall = SynthHall(seed, scale)
    for day in weekdays(start, days):
        hall.simulate_day(day)
    return hall.log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=25, help="weekdays to simulate (25)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0, help="arrival volume factor")
    p.add_argument("--out", type=Path, default=Path("bench/out/synthhall.jsonl"))
    a = p.parse_args()
    log = generate(a.days, a.seed, a.scale)
    write_log(log, a.out)
    tickets = sum(1 for e in log if e.type == ev.TICKET_ISSUED)
    print(f"{a.out}: {len(log)} events, {tickets} tickets over {a.days} weekdays")


if __name__ == "__main__":
    main()

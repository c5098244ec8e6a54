"""CPU time of one forecast update: a 20-counter hall mid-day with a realistic queue.

Plays bench/hallgen.py's hall (20 counters, 6 services, ~1,100 arrivals a day) through the
engine with the learned forecaster learning every event, for two days, then times, at
every change of the hall on the third day between 10:00 and 16:00, one update: learning
the events, the simulation of the new snapshot and every forecast the outputs ask of it
(each waiting ticket, and a ticket taken now in each service). Prints p50/p95/max CPU ms per update.

    nice -n 10 .venv/bin/python bench/forecast_bench.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hallgen import HallSim, make_spec
from hall_daemon.engine import Engine
from hall_daemon.events import StoredEvent
from hall_daemon.forecast import make_forecaster


def main() -> None:
    spec = make_spec(counters=20, services=6)
    sim = HallSim(spec, seed=7, tickets_per_day=(1000, 1200))
    engine = Engine(spec)
    f = make_forecaster(spec)
    seq = 0
    cpu_ms: list[float] = []
    queue: list[int] = []
    day0 = None
    for step in sim.steps(days=3):
        s = engine.state
        day0 = day0 or s.day
        at = step.command.at
        timed = bool(
            step.events and s.day is not None and (s.day - day0).days >= 2 and 10 <= at.hour < 16
        )
        started = time.process_time()
        for e in step.events:
            seq += 1
            engine.apply(e)
            f.learn(StoredEvent(seq, str(seq), e.type, e.at, e.data), engine.state)
        if not timed:
            continue
        # One update: the learning above (which simulates a new ticket's snapshot) and
        # every forecast the screens, the dispenser and MQTT then ask of this snapshot.
        for code in s.services:
            f(s, code, s.ahead_if_issued(code, False), at)
            for t in s.waiting_tickets(code):
                f.ticket(s, t.number, at)
        cpu_ms.append((time.process_time() - started) * 1000)
        queue.append(sum(s.waiting(code) for code in s.services))
    cpu_ms.sort()
    q = statistics.quantiles(cpu_ms, n=20)
    print(f"hall: 20 counters, 6 services; updates timed: {len(cpu_ms)}")
    print(f"waiting tickets: median {statistics.median(queue):.0f}, max {max(queue)}")
    print(f"CPU ms per update: p50 {statistics.median(cpu_ms):.1f}  p95 {q[18]:.1f}  "
          f"max {cpu_ms[-1]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()

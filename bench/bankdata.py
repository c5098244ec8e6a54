"""The Anonymous Bank call centre (February 1999) as a hall's event log, through the engine.

A call that queued is a ticket issued at `q_start` for service `type` (priority 2: a
priority ticket); agent `server` is a counter that calls exactly that ticket at `ser_start`
(`CallNumber`) and finishes it at `ser_exit`; a call that hung up while queued (`HANG`) is
cancelled ("left") at `q_exit`; `PHANTOM` calls are ignored. Calls that reached an agent
without queueing are not tickets (a hall's numbers stop at 999 a day and the busiest day
has 1,435 such calls in one service): the agent's counter is paused while serving them,
since the agent is busy and calls nobody. A counter opens at the first call it serves in a
shift (a run of an agent's calls with no gap over 45 minutes) and closes after the last.
Every step is a command to `Engine.execute`, so the log is one the engine itself wrote.

    .venv/bin/python bench/bankdata.py --out bench/out/bank.jsonl
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.engine import Engine
from hall_daemon.events import StoredEvent
from hall_daemon.forecast.replay import write_log
from hall_daemon.model import CounterSpec, DomainError, HallSpec, ServiceSpec
from hall_daemon.state import CALLED, OPEN, PAUSED, SERVING, WAITING

SOURCE = Path("/work/shared/data/anonymous-bank-1999-02.tsv")
TZ = "Asia/Jerusalem"
SHIFT_GAP_S = 45 * 60
SECOND = timedelta(seconds=1)
SERVICE_NAMES = {
    "PS": "regular",
    "PE": "regular (English)",
    "IN": "internet",
    "NE": "stock exchange",
    "NW": "new customer",
    "TT": "callback",
}
TRAIN_UNTIL = "1999-02-22"  # train on 1-21 February, test on 22-28


@dataclass(frozen=True, slots=True)
class Call:
    call_id: str  # unique in the file
    service: str
    priority: bool
    queued: bool
    outcome: str  # AGENT or HANG
    agent: str | None
    q_start: datetime | None
    q_exit: datetime | None
    ser_start: datetime | None
    ser_exit: datetime | None


def _when(day: date, hms: str, tz: ZoneInfo) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return datetime.combine(day, time(), tzinfo=tz) + timedelta(hours=h, minutes=m, seconds=s)


def read_calls(path: Path = SOURCE) -> list[Call]:
    tz = ZoneInfo(TZ)
    calls = []
    with open(path, encoding="utf-8", newline="") as f:
        for row, r in enumerate(csv.DictReader(f, delimiter="\t"), 2):
            if r["outcome"] == "PHANTOM":
                continue
            d = r["date"]
            day = date(
                1900 + int(d[:2]) if int(d[:2]) > 50 else 2000 + int(d[:2]), int(d[2:4]), int(d[4:])
            )
            queued = r["q_start"] != "0:00:00"
            served = r["outcome"] == "AGENT" and r["server"] != "NO_SERVER"
            calls.append(
                Call(
                    call_id=f"{row}",  # the file's line: call ids repeat across entry lines
                    service=r["type"],
                    priority=r["priority"] == "2",
                    queued=queued,
                    outcome="AGENT" if served else "HANG",
                    agent=r["server"] if served else None,
                    q_start=_when(day, r["q_start"], tz) if queued else None,
                    q_exit=_when(day, r["q_exit"], tz) if queued else None,
                    ser_start=_when(day, r["ser_start"], tz) if served else None,
                    ser_exit=_when(day, r["ser_exit"], tz) if served else None,
                )
            )
    return calls


def make_spec(calls: list[Call]) -> HallSpec:
    """Services by volume; each agent a counter serving what it served, most served first."""
    volume = Counter(c.service for c in calls if c.queued)
    served: dict[str, Counter[str]] = defaultdict(Counter)
    for call in calls:
        if call.agent is not None and call.queued:
            served[call.agent][call.service] += 1
    for call in calls:  # agents who only took calls that did not queue still get a counter
        if call.agent is not None and call.agent not in served:
            served[call.agent][call.service] += 0
    services = [code for code, _ in volume.most_common()]
    return HallSpec(
        services=tuple(
            ServiceSpec(
                code=code,
                name=SERVICE_NAMES.get(code, code),
                prefix=code,
                number=i,
                mean_service_s=180.0,
            )
            for i, code in enumerate(services, 1)
        ),
        counters=tuple(
            CounterSpec(
                id=i,
                name=agent,
                services=tuple(s for s, _ in served[agent].most_common() if s in volume)
                or (services[0],),
            )
            for i, agent in enumerate(sorted(served), 1)
        ),
        timezone=TZ,
        day_reset_hour=4,
    )


_NO_CALL = Call("", "", False, False, "", None, None, None, None, None)  # a counter's own step

# What happens at one instant happens in this order: counters free up before they call.
DONE, LEAVE, RESUME, CLOSE, ISSUE, CALL, PAUSE = range(7)


@dataclass(frozen=True, slots=True)
class Step:
    at: datetime
    rank: int
    order: int  # the input's order, to break the remaining ties deterministically
    kind: int
    call: Call
    counter: int


def plan(calls: list[Call], spec: HallSpec) -> list[Step]:
    counter_of = {cs.name: cs.id for cs in spec.counters}
    steps: list[Step] = []
    for i, call in enumerate(calls):
        if call.queued:
            assert call.q_start is not None and call.q_exit is not None
            steps.append(Step(call.q_start, ISSUE, i, ISSUE, call, 0))
            if call.agent is None:
                left = max(
                    call.q_exit, call.q_start + SECOND
                )  # after its issue, same second or not
                steps.append(Step(left, LEAVE, i, LEAVE, call, 0))
        if call.agent is not None:
            assert call.ser_start is not None and call.ser_exit is not None
            cid = counter_of[call.agent]
            start = max(call.ser_start, call.q_start or call.ser_start)
            end = max(call.ser_exit, start + SECOND)  # a zero-second call ends after it starts
            if call.queued:
                steps.append(Step(start, CALL, i, CALL, call, cid))
                steps.append(Step(end, DONE, i, DONE, call, cid))
            else:
                steps.append(Step(start, PAUSE, i, PAUSE, call, cid))
                steps.append(Step(end, RESUME, i, RESUME, call, cid))
    # Shifts: an agent's busy intervals, cut where the agent was away over SHIFT_GAP_S.
    busy: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for s in steps:
        if s.kind in (CALL, PAUSE):
            call = s.call
            assert call.ser_exit is not None
            busy[s.counter].append((s.at, max(call.ser_exit, s.at)))
    for cid, spans in busy.items():
        spans.sort()
        last_end = spans[0][1]
        for start, end in spans[1:]:
            if (start - last_end).total_seconds() > SHIFT_GAP_S or start.date() != last_end.date():
                steps.append(Step(last_end, CLOSE, 0, CLOSE, _NO_CALL, cid))
            last_end = max(last_end, end)
        steps.append(Step(last_end, CLOSE, 0, CLOSE, _NO_CALL, cid))
    steps.sort(key=lambda s: (s.at, s.rank, s.order, s.counter))
    return steps


class Converter:
    def __init__(self, spec: HallSpec) -> None:
        self.spec = spec
        self.engine = Engine(spec)
        self.log: list[StoredEvent] = []
        self.number: dict[str, str] = {}  # call id -> ticket number today
        self.skipped: Counter[str] = Counter()

    def run(self, cmd: c.Command) -> list[ev.Event]:
        try:
            out = self.engine.execute(cmd)
        except DomainError as exc:
            self._store(exc.events)  # a new hall day may have begun before the refusal
            self.skipped[type(cmd).__name__ + ": " + exc.slug] += 1
            return []
        self._store(out)
        return out

    def _store(self, out: list[ev.Event]) -> None:
        for e in out:
            seq = len(self.log) + 1
            self.log.append(StoredEvent(seq, f"bank-{seq}", e.type, e.at, e.data))

    def step(self, s: Step) -> None:
        self.run(c.Tick(s.at))  # a new hall day closes yesterday before the checks below
        state = self.engine.state
        call = s.call
        if s.kind == ISSUE:
            token = f"bank-call-{call.call_id}"
            for e in self.run(c.TakeTicket(s.at, call.service, token, "remote", call.priority)):
                if e.type == ev.TICKET_ISSUED:
                    self.number[call.call_id] = e.data["number"]
        elif s.kind == LEAVE:
            number = self.number.pop(call.call_id, None)
            t = state.tickets.get(number or "")
            if t is not None and t.state == WAITING:
                self.run(c.Cancel(s.at, t.number, "left"))
        elif s.kind == CALL:
            number = self.number.get(call.call_id)
            t = state.tickets.get(number or "")
            if t is None or t.state != WAITING:
                self.skipped["call of a ticket not waiting"] += 1
                return
            self.run(c.CallNumber(s.at, s.counter, t.number))
        elif s.kind == DONE:
            number = self.number.pop(call.call_id, None)
            counter = state.counters[s.counter]
            if number is not None and counter.current == number:
                t = state.tickets[number]
                if t.state in (CALLED, SERVING):
                    self.run(c.Done(s.at, s.counter))
        elif s.kind == PAUSE:
            counter = state.counters[s.counter]
            if counter.current is not None:
                self.skipped["walk-in while serving a ticket"] += 1
                return
            if counter.state != OPEN:
                self.run(c.OpenCounter(s.at, s.counter))
            self.run(c.PauseCounter(s.at, s.counter))
        elif s.kind == RESUME:
            if state.counters[s.counter].state == PAUSED:
                self.run(c.OpenCounter(s.at, s.counter))
        elif s.kind == CLOSE:
            self.run(c.CloseCounter(s.at, s.counter))


def convert(path: Path = SOURCE) -> tuple[HallSpec, list[StoredEvent], Counter[str]]:
    calls = read_calls(path)
    spec = make_spec(calls)
    conv = Converter(spec)
    for s in plan(calls, spec):
        conv.step(s)
    return spec, conv.log, conv.skipped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--out", type=Path, default=Path("bench/out/bank.jsonl"))
    a = p.parse_args()
    spec, log, skipped = convert(a.source)
    write_log(log, a.out)
    tickets = sum(1 for e in log if e.type == ev.TICKET_ISSUED)
    print(f"{a.out}: {len(log)} events, {tickets} tickets, {len(spec.counters)} counters")
    for why, n in skipped.most_common():
        print(f"  skipped {n}: {why}")


if __name__ == "__main__":
    main()

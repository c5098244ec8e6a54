"""Replaying an exported event log: read it, infer the hall it describes, rebuild its state.

The evaluation sees the log exactly as the daemon's recovery does: each event goes through
`Engine.apply`, and whoever listens gets the event with the state right after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .. import events as ev
from ..engine import DAY_STARTED, Engine
from ..events import StoredEvent
from ..model import CounterSpec, HallSpec, ServiceSpec
from ..state import HallState


class LogError(ValueError):
    """A log that cannot be evaluated, and the line (1-based) at fault when there is one."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def where(self, path: str | Path) -> str:
        """`file:line: message`, as compilers say it."""
        return f"{path}:{self.line}: {self}" if self.line else f"{path}: {self}"


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    line: int  # 1-based line in the file, for error messages
    event: StoredEvent


def read_log(path: str | Path) -> list[LoggedEvent]:
    """Every event of a JSON-lines log, in seq order; blank lines are allowed."""
    out: list[LoggedEvent] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(LoggedEvent(n, ev.loads(line)))
                except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
                    raise LogError(f"not a contract event: {exc}", n) from None
    except OSError as exc:
        raise LogError(f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LogError(f"not UTF-8 text: {exc.reason}") from None
    if not out:
        raise LogError("holds no events")
    out.sort(key=lambda le: le.event.seq)
    return out


def write_log(events: Iterable[StoredEvent], path: str | Path) -> None:
    """The events as the JSON lines `read_log` reads (and `events export` writes), written to
    a temporary file first so a reader never sees half a log."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in events:
            f.write(ev.dumps(e) + "\n")
    tmp.replace(path)


def _zone_for(at: datetime) -> str:
    """A zone name for a log that carries only UTC offsets (whole hours; else UTC)."""
    offset = at.utcoffset() or timedelta()
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    if rest or hours == 0:
        return "UTC"
    return f"Etc/GMT{-hours:+d}"  # POSIX sign: Etc/GMT-8 is UTC+8


def infer_spec(events: Iterable[StoredEvent]) -> HallSpec:
    """The hall a log describes: services from its tickets, counters from their openings.

    A counter's services keep the order its `counter.opened` events list them in (its
    preference order); services named only later are appended.
    """
    services: dict[str, str] = {}  # code -> prefix
    counters: dict[int, list[str]] = {}
    first: datetime | None = None
    for e in events:
        first = first or e.at
        d = e.data
        if e.type == ev.TICKET_ISSUED:
            services.setdefault(str(d["service"]), str(d["number"])[:-3])
        elif e.type == ev.TICKET_TRANSFERRED:
            services.setdefault(str(d["to"]), "")
        elif e.type == ev.COUNTER_OPENED:
            have = counters.setdefault(int(d["counter"]), [])
            have.extend(s for s in d.get("services", []) if s not in have)
        elif e.type == ev.TICKET_CALLED:
            counters.setdefault(int(d["counter"]), [])
    if not services:
        raise LogError("the log issues no tickets: nothing to evaluate")
    for have in counters.values():
        services.update({s: services.get(s, "") for s in have})
    used = {p for p in services.values() if p}
    specs = []
    for i, (code, prefix) in enumerate(services.items(), 1):
        if not prefix:  # a service no ticket was issued in: any free prefix will do
            prefix = next(f"Z{chr(65 + k)}" for k in range(26) if f"Z{chr(65 + k)}" not in used)
            used.add(prefix)
        specs.append(ServiceSpec(code=code, name=code, prefix=prefix, number=i))
    return HallSpec(
        services=tuple(specs),
        counters=tuple(
            CounterSpec(id=cid, name=str(cid), services=tuple(svcs))
            for cid, svcs in sorted(counters.items())
        ),
        timezone=_zone_for(first) if first else "UTC",
    )


def replay(spec: HallSpec, log: Iterable[LoggedEvent]) -> Iterator[tuple[StoredEvent, HallState]]:
    """Each event with the hall's state right after it, from the first hall day's start.

    Events before the first `hall.day_started` are skipped: a state can only be rebuilt
    from the start of a hall day (an export cut mid-day begins the next morning).
    """
    engine = Engine(spec)
    started = False
    for le in log:
        e = le.event
        if not started:
            if e.type != DAY_STARTED:
                continue
            started = True
        try:
            engine.apply(e.event)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise LogError(
                f"event seq {e.seq} ({e.type}) does not apply to the hall the log built "
                f"so far: {exc!r}",
                le.line,
            ) from None
        yield e, engine.state
    if not started:
        raise LogError("the log holds no hall.day_started event: no hall day to replay")

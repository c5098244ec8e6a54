"""The hall's state as the engine keeps it, and the read-only questions outputs ask of it.

State changes only by applying events (hall_daemon.engine), so a replay of the log rebuilds
exactly the state the live daemon had. Everything here serialises to a JSON snapshot.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from .limits import appointment_holdable
from .model import HallSpec

WAITING, CALLED, SERVING, SUSPENDED = "waiting", "called", "serving", "suspended"
DONE, NO_SHOW, CANCELLED = "done", "no_show", "cancelled"
TERMINAL = frozenset({DONE, NO_SHOW, CANCELLED})
OPEN, PAUSED, CLOSED = "open", "paused", "closed"

QueueKey = tuple[float, int]  # (original issue time as epoch seconds, issue order): FIFO order


@dataclass(slots=True)
class Ticket:
    number: str
    service: str  # where it queues now; a transfer changes it
    token: str
    priority: bool
    channel: str
    issued_at: datetime  # kept through transfers (一票到底)
    order: int
    appointment: str | None = None
    state: str = WAITING
    counter: int | None = None  # the counter that called or suspended it
    recalls: int = 0
    called_at: datetime | None = None
    finished_at: datetime | None = None
    rated: bool = False

    @property
    def key(self) -> QueueKey:
        return (self.issued_at.timestamp(), self.order)

    @property
    def urgent(self) -> bool:
        """Priority tickets and checked-in appointments are called before the others."""
        return self.priority or self.appointment is not None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "service": self.service,
            "token": self.token,
            "priority": self.priority,
            "channel": self.channel,
            "issued_at": self.issued_at.isoformat(),
            "order": self.order,
            "appointment": self.appointment,
            "state": self.state,
            "counter": self.counter,
            "recalls": self.recalls,
            "called_at": self.called_at.isoformat() if self.called_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "rated": self.rated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ticket:
        def when(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return cls(
            number=d["number"],
            service=d["service"],
            token=d["token"],
            priority=d["priority"],
            channel=d["channel"],
            issued_at=datetime.fromisoformat(d["issued_at"]),
            order=d["order"],
            appointment=d["appointment"],
            state=d["state"],
            counter=d["counter"],
            recalls=d["recalls"],
            called_at=when(d["called_at"]),
            finished_at=when(d["finished_at"]),
            rated=d["rated"],
        )


@dataclass(slots=True)
class Counter:
    id: int
    services: tuple[str, ...]
    state: str = CLOSED
    current: str | None = None  # ticket number being called or served
    last: str | None = None  # the ticket it finished last: what its evaluator rates
    since: datetime | None = None  # when the state or the current ticket last changed
    priority_streak: int = 0  # urgent tickets called in a row, for anti-starvation
    suspended: list[str] = field(default_factory=list)  # in the order they were set aside

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "current": self.current,
            "last": self.last,
            "since": self.since.isoformat() if self.since else None,
            "priority_streak": self.priority_streak,
            "suspended": list(self.suspended),
        }


@dataclass(slots=True)
class Appointment:
    code: str
    service: str
    start: datetime
    end: datetime
    ticket: str | None = None  # number once checked in

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "service": self.service,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "ticket": self.ticket,
        }


class HallState:
    """Tickets of the current hall day, counters, appointments and device health."""

    def __init__(self, spec: HallSpec) -> None:
        self.spec = spec
        self.services = {s.code: s for s in spec.services}
        self.day: date | None = None
        self.tickets: dict[str, Ticket] = {}  # today's, by number
        self.by_token: dict[str, Ticket] = {}
        self.next_number: dict[str, int] = {}  # by prefix
        self.issued: dict[str, int] = {}  # tickets issued today, by original service
        self.order = 0
        # Waiting tickets per service, sorted by QueueKey; urgent ones in their own list.
        self.urgent_queue: dict[str, list[QueueKey]] = {s.code: [] for s in spec.services}
        self.normal_queue: dict[str, list[QueueKey]] = {s.code: [] for s in spec.services}
        self.by_key: dict[QueueKey, Ticket] = {}
        self.counters = {c.id: Counter(c.id, c.services) for c in spec.counters}
        self.appointments: dict[str, Appointment] = {}
        self.devices: dict[str, tuple[str, str]] = {}  # device -> (state, detail)
        self.notice = ""  # set by an admin; the screens fall back to config.yaml's when empty
        # Counts the events applied to this object (not saved): readers that derive something
        # from the state can tell that it has not changed since they last looked.
        self.version = 0

    # -- queue bookkeeping, used only by the engine's apply ------------------------------
    def enqueue(self, t: Ticket) -> None:
        q = self.urgent_queue if t.urgent else self.normal_queue
        key = t.key
        insort(q[t.service], key)
        self.by_key[key] = t

    def dequeue(self, t: Ticket) -> None:
        q = (self.urgent_queue if t.urgent else self.normal_queue)[t.service]
        key = t.key
        i = bisect_left(q, key)
        if i < len(q) and q[i] == key:
            del q[i]
        del self.by_key[key]

    def start_day(self, day: date) -> None:
        """A new hall day: numbers restart; finished tickets leave memory (they stay in the log)."""
        self.day = day
        self.tickets = {n: t for n, t in self.tickets.items() if not t.finished}
        self.by_token = {t.token: t for t in self.tickets.values()}
        self.next_number = {}
        self.issued = {}
        for c in self.counters.values():
            c.last = None
            c.priority_streak = 0

    # -- read-only questions ------------------------------------------------------------
    def waiting(self, service: str) -> int:
        return len(self.urgent_queue[service]) + len(self.normal_queue[service])

    def waiting_for_counter(self, counter_id: int) -> int:
        return sum(self.waiting(s) for s in self.counters[counter_id].services)

    def ahead_of(self, t: Ticket) -> int:
        """How many waiting tickets of its service come before it (urgent ones first)."""
        urgent = self.urgent_queue[t.service]
        if t.urgent:
            return bisect_left(urgent, t.key)
        return len(urgent) + bisect_left(self.normal_queue[t.service], t.key)

    def ahead_if_issued(self, service: str, urgent: bool) -> int:
        """Tickets ahead of one issued now: it goes after every waiting ticket of its class."""
        n = len(self.urgent_queue[service])
        return n if urgent else n + len(self.normal_queue[service])

    def open_counters(self, service: str) -> list[Counter]:
        return [c for c in self.counters.values() if c.state == OPEN and service in c.services]

    def serving_numbers(self, service: str) -> list[str]:
        return [
            t.number
            for c in self.counters.values()
            if c.current and (t := self.tickets[c.current]).service == service
        ]

    def waiting_tickets(self, service: str) -> list[Ticket]:
        """In calling order among themselves: urgent first, then by original issue time."""
        return [self.by_key[k] for k in self.urgent_queue[service] + self.normal_queue[service]]

    # -- snapshots ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat() if self.day else None,
            "order": self.order,
            "next_number": self.next_number,
            "issued": self.issued,
            "tickets": [t.to_dict() for t in self.tickets.values()],
            "counters": [c.to_dict() for c in self.counters.values()],
            "appointments": [a.to_dict() for a in self.appointments.values()],
            "devices": {k: list(v) for k, v in self.devices.items()},
            "notice": self.notice,
        }

    @classmethod
    def from_dict(cls, spec: HallSpec, d: dict[str, Any]) -> HallState:
        s = cls(spec)
        s.day = date.fromisoformat(d["day"]) if d["day"] else None
        s.order = d["order"]
        s.next_number = dict(d["next_number"])
        s.issued = dict(d["issued"])
        for td in d["tickets"]:
            t = Ticket.from_dict(td)
            s.tickets[t.number] = t
            s.by_token[t.token] = t
            if t.state == WAITING:
                s.enqueue(t)
        for cd in d["counters"]:
            c = s.counters.get(cd["id"])
            if c is None:  # a counter removed from config.yaml since the snapshot
                continue
            c.state, c.current, c.last = cd["state"], cd["current"], cd["last"]
            c.since = datetime.fromisoformat(cd["since"]) if cd["since"] else None
            c.priority_streak = cd["priority_streak"]
            c.suspended = list(cd["suspended"])
        for ad in d["appointments"]:
            a = Appointment(
                ad["code"],
                ad["service"],
                datetime.fromisoformat(ad["start"]),
                datetime.fromisoformat(ad["end"]),
                ad["ticket"],
            )
            # A snapshot written before the limits may hold one the calendar cannot.
            if appointment_holdable(a.start, a.end):
                s.appointments[a.code] = a
        s.devices = {k: (v[0], v[1]) for k, v in d["devices"].items()}
        s.notice = d.get("notice", "")  # snapshots from before notices were set have none
        return s

"""Events: what happened in the hall, in the words and JSON of ../shared/spec/mqtt.md.

The engine returns `Event`s; the store gives each a `seq` and an `id` and returns
`StoredEvent`s. One pair of functions turns a stored event into its contract JSON and back,
and the export, the replay and the MQTT sync all use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The types of the contract, plus the two appointment types the daemon keeps in the same log
# so that a restart recovers appointments as it recovers tickets, and the admin's requests.
TICKET_ISSUED = "ticket.issued"
TICKET_CALLED = "ticket.called"
TICKET_RECALLED = "ticket.recalled"
TICKET_SERVING = "ticket.serving"
TICKET_DONE = "ticket.done"
TICKET_NO_SHOW = "ticket.no_show"
TICKET_SUSPENDED = "ticket.suspended"
TICKET_RESUMED = "ticket.resumed"
TICKET_TRANSFERRED = "ticket.transferred"
TICKET_CANCELLED = "ticket.cancelled"
TICKET_RATED = "ticket.rated"
COUNTER_OPENED = "counter.opened"
COUNTER_PAUSED = "counter.paused"
COUNTER_CLOSED = "counter.closed"
DEVICE_ONLINE = "device.online"
DEVICE_OFFLINE = "device.offline"
DEVICE_FAULT = "device.fault"
APPOINTMENT_UPSERTED = "appointment.upserted"
APPOINTMENT_CANCELLED = "appointment.cancelled"
# Admin actions beyond the contract's list, logged like every other change.
NOTICE_SET = "hall.notice_set"
REPRINT_REQUESTED = "receipt.reprint_requested"
REPLAY_REQUESTED = "call.replay_requested"

EVENT_TYPES = frozenset(
    {
        TICKET_ISSUED,
        TICKET_CALLED,
        TICKET_RECALLED,
        TICKET_SERVING,
        TICKET_DONE,
        TICKET_NO_SHOW,
        TICKET_SUSPENDED,
        TICKET_RESUMED,
        TICKET_TRANSFERRED,
        TICKET_CANCELLED,
        TICKET_RATED,
        COUNTER_OPENED,
        COUNTER_PAUSED,
        COUNTER_CLOSED,
        DEVICE_ONLINE,
        DEVICE_OFFLINE,
        DEVICE_FAULT,
        APPOINTMENT_UPSERTED,
        APPOINTMENT_CANCELLED,
        NOTICE_SET,
        REPRINT_REQUESTED,
        REPLAY_REQUESTED,
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """Something the engine decided happened, not yet stored."""

    type: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as committed: numbered hall-wide and identified for deduplication."""

    seq: int
    id: str
    type: str
    at: datetime
    data: dict[str, Any]

    @property
    def event(self) -> Event:
        return Event(self.type, self.at, self.data)


def format_time(at: datetime) -> str:
    """ISO 8601 with the hall's UTC offset, to the second (the contract's time format)."""
    if at.tzinfo is None:
        raise ValueError("event times must carry a UTC offset")
    return at.isoformat(timespec="seconds")


def to_contract(event: StoredEvent) -> dict[str, Any]:
    """The event as the contract's JSON object (`<base>/events`, the export, the replay)."""
    return {
        "v": 1,
        "seq": event.seq,
        "id": event.id,
        "type": event.type,
        "at": format_time(event.at),
        "data": event.data,
    }


def from_contract(obj: dict[str, Any]) -> StoredEvent:
    """Parse one contract JSON object back into a stored event; raises ValueError if malformed."""
    try:
        seq, eid, etype, at, data = obj["seq"], obj["id"], obj["type"], obj["at"], obj["data"]
    except KeyError as exc:
        raise ValueError(f"event lacks field {exc.args[0]!r}") from None
    if not isinstance(seq, int) or seq < 1:
        raise ValueError(f"event seq must be a positive integer, got {seq!r}")
    if not isinstance(data, dict):
        raise ValueError("event data must be an object")
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError(f"event time {at!r} lacks a UTC offset")
    return StoredEvent(seq=seq, id=str(eid), type=str(etype), at=when, data=data)


def dumps(event: StoredEvent) -> str:
    """One JSON line, compact, UTF-8 text kept readable (Chinese names stay Chinese)."""
    return json.dumps(to_contract(event), ensure_ascii=False, separators=(",", ":"))


def loads(line: str) -> StoredEvent:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("an event line must hold a JSON object")
    return from_contract(obj)

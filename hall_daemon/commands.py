"""Commands: what an adapter (a device, the kiosk, the app, an admin) asks the hall to do.

Every command carries the time it happened; the engine has no clock of its own.
Counters are named by their number, services by their code, tickets by their number (`A012`)
or by the token printed in their QR code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Channel = Literal["dispenser", "remote", "appointment", "counter"]
DeviceState = Literal["online", "offline", "fault"]


@dataclass(frozen=True, slots=True)
class TakeTicket:
    at: datetime
    service: str
    token: str  # unguessable, made by the adapter (tokens.new_token)
    channel: Channel = "dispenser"
    priority: bool = False
    number: str | None = None  # set when a self-numbering dispenser already printed it (ISSUED)


@dataclass(frozen=True, slots=True)
class CheckIn:
    """An appointment's code scanned at a dispenser: it becomes a ticket that is called first."""

    at: datetime
    code: str
    token: str


@dataclass(frozen=True, slots=True)
class CallNext:
    """Finish the counter's current ticket, if any, and call the next one by the policy."""

    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class CallNumber:
    """Finish the current ticket and call a given one (`A012`, or digits only: `12`)."""

    at: datetime
    counter: int
    number: str


@dataclass(frozen=True, slots=True)
class Recall:
    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class Serving:
    """The called applicant arrived at the counter."""

    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class Done:
    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class NoShow:
    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class Suspend:
    """Set the current ticket aside (missing papers); the counter calls it back later."""

    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class Resume:
    """Call back the earliest ticket this counter suspended."""

    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """Finish here and queue the current ticket for another service at its original issue time."""

    at: datetime
    counter: int
    service: str


@dataclass(frozen=True, slots=True)
class OpenCounter:
    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class PauseCounter:
    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class TogglePause:
    """The keypad's PAUSE key: open ↔ paused."""

    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class CloseCounter:
    at: datetime
    counter: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel a ticket that is not finished, by number (`A012`) or token."""

    at: datetime
    ticket: str
    reason: str = "cancelled"


@dataclass(frozen=True, slots=True)
class Rate:
    """The evaluator's score for the ticket this counter served last."""

    at: datetime
    counter: int
    score: int


@dataclass(frozen=True, slots=True)
class UpsertAppointment:
    at: datetime
    code: str
    service: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class CancelAppointment:
    at: datetime
    code: str


@dataclass(frozen=True, slots=True)
class ReportDevice:
    """A device's health changed; logged as device.* only when its state or detail changes."""

    at: datetime
    device: str
    port: str
    kind: str
    state: DeviceState
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MoveTicket:
    """An admin moves a waiting ticket to another service's queue, keeping its issue time."""

    at: datetime
    ticket: str  # number or token
    service: str


@dataclass(frozen=True, slots=True)
class SetNotice:
    """The scrolling notice (信息公示) the screens show; empty falls back to config.yaml's."""

    at: datetime
    text: str


@dataclass(frozen=True, slots=True)
class RequestReprint:
    """Print a ticket's receipt again (the printer listens for the event)."""

    at: datetime
    ticket: str  # number or token


@dataclass(frozen=True, slots=True)
class ReplayCall:
    """Announce a call again: a ticket at a counter, or the ticket a counter is calling."""

    at: datetime
    ticket: str | None = None
    counter: int | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock moved on: closes yesterday at the day's reset hour even when nobody acts."""

    at: datetime


Command = (
    TakeTicket
    | CheckIn
    | CallNext
    | CallNumber
    | Recall
    | Serving
    | Done
    | NoShow
    | Suspend
    | Resume
    | Transfer
    | OpenCounter
    | PauseCounter
    | TogglePause
    | CloseCounter
    | Cancel
    | Rate
    | UpsertAppointment
    | CancelAppointment
    | ReportDevice
    | MoveTicket
    | SetNotice
    | RequestReprint
    | ReplayCall
    | Tick
)

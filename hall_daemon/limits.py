"""The limits a command must keep before the engine acts on it.

`check` runs first in `Engine.execute`, so every adapter (serial devices, the kiosk, MQTT,
the admin) gets the same refusal for the same bad value, whatever it checked itself. The
limits are the contracts' (../shared/spec/mqtt.md, serial-protocols.md) and, beyond them,
whatever keeps each value within what the state, its snapshot, the store, the next day
reset and the forecaster can hold: times the calendar can shift, text without NUL or lone
surrogates (neither UTF-8 nor PostgreSQL can store them), numbers of a sensible size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from . import commands as c
from .model import Invalid

# Command times: the hall's clock, which is never this far off; well inside datetime's range,
# so a day reset, a week's outlook or a time zone shift cannot overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# Appointments, as mqtt.md's appointment.upsert says.
APPOINTMENT_MAX_LENGTH = timedelta(hours=12)
APPOINTMENT_HORIZON = timedelta(days=400)

MAX_CODE = 64  # an appointment's code (mqtt.md's commands take up to 64 characters)
MAX_SCAN = 256  # what a kiosk or dispenser scanned to check in: a code or a QR code's URL
MAX_REF = 64  # a ticket named by its number or token
MAX_SERVICE = 64  # longer than any configured code: such a value cannot name a service
MAX_REASON = 64
MAX_NAME = 256  # a device's name, port and kind
MAX_DETAIL = 500
MAX_NOTICE = 500  # characters: a scrolling line, not a document
MAX_NOTICE_INPUT = 5000  # before whitespace is folded
MAX_COUNTER = 999  # counter ids in config.yaml are 1..999
CHANNELS = frozenset({"dispenser", "remote", "appointment", "counter"})
# Tokens become MQTT topic levels (<base>/tickets/<token>): no '/', '+', '#' or spaces.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,64}")

Rule = Callable[[str, object], None]


def check(cmd: object) -> None:
    """Refuse (Invalid, with the field's slug) a command whose fields are out of bounds."""
    rules = _RULES.get(type(cmd))
    if rules is None:
        raise Invalid(f"{type(cmd).__name__} is not a hall command", "bad-command")
    _clock("at", getattr(cmd, "at", None))
    for name, rule in rules:
        rule(name, getattr(cmd, name))
    if isinstance(cmd, c.UpsertAppointment):
        problem = appointment_window_problem(cmd.start, cmd.end, cmd.at)
        if problem is not None:
            raise Invalid(problem, "bad-time")


def appointment_window_problem(start: object, end: object, now: datetime) -> str | None:
    """Why an appointment from `start` to `end`, made at `now`, breaks mqtt.md, or None."""
    if not (_aware(start) and _aware(end)):
        return "appointment start and end need a UTC offset, e.g. 2026-12-08T09:00+08:00"
    assert isinstance(start, datetime) and isinstance(end, datetime)
    if end <= start:
        return "an appointment must end after it starts"
    if end - start > APPOINTMENT_MAX_LENGTH:
        return "an appointment lasts at most 12 hours"
    if abs(start - now) > APPOINTMENT_HORIZON or abs(end - now) > APPOINTMENT_HORIZON:
        return "an appointment must lie within 400 days of now"
    return None


def appointment_holdable(start: datetime, end: datetime) -> bool:
    """Whether an appointment (from a snapshot) lies where any accepted one can lie."""
    return EARLIEST - APPOINTMENT_HORIZON <= start < end <= LATEST + APPOINTMENT_HORIZON


def _aware(value: object) -> bool:
    return isinstance(value, datetime) and value.utcoffset() is not None


# -- rules: each takes the field's name and value and raises Invalid -----------------------


def _clock(name: str, value: object) -> None:
    """The adapter's clock, not the applicant's input: a plain `invalid` if it is wrong."""
    if not _aware(value):
        raise Invalid(f"{name}: the command's time lacks a UTC offset")
    assert isinstance(value, datetime)
    # By the local year: comparing aware datetimes of two zones costs a microsecond, on
    # every command, and the year is as good a bound.
    if not EARLIEST.year <= value.year < LATEST.year:
        raise Invalid(f"{name}: the command's time is not between 1970 and 2200")


def _text(max_len: int, slug: str, *, empty: bool = False) -> Rule:
    """One line of printable text (no controls, NUL, lone surrogates or bidi overrides)."""

    def rule(name: str, value: object) -> None:
        if not isinstance(value, str):
            raise Invalid(f"{name}: text expected", slug)
        if len(value) > max_len or (not value and not empty):
            raise Invalid(f"{name}: {0 if empty else 1} to {max_len} characters expected", slug)
        if not value.isprintable():
            raise Invalid(f"{name}: only printable characters on one line", slug)

    return rule


def _token(name: str, value: object) -> None:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise Invalid(f"{name}: 1 to 64 of A-Z a-z 0-9 - _ . ~ expected", "bad-token")


def _counter(name: str, value: object) -> None:
    if type(value) is not int or not 1 <= value <= MAX_COUNTER:
        raise Invalid(f"{name}: a counter number 1..{MAX_COUNTER} expected", "bad-counter")


def _score(name: str, value: object) -> None:
    if type(value) is not int or not 1 <= value <= 5:
        raise Invalid(f"{name}: a rating 1..5 expected", "bad-score")


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise Invalid(f"{name}: true or false expected", "bad-request")


def _channel(name: str, value: object) -> None:
    if value not in CHANNELS:
        raise Invalid(f"{name}: one of {', '.join(sorted(CHANNELS))} expected", "bad-channel")


def _ticket_number(name: str, value: object) -> None:
    """What a keypad or dispenser sends as a number: ASCII (int() also reads '١٢')."""
    _text(8, "bad-number", empty=True)(name, value)
    assert isinstance(value, str)
    if not value.isascii():
        raise Invalid(f"{name}: a ticket number such as A012 or 12 expected", "bad-number")


def _notice(name: str, value: object) -> None:
    """Any whitespace is folded into one line by the engine; the rest must be printable."""
    if not isinstance(value, str):
        raise Invalid(f"{name}: text expected", "bad-text")
    if len(value) > MAX_NOTICE_INPUT:
        raise Invalid(f"{name}: at most {MAX_NOTICE} characters expected", "notice-too-long")
    line = fold(value)
    if len(line) > MAX_NOTICE:
        raise Invalid(f"{name}: at most {MAX_NOTICE} characters expected", "notice-too-long")
    if not line.isprintable():
        raise Invalid(f"{name}: only printable characters", "bad-text")


def fold(text: str) -> str:
    """One line: newlines and tabs would break a ticker."""
    return " ".join(text.split())


def _optional(rule: Rule) -> Rule:
    def optional(name: str, value: object) -> None:
        if value is not None:
            rule(name, value)

    return optional


_service = _text(MAX_SERVICE, "bad-service")
_ref = _text(MAX_REF, "bad-ticket")

_RULES: dict[type, tuple[tuple[str, Rule], ...]] = {
    c.TakeTicket: (
        ("service", _service),
        ("token", _token),
        ("channel", _channel),
        ("priority", _flag),
        ("number", _optional(_ticket_number)),
    ),
    c.CheckIn: (("code", _text(MAX_SCAN, "bad-code")), ("token", _token)),
    c.CallNext: (("counter", _counter),),
    c.CallNumber: (("counter", _counter), ("number", _ticket_number)),
    c.Recall: (("counter", _counter),),
    c.Serving: (("counter", _counter),),
    c.Done: (("counter", _counter),),
    c.NoShow: (("counter", _counter),),
    c.Suspend: (("counter", _counter),),
    c.Resume: (("counter", _counter),),
    c.Transfer: (("counter", _counter), ("service", _service)),
    c.OpenCounter: (("counter", _counter),),
    c.PauseCounter: (("counter", _counter),),
    c.TogglePause: (("counter", _counter),),
    c.CloseCounter: (("counter", _counter),),
    c.Cancel: (("ticket", _ref), ("reason", _text(MAX_REASON, "bad-reason"))),
    c.Rate: (("counter", _counter), ("score", _score)),
    c.UpsertAppointment: (("code", _text(MAX_CODE, "bad-code")), ("service", _service)),
    c.CancelAppointment: (("code", _text(MAX_CODE, "bad-code")),),
    c.ReportDevice: (
        ("device", _text(MAX_NAME, "bad-device")),
        ("port", _text(MAX_NAME, "bad-device", empty=True)),
        ("kind", _text(MAX_NAME, "bad-device", empty=True)),
        ("state", _text(MAX_NAME, "bad-state")),
        ("detail", _text(MAX_DETAIL, "bad-device", empty=True)),
    ),
    c.MoveTicket: (("ticket", _ref), ("service", _service)),
    c.SetNotice: (("text", _notice),),
    c.RequestReprint: (("ticket", _ref),),
    c.ReplayCall: (("ticket", _optional(_ref)), ("counter", _optional(_counter))),
    c.Tick: (),
}

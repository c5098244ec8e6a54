"""Commands from the backend: `<base>/cmd/<name>` in, a reply out (../shared/spec/mqtt.md).

Two halves. `parse` is pure: bytes in, a typed request or a refusal out, so every rule (16
KiB, JSON, fields, types, values, known services) is tested without a broker and fuzzed
with hypothesis. `CommandProcessor` runs parsed requests through the hall, at most once per
(name, id) within 24 hours, even across restarts and kill -9:

1. before executing, an *intent* row (name, id, time, plan) is committed; the plan holds
   what the execution will use that cannot be derived again (the new ticket's token);
2. the command runs through the hall (its events are committed by the hall's store);
3. the reply is committed on the intent row and sent.

A retry that finds a reply sends it again. A retry that finds an intent without a reply
(the daemon died between 2 and 3, or the store failed) first checks the hall's state for the
effect of the first attempt, using the plan (the planned token is already a ticket, say),
and replies from that; only if the command had no effect does it run it, with the same plan.
The dedupe rows live in the hall's own database (a table of this package's own), so they
share its durability.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, and_, delete, select
from sqlalchemy.exc import SQLAlchemyError

from hall_daemon import commands as c
from hall_daemon.hall import Hall, HallUnavailable
from hall_daemon.model import Conflict, DomainError, NotFound
from hall_daemon.quietlog import OncePer
from hall_daemon.state import CANCELLED, WAITING
from hall_daemon.store import StoreError
from hall_daemon.tokens import looks_like_token, new_token

from . import payloads

log = logging.getLogger(__name__)

MAX_BYTES = 16 * 1024
# Beyond this we do not even try to read the id of an oversized payload: the broker is told
# (MQTT 5 Maximum Packet Size) not to send us more than this at all.
MAX_PARSE_BYTES = 256 * 1024
MAX_ID = 128
MAX_CODE = 64
# A command is one flat object. Deeper nesting is refused before a JSON decoder sees it:
# decoders recurse.
MAX_DEPTH = 16
DEDUPE_WINDOW = timedelta(hours=24)

NAMES = ("ticket.remote", "ticket.cancel", "appointment.upsert", "appointment.cancel")

# Used only when the payload is not valid JSON, to find an id to address the error to.
_ID_IN_TEXT = re.compile(r'"id"\s*:\s*"((?:[^"\\\x00-\x1f]|\\.){1,128})"')
# What the depth check looks at: string delimiters, escapes, and brackets.
_STRUCTURE = re.compile(rb'["\\\[\]{}]')


# -- parsing (pure) -----------------------------------------------------------------------


class Unreadable(Exception):
    """No usable `id`: nobody can be answered. Logged and counted, no reply."""


class Refused(Exception):
    """The command cannot be accepted; the reply says why."""

    def __init__(self, command_id: str, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.id = command_id
        self.code = code
        self.reason = reason
        self.message = message

    def reply(self) -> bytes:
        return payloads.reply_error(self.id, self.code, self.reason, self.message)


@dataclass(frozen=True, slots=True)
class RemoteTicket:
    id: str
    service: str
    appointment: str | None


@dataclass(frozen=True, slots=True)
class CancelTicket:
    id: str
    token: str


@dataclass(frozen=True, slots=True)
class UpsertAppointment:
    id: str
    code: str
    service: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class CancelAppointment:
    id: str
    code: str


Request = RemoteTicket | CancelTicket | UpsertAppointment | CancelAppointment


def _valid_id(value: object) -> str | None:
    if isinstance(value, str) and 1 <= len(value) <= MAX_ID and value.isprintable():
        return value
    return None


def too_deep(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`, counted outside strings in one
    pass without recursion (broken JSON is counted as far as it goes)."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, -1
    for match in _STRUCTURE.finditer(payload):
        at = match.start()
        if at == escaped:
            continue
        char = payload[at]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                escaped = at + 1
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif char in b"]}":
            depth = max(depth - 1, 0)
    return False


def read_id(payload: bytes) -> str | None:
    """The command's id, from its JSON if it parses, else by a lenient look at the text, so
    that a payload that is merely malformed (or too large, or too deep to parse) still gets
    an error reply. Never raises."""
    if len(payload) > MAX_PARSE_BYTES:
        return None
    text = payload.decode("utf-8", errors="replace")
    if len(payload) <= MAX_BYTES and not too_deep(payload):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            # A JSON value that is not an object has no id; nor has an object whose id is
            # not text.
            return _valid_id(obj.get("id")) if isinstance(obj, dict) else None
    match = _ID_IN_TEXT.search(text)
    if match is None:
        return None
    try:
        return _valid_id(json.loads(f'"{match.group(1)}"'))
    except ValueError:
        return None


class _Fields:
    """Typed access to a command's fields that raises the contract's refusals."""

    def __init__(self, command_id: str, obj: dict[str, Any]) -> None:
        self.id = command_id
        self.obj = obj

    def refuse(self, code: int, reason: str, message: str) -> Refused:
        return Refused(self.id, code, reason, message)

    def text(self, name: str, *, required: bool = True, max_len: int = MAX_CODE) -> str | None:
        if name not in self.obj or (not required and self.obj[name] is None):
            if required:
                raise self.refuse(400, "missing-field", f"field {name!r} is required")
            return None
        value = self.obj[name]
        if not isinstance(value, str):
            raise self.refuse(
                400, "bad-type", f"field {name!r} must be a string, not {_json_type(value)}"
            )
        if not 1 <= len(value) <= max_len or not value.isprintable():
            raise self.refuse(
                400, "bad-value", f"field {name!r} must be 1 to {max_len} printable characters"
            )
        return value

    def required(self, name: str, max_len: int = MAX_CODE) -> str:
        value = self.text(name, max_len=max_len)
        assert value is not None
        return value

    def service(self, services: frozenset[str]) -> str:
        code = self.required("service")
        if code not in services:
            raise self.refuse(
                404,
                "unknown-service",
                f"unknown service {code!r}; this hall has {', '.join(sorted(services))}",
            )
        return code

    def time(self, name: str) -> datetime:
        value = self.required(name)
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise self.refuse(
                400, "bad-time", f"field {name!r} must be an ISO 8601 time, got {value!r}"
            ) from None
        if when.tzinfo is None or when.utcoffset() is None:
            raise self.refuse(
                400, "bad-time", f"field {name!r} needs a UTC offset, e.g. 2026-11-27T09:00+08:00"
            )
        return when


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def parse(name: str, payload: bytes, services: frozenset[str]) -> Request:
    """Check one command; raise Unreadable (no reply possible) or Refused (reply with it)."""
    command_id = read_id(payload)
    if command_id is None:
        raise Unreadable(
            f"{len(payload)} bytes without a readable id"
            if len(payload) <= MAX_PARSE_BYTES
            else f"{len(payload)} bytes, too large to read"
        )
    if len(payload) > MAX_BYTES:
        raise Refused(
            command_id,
            413,
            "too-large",
            f"the command is {len(payload)} bytes; the limit is {MAX_BYTES} (16 KiB)",
        )
    if too_deep(payload):
        raise Refused(
            command_id, 400, "too-deep", f"arrays and objects nest deeper than {MAX_DEPTH} levels"
        )
    try:
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refused(command_id, 400, "bad-encoding", "the payload is not UTF-8") from None
    except ValueError as exc:
        raise Refused(command_id, 400, "bad-json", f"the payload is not JSON: {exc}") from None
    assert isinstance(obj, dict)  # read_id found an id, so it is an object
    f = _Fields(command_id, obj)
    if "v" not in obj:
        raise f.refuse(400, "missing-field", "field 'v' is required (the contract's version, 1)")
    if type(obj["v"]) is not int or obj["v"] != 1:
        raise f.refuse(
            400, "bad-version", f"unsupported version {obj['v']!r}; this daemon speaks 1"
        )
    if name == "ticket.remote":
        return RemoteTicket(command_id, f.service(services), f.text("appointment", required=False))
    if name == "ticket.cancel":
        token = f.required("token")
        if not looks_like_token(token):
            raise f.refuse(400, "bad-value", "field 'token' is not a ticket token")
        return CancelTicket(command_id, token)
    if name == "appointment.upsert":
        code = f.required("code")
        service = f.service(services)
        start, end = f.time("start"), f.time("end")
        if start >= end:
            raise f.refuse(400, "bad-time", "'start' must be before 'end'")
        return UpsertAppointment(command_id, code, service, start, end)
    if name == "appointment.cancel":
        return CancelAppointment(command_id, f.required("code"))
    raise f.refuse(404, "unknown-command", f"unknown command {name!r}; known: {', '.join(NAMES)}")


# -- the dedupe table -------------------------------------------------------------------------

metadata = MetaData()

commands_table = Table(
    "sync_commands",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("id", String(MAX_ID * 4), primary_key=True),  # bytes, for a multi-byte id
    Column("received_us", BigInteger, nullable=False, index=True),
    Column("plan", Text, nullable=False),  # JSON: what the execution uses (the token)
    Column("reply", Text, nullable=True),  # NULL: executed or not, we must look
)


def _us(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000)


@dataclass
class Recorded:
    plan: dict[str, Any]
    reply: bytes | None


class DedupeStore:
    """The (name, id) → reply table. Its methods block: run them through `hall.io`."""

    def __init__(self, hall: Hall) -> None:
        self._hall = hall

    def create(self) -> None:
        metadata.create_all(self._hall.store.engine)

    def find(self, name: str, command_id: str, now: datetime) -> Recorded | None:
        t = commands_table
        stmt = select(t.c.plan, t.c.reply).where(
            and_(
                t.c.name == name,
                t.c.id == command_id,
                t.c.received_us >= _us(now - DEDUPE_WINDOW),
            )
        )
        with self._hall.store.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return Recorded(json.loads(row.plan), None if row.reply is None else row.reply.encode())

    def begin(self, name: str, command_id: str, now: datetime, plan: dict[str, Any]) -> None:
        t = commands_table
        with self._hall.store.engine.begin() as conn:
            # A row older than the window may still be there (pruning is hourly): its id is
            # free again.
            conn.execute(delete(t).where(and_(t.c.name == name, t.c.id == command_id)))
            conn.execute(
                t.insert().values(
                    name=name, id=command_id, received_us=_us(now), plan=json.dumps(plan)
                )
            )

    def finish(self, name: str, command_id: str, reply: bytes) -> None:
        t = commands_table
        with self._hall.store.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(and_(t.c.name == name, t.c.id == command_id))
                .values(reply=reply.decode())
            )

    def prune(self, now: datetime) -> int:
        t = commands_table
        with self._hall.store.engine.begin() as conn:
            done = conn.execute(delete(t).where(t.c.received_us < _us(now - DEDUPE_WINDOW)))
        return int(done.rowcount)


# -- execution ------------------------------------------------------------------------------


@dataclass
class CommandStats:
    accepted: int = 0
    refused: int = 0
    unreadable: int = 0
    repeated: int = 0
    too_deep: int = 0  # refused unparsed; those without an id are counted as unreadable
    failed: int = 0  # answered 500: not done, the backend retries


class CommandProcessor:
    """Runs commands one at a time (so two copies of one id can never race) and returns the
    reply to send, or None when there is nobody to answer."""

    def __init__(self, hall: Hall, *, token: Callable[[], str] | None = None) -> None:
        self.hall = hall
        self.dedupe = DedupeStore(hall)
        self.stats = CommandStats()
        self._quiet = OncePer(log, 60.0)
        self._token = token or new_token

    async def handle(self, name: str, payload: bytes) -> bytes | None:
        """Never raises: whatever goes wrong with one command is that command's 500 reply
        (not recorded, so a retry under the same id looks again), or, without an id, a
        counted drop."""
        command_id = read_id(payload)
        if command_id is None:
            self.stats.unreadable += 1
            self._quiet.log(
                logging.WARNING,
                "unreadable",
                "command on %r ignored: %d bytes without a readable id",
                name,
                len(payload),
            )
            return None
        try:
            return await self._handle(name, command_id, payload)
        except Exception as exc:
            self.stats.failed += 1
            store = isinstance(exc, SQLAlchemyError | StoreError | OSError)
            reason = "store-unavailable" if store else "internal"
            self._quiet.log(
                logging.ERROR, reason, "command %s %r failed", name, command_id, exc_info=True
            )
            return payloads.reply_error(
                command_id, 500, reason, f"not done; try again: {type(exc).__name__}"
            )

    async def _handle(self, name: str, command_id: str, payload: bytes) -> bytes | None:
        now = self.hall.now()
        # A repeat gets the first reply even if its payload differs or no longer validates:
        # the id names the command, and that command has been answered.
        recorded = await self.hall.io(self.dedupe.find, name, command_id, now)
        if recorded is not None and recorded.reply is not None:
            self.stats.repeated += 1
            log.info("command %s %r repeated; sending its first reply again", name, command_id)
            return recorded.reply  # counted once, when it was first answered
        try:
            request = parse(name, payload, frozenset(self.hall.state.services))
        except Unreadable as exc:  # not reached: read_id above found an id
            self.stats.unreadable += 1
            log.warning("command on %r ignored: %s", name, exc)
            return None
        except Refused as exc:
            # Not recorded: validation depends only on the payload, so the same payload
            # again gets the same refusal, and a corrected one under the same id is judged
            # on its own.
            if exc.reason == "too-deep":
                self.stats.too_deep += 1
            self._quiet.log(
                logging.INFO,
                f"refused:{exc.reason}",
                "command %s %r refused: %s",
                name,
                exc.id,
                exc.message,
            )
            return self._count(exc.reply())

        if recorded is not None:
            # An intent without a reply: the earlier attempt may have taken effect.
            plan = recorded.plan
            earlier = self._effect_of(request, plan)
            if earlier is not None:
                log.info("command %s %r had run before; replying", name, request.id)
                await self.hall.io(self.dedupe.finish, name, request.id, earlier)
                return self._count(earlier)
        else:
            plan = self._plan(request)
            await self.hall.io(self.dedupe.begin, name, request.id, now, plan)

        reply, final = await self._execute(request, plan)
        if final:
            await self.hall.io(self.dedupe.finish, name, request.id, reply)
        return self._count(reply)

    def _count(self, reply: bytes) -> bytes:
        if json.loads(reply)["ok"]:
            self.stats.accepted += 1
        else:
            self.stats.refused += 1
        return reply

    def _plan(self, request: Request) -> dict[str, Any]:
        s = self.hall.state
        if isinstance(request, RemoteTicket):
            return {"token": self._token()}
        if isinstance(request, CancelTicket):
            t = s.by_token.get(request.token)
            return {"was": t.state if t is not None else None}
        if isinstance(request, CancelAppointment):
            return {"existed": request.code in s.appointments}
        return {}

    def _effect_of(self, request: Request, plan: dict[str, Any]) -> bytes | None:
        """The reply of an earlier attempt that took effect, or None if it did not."""
        s = self.hall.state
        if isinstance(request, RemoteTicket):
            t = s.by_token.get(plan["token"])
            if t is None:
                return None
            ahead = s.ahead_of(t) if t.state == WAITING else 0
            return payloads.reply_ok(
                request.id,
                {
                    "number": t.number,
                    "token": t.token,
                    "ahead": ahead,
                    "forecast": self.hall.forecaster(s, t.service, ahead, self.hall.now()),
                },
            )
        if isinstance(request, CancelTicket):
            t = s.by_token.get(request.token)
            if t is not None and t.state == CANCELLED and plan.get("was") != CANCELLED:
                return payloads.reply_ok(request.id, {"number": t.number, "state": t.state})
            return None
        if isinstance(request, UpsertAppointment):
            a = s.appointments.get(request.code)
            if a is not None and (a.service, a.start, a.end) == (
                request.service,
                request.start,
                request.end,
            ):
                return payloads.reply_ok(request.id, _appointment_data(request))
            return None
        if plan.get("existed") and request.code not in s.appointments:
            return payloads.reply_ok(request.id, {"code": request.code})
        return None

    async def _execute(self, request: Request, plan: dict[str, Any]) -> tuple[bytes, bool]:
        """(the reply, whether it is final). A 500 is not final: nothing may have happened,
        so a retry looks again instead of repeating the error."""
        now = self.hall.now()
        s = self.hall.state
        command: c.Command
        try:
            if isinstance(request, RemoteTicket):
                if request.appointment is not None:
                    a = s.appointments.get(request.appointment)
                    if a is not None and a.service != request.service:
                        raise Conflict(
                            f"appointment {request.appointment!r} is for service {a.service}",
                            "wrong-service",
                        )
                    command = c.CheckIn(now, request.appointment, plan["token"])
                else:
                    command = c.TakeTicket(now, request.service, plan["token"], channel="remote")
            elif isinstance(request, CancelTicket):
                # By token only, and only through the token: the engine also accepts ticket
                # numbers, which are guessable.
                t = s.by_token.get(request.token)
                if t is None:
                    raise NotFound("no ticket with this token today", "unknown-ticket")
                if t.state != WAITING:
                    raise Conflict(f"the ticket is {t.state}, not waiting", "not-waiting")
                command = c.Cancel(now, request.token, reason="remote")
            elif isinstance(request, UpsertAppointment):
                command = c.UpsertAppointment(
                    now, request.code, request.service, request.start, request.end
                )
            else:
                command = c.CancelAppointment(now, request.code)
            events = await self.hall.submit(command)
        except HallUnavailable as exc:
            return payloads.reply_error(request.id, exc.code, exc.slug, exc.message), False
        except DomainError as exc:
            return payloads.reply_error(request.id, exc.code, exc.slug, exc.message), True
        if isinstance(request, RemoteTicket):
            issued = next(e for e in events if e.type == "ticket.issued")
            d = issued.data
            data = {
                "number": d["number"],
                "token": d["token"],
                "ahead": d["ahead"],
                "forecast": d["forecast"],
            }
        elif isinstance(request, CancelTicket):
            data = {"number": events[-1].data["number"], "state": CANCELLED}
        elif isinstance(request, UpsertAppointment):
            data = _appointment_data(request)
        else:
            data = {"code": request.code}
        return payloads.reply_ok(request.id, data), True


def _appointment_data(request: UpsertAppointment) -> dict[str, Any]:
    return {
        "code": request.code,
        "service": request.service,
        "start": request.start.isoformat(),
        "end": request.end.isoformat(),
    }

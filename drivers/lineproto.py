"""Line protocol: ticket dispensers and simple USB devices (serial-protocols.md §2).

Pure codec, no I/O and no clock:

- `LineDecoder` turns a byte stream into `Line`s (words, request id, whether a checksum was
  present) or `LineError`s (too long, invalid UTF-8, wrong checksum: drop and count, no reply).
- `parse_request` turns a `Line` into a typed request, or raises `ProtocolError` with code 400,
  which the caller answers with `err(400, reason)`.
- Replies and pushes are word tuples (`ok()`, `ticket_reply(...)`, ...); `encode_line` puts a
  request id and a checksum on them as the request had.
- `ReplyCache` answers a repeated request id with the first reply; the caller passes the time.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from drivers.bus68 import ProtocolError

__all__ = [
    "CheckIn",
    "DeviceKind",
    "Hello",
    "Issued",
    "Line",
    "LineDecoder",
    "LineError",
    "LineErrorReason",
    "LineStats",
    "Paper",
    "PaperState",
    "Ping",
    "ProtocolError",
    "ReplyCache",
    "Request",
    "Take",
    "Words",
    "encode_line",
    "err",
    "ok",
    "parse_request",
    "pong",
    "request_words",
    "status",
    "ticket_reply",
    "xor_checksum",
]

MAX_LINE = 200  # bytes, not counting the CR LF
MAX_REQUEST_ID = 999_999
REPLY_TTL = 60.0
ERROR_CODES = frozenset({400, 404, 409, 429, 500})
# Not stored in the reply cache: nothing was issued, so a retry must be tried afresh.
UNCACHED_CODE = "500"

LF = 0x0A
CR = 0x0D
STAR = 0x2A
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Strict on purpose: "#007" would be echoed as "#7", which a device may not recognise.
_REQUEST_ID = re.compile(r"#([1-9][0-9]{0,5})")
_LOOKS_LIKE_REQUEST_ID = re.compile(r"#[0-9]*")

Words = tuple[str, ...]


def xor_checksum(data: bytes | bytearray) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


@dataclass(frozen=True)
class Line:
    words: Words
    request_id: int | None = None
    checksummed: bool = False


class LineErrorReason(enum.StrEnum):
    TOO_LONG = "too_long"
    BAD_UTF8 = "bad_utf8"
    BAD_CHECKSUM = "bad_checksum"


@dataclass(frozen=True)
class LineError:
    """A line that cannot be trusted: counted and dropped, never answered."""

    reason: LineErrorReason


@dataclass
class LineStats:
    lines_good: int = 0
    too_long: int = 0
    bad_utf8: int = 0
    bad_checksum: int = 0


class LineDecoder:
    """Incremental line splitter: feed it whatever the port read.

    Between calls it holds at most one partial line (`MAX_LINE + 1` bytes, room for a CR), so
    a device that never sends LF cannot make it grow.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._discarding = False  # inside an over-long line, already reported
        self.stats = LineStats()

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes | bytearray) -> list[Line | LineError]:
        buf = self._pending
        buf += data
        out: list[Line | LineError] = []
        start = 0
        while (nl := buf.find(LF, start)) >= 0:
            raw = bytes(buf[start:nl])
            start = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            item = self._decode(raw)
            if item is not None:
                out.append(item)
        del buf[:start]
        if self._discarding:
            buf.clear()
        elif len(buf) > MAX_LINE + 1:
            out.append(self._error(LineErrorReason.TOO_LONG))
            buf.clear()
            self._discarding = True
        return out

    def _decode(self, raw: bytes) -> Line | LineError | None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            # Blank lines (a stray CR LF) carry nothing to answer.
            return None
        if len(raw) > MAX_LINE:
            return self._error(LineErrorReason.TOO_LONG)
        checksummed = len(raw) >= 3 and raw[-3] == STAR and raw[-2] in _HEX and raw[-1] in _HEX
        if checksummed:
            body = raw[:-3]
            if xor_checksum(body) != int(raw[-2:], 16):
                return self._error(LineErrorReason.BAD_CHECKSUM)
        else:
            body = raw
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(LineErrorReason.BAD_UTF8)
        # Split on single spaces so that a double space shows up as an empty word, which
        # parse_request rejects, rather than being silently tolerated.
        fields = text.split(" ")
        request_id = None
        if (m := _REQUEST_ID.fullmatch(fields[-1])) is not None:
            request_id = int(m.group(1))
            fields.pop()
        self.stats.lines_good += 1
        return Line(tuple(fields), request_id, checksummed)

    def _error(self, reason: LineErrorReason) -> LineError:
        match reason:
            case LineErrorReason.TOO_LONG:
                self.stats.too_long += 1
            case LineErrorReason.BAD_UTF8:
                self.stats.bad_utf8 += 1
            case LineErrorReason.BAD_CHECKSUM:
                self.stats.bad_checksum += 1
        return LineError(reason)


# -- requests ----------------------------------------------------------------------------------


class DeviceKind(enum.StrEnum):
    DISPENSER = "dispenser"
    KEYPAD = "keypad"
    EVALUATOR = "evaluator"
    SCREEN = "screen"


class PaperState(enum.StrEnum):
    OK = "OK"
    LOW = "LOW"
    OUT = "OUT"


_KINDS = frozenset(str(k) for k in DeviceKind)
_PAPER_STATES = frozenset(str(p) for p in PaperState)


@dataclass(frozen=True)
class Hello:
    device_id: str
    kind: DeviceKind
    firmware: str


@dataclass(frozen=True)
class Take:
    service: str
    priority: bool = False


@dataclass(frozen=True)
class Issued:
    service: str
    number: str  # as printed, e.g. A012


@dataclass(frozen=True)
class CheckIn:
    code: str


@dataclass(frozen=True)
class Paper:
    state: PaperState


@dataclass(frozen=True)
class Ping:
    pass


Request = Hello | Take | Issued | CheckIn | Paper | Ping

PRIORITY = "PRIORITY"


def _malformed(reason: str) -> ProtocolError:
    return ProtocolError(reason, code=400)


def parse_request(line: Line) -> Request:
    words = line.words
    if not words or any(not w for w in words):
        raise _malformed("malformed")
    if any(not w.isprintable() for w in words):
        raise _malformed("bad-character")
    if _LOOKS_LIKE_REQUEST_ID.fullmatch(words[-1]):
        raise _malformed("bad-request-id")
    command, args = words[0], words[1:]
    match command, args:
        case "HELLO", (device_id, kind, firmware):
            if kind not in _KINDS:
                raise _malformed("bad-kind")
            return Hello(device_id, DeviceKind(kind), firmware)
        case "TAKE", (service,):
            return Take(service)
        case "TAKE", (service, flag):
            if flag != PRIORITY:
                raise _malformed("bad-flag")
            return Take(service, priority=True)
        case "ISSUED", (service, number):
            return Issued(service, number)
        case "CHECKIN", (code,):
            return CheckIn(code)
        case "PAPER", (state,):
            if state not in _PAPER_STATES:
                raise _malformed("bad-paper-state")
            return Paper(PaperState(state))
        case "PING", ():
            return Ping()
        case "HELLO" | "TAKE" | "ISSUED" | "CHECKIN" | "PAPER" | "PING", _:
            raise _malformed("wrong-arity")
    raise _malformed("unknown-command")


def request_words(request: Request) -> Words:
    """The words a device sends for `request` (the simulator's side of parse_request)."""
    match request:
        case Hello(device_id, kind, firmware):
            return ("HELLO", device_id, str(kind), firmware)
        case Take(service, priority):
            return ("TAKE", service, PRIORITY) if priority else ("TAKE", service)
        case Issued(service, number):
            return ("ISSUED", service, number)
        case CheckIn(code):
            return ("CHECKIN", code)
        case Paper(state):
            return ("PAPER", str(state))
        case Ping():
            return ("PING",)
    raise TypeError(f"not a line-protocol request: {request!r}")


# -- replies and pushes ------------------------------------------------------------------------


def _count(name: str, value: int) -> str:
    if value < 0:
        raise ValueError(f"{name} {value} is negative")
    return str(value)


def ok() -> Words:
    return ("OK",)


def pong() -> Words:
    return ("PONG",)


def err(code: int, reason: str) -> Words:
    if code not in ERROR_CODES:
        raise ValueError(f"error code {code} is not one of {sorted(ERROR_CODES)}")
    return ("ERR", str(code), reason)


def ticket_reply(number: str, service: str, ahead: int, wait_min: int) -> Words:
    return ("TICKET", number, service, _count("ahead", ahead), _count("wait_min", wait_min))


def status(service: str, waiting: int, wait_min: int) -> Words:
    return ("STATUS", service, _count("waiting", waiting), _count("wait_min", wait_min))


def _check_word(word: str) -> None:
    # A word with a space, a control character, a '*' or a leading '#' would be read back
    # as something else (two words, a line break, a checksum, a request id).
    if not word or " " in word or not word.isprintable() or "*" in word or word[0] == "#":
        raise ValueError(f"{word!r} cannot be sent as one word")


def encode_line(
    words: Iterable[str], request_id: int | None = None, checksum: bool = False
) -> bytes:
    words = tuple(words)
    if not words:
        raise ValueError("a line needs at least one word")
    for word in words:
        _check_word(word)
    text = " ".join(words)
    if request_id is not None:
        if not 1 <= request_id <= MAX_REQUEST_ID:
            raise ValueError(f"request id {request_id} not in 1..{MAX_REQUEST_ID}")
        text += f" #{request_id}"
    body = text.encode("utf-8")
    if checksum:
        body += b"*%02X" % xor_checksum(body)
    if len(body) > MAX_LINE:
        raise ValueError(f"line of {len(body)} bytes, at most {MAX_LINE}")
    return body + b"\n"


# -- idempotency -------------------------------------------------------------------------------


class ReplyCache:
    """Remembers the reply to each (device or port key, request id) for 60 seconds.

    `now` must not go backwards (use time.monotonic()), since entries expire oldest first.
    """

    def __init__(self, ttl: float = REPLY_TTL, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._replies: OrderedDict[tuple[Hashable, int], tuple[float, Words]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: Hashable, rid: int, now: float) -> Words | None:
        self._expire(now)
        entry = self._replies.get((key, rid))
        return None if entry is None else entry[1]

    def put(self, key: Hashable, rid: int, reply: Words, now: float) -> None:
        if reply[:2] == ("ERR", UNCACHED_CODE):
            return
        self._expire(now)
        self._replies[(key, rid)] = (now, tuple(reply))
        self._replies.move_to_end((key, rid))
        if len(self._replies) > self.max_entries:
            self._replies.popitem(last=False)

    def _expire(self, now: float) -> None:
        replies = self._replies
        while replies:
            k, (when, _) = next(iter(replies.items()))
            if now - when < self.ttl:
                break
            del replies[k]

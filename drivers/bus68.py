"""Bus protocol "68": counter keypads, evaluators and window screens (serial-protocols.md §1).

Pure codec, no I/O and no clock:

- `Frame`, `encode` and `Bus68Decoder` are the framing layer (`FF 68 L L 68 A F D.. CS 16`).
- `parse` and `build` turn a frame into a typed message and back; `display`, `beep`,
  `eval_prompt` and `text` are the host's builders.
- `RetransmitFilter` recognises a device repeating a frame it already sent (same address,
  function and seq within 5 seconds); the caller passes the time in.

Acknowledging is not done here: the ack of a frame is the frame itself, `encode(frame)`.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

PREAMBLE = 0xFF
PREAMBLE_ALT = 0xFE
START = 0x68
END = 0x16

MIN_L = 2  # A and F, no data
MAX_L = 66
MAX_DATA = MAX_L - 2
# 68 L L 68 + (A F D..) + CS 16
HEADER_SIZE = 4
MAX_FRAME = HEADER_SIZE + MAX_L + 2

MAX_ADDRESS = 247
BROADCAST = 0

MAX_DIGITS = 3
BLANK_DIGIT = 0x0A
DISPLAY_GROUP = 3  # digits per half of the keypad LCD
DISPLAY_MAX = 10**DISPLAY_GROUP - 1
MAX_TEXT_BYTES = 60
TEXT_ENCODING = "gb18030"

RETRANSMIT_WINDOW = 5.0


class Function(enum.IntEnum):
    KEY = 0x01
    RATING = 0x11
    STATUS = 0x12
    DISPLAY = 0x02
    BEEP = 0x03
    EVAL_PROMPT = 0x04
    TEXT = 0x05


DEVICE_FUNCTIONS = frozenset({Function.KEY, Function.RATING, Function.STATUS})
HOST_FUNCTIONS = frozenset({Function.DISPLAY, Function.BEEP, Function.EVAL_PROMPT, Function.TEXT})


class Key(enum.IntEnum):
    RATE = 0x0B
    NEXT = 0x0C
    RECALL = 0x0D
    CONFIRM = 0x0F
    CALL = 0x10
    PAUSE = 0x12
    TRANSFER = 0x13
    DONE = 0x14


_FUNCTION_CODES = frozenset(int(f) for f in Function)
_KEY_CODES = frozenset(int(k) for k in Key)


class ProtocolError(ValueError):
    """A well-framed message whose content the contract does not allow.

    `reason` is a short token for logs and counters. `code` is the line protocol's error code
    (drivers.lineproto re-exports this class); the bus has no error replies and leaves it 400.
    """

    def __init__(self, reason: str, code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def checksum(payload: bytes | bytearray) -> int:
    """CS of a frame: the sum of A, F and the data bytes, modulo 256."""
    return sum(payload) & 0xFF


@dataclass(frozen=True)
class Frame:
    address: int
    function: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFF:
            raise ValueError(f"address {self.address} is not a byte")
        if not 0 <= self.function <= 0xFF:
            raise ValueError(f"function {self.function} is not a byte")
        if len(self.data) > MAX_DATA:
            raise ValueError(f"{len(self.data)} data bytes, at most {MAX_DATA} fit in a frame")


def encode(frame: Frame) -> bytes:
    payload = bytes((frame.address, frame.function)) + frame.data
    length = len(payload)
    return (
        bytes((PREAMBLE, START, length, length, START)) + payload + bytes((checksum(payload), END))
    )


class BadFrame(enum.StrEnum):
    LENGTH_MISMATCH = "length_mismatch"
    BAD_LENGTH = "bad_length"
    UNKNOWN_FUNCTION = "unknown_function"
    MISSING_END = "missing_end"
    BAD_CHECKSUM = "bad_checksum"


@dataclass
class DecoderStats:
    frames_good: int = 0
    frames_bad: int = 0
    # Bytes thrown away while hunting for a start, preamble bytes (FF, FE) excepted.
    bytes_skipped: int = 0
    bad: Counter[BadFrame] = field(default_factory=Counter)


class _NeedMore:
    """The candidate frame at the scan position is not complete yet."""


_NEED_MORE = _NeedMore()


class Bus68Decoder:
    """Incremental frame decoder: feed it whatever the port read, get the complete frames.

    The buffer only ever keeps a partial frame starting at a `68`, so it never holds more than
    `MAX_FRAME - 1` bytes between calls, whatever it is fed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stats = DecoderStats()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial frame, e.g. after the line went quiet in the middle of one."""
        self._skip(0, len(self._buf))
        self._buf.clear()

    def feed(self, data: bytes | bytearray) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        while True:
            start = buf.find(START, pos)
            if start < 0:
                self._skip(pos, len(buf))
                pos = len(buf)
                break
            self._skip(pos, start)
            result = self._frame_at(start)
            if result is _NEED_MORE:
                pos = start
                break
            if isinstance(result, Frame):
                frames.append(result)
                self.stats.frames_good += 1
                pos = start + HEADER_SIZE + 2 + len(result.data) + 2
            elif isinstance(result, BadFrame):
                self.stats.frames_bad += 1
                self.stats.bad[result] += 1
                # A bad frame's length byte can't be trusted, so a good frame may start
                # anywhere after its first 68.
                pos = start + 1
            else:
                # A 68 that does not open a `68 L L 68` header is just garbage.
                self._skip(start, start + 1)
                pos = start + 1
        del buf[:pos]
        return frames

    def _skip(self, begin: int, end: int) -> None:
        buf = self._buf
        preamble = buf.count(PREAMBLE, begin, end) + buf.count(PREAMBLE_ALT, begin, end)
        self.stats.bytes_skipped += end - begin - preamble

    def _frame_at(self, s: int) -> Frame | BadFrame | _NeedMore | None:
        """Judge the candidate at `buf[s] == 68` as early as its bytes allow.

        Rejecting on the header or function code before the whole claimed length has arrived
        keeps a false start in garbage from delaying the real frame behind it.
        """
        buf = self._buf
        available = len(buf) - s
        if available < HEADER_SIZE:
            return _NEED_MORE
        if buf[s + 3] != START:
            return None
        length = buf[s + 1]
        if buf[s + 2] != length:
            return BadFrame.LENGTH_MISMATCH
        if not MIN_L <= length <= MAX_L:
            return BadFrame.BAD_LENGTH
        if available < HEADER_SIZE + 2:
            return _NEED_MORE
        if buf[s + 5] not in _FUNCTION_CODES:
            return BadFrame.UNKNOWN_FUNCTION
        total = HEADER_SIZE + length + 2
        if available < total:
            return _NEED_MORE
        if buf[s + total - 1] != END:
            return BadFrame.MISSING_END
        payload = buf[s + HEADER_SIZE : s + HEADER_SIZE + length]
        if checksum(payload) != buf[s + total - 2]:
            return BadFrame.BAD_CHECKSUM
        return Frame(payload[0], Function(payload[1]), bytes(payload[2:]))


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPress:
    address: int
    seq: int
    digits: str  # 0..3 decimal digits typed before the key, most significant first
    key: Key


@dataclass(frozen=True)
class Rating:
    address: int
    seq: int
    score: int  # 1 very dissatisfied .. 5 very satisfied


@dataclass(frozen=True)
class DeviceStatus:
    address: int
    seq: int
    fault: bool
    tamper: bool


@dataclass(frozen=True)
class Display:
    address: int
    waiting: int | None  # None: blank
    ticket: int | None


@dataclass(frozen=True)
class Beep:
    address: int


@dataclass(frozen=True)
class EvalPrompt:
    address: int


@dataclass(frozen=True)
class Text:
    address: int
    line: int  # 0 = top
    text: str


DeviceMessage = KeyPress | Rating | DeviceStatus
HostMessage = Display | Beep | EvalPrompt | Text
Message = DeviceMessage | HostMessage

STATUS_FAULT = 0x01
STATUS_TAMPER = 0x02


def parse(frame: Frame) -> Message:
    """The message a well-framed frame carries; ProtocolError if its content is not allowed."""
    f = frame.function
    if f in DEVICE_FUNCTIONS:
        if not 1 <= frame.address <= MAX_ADDRESS:
            raise ProtocolError("bad-address")
        if f == Function.KEY:
            return _parse_key(frame)
        if f == Function.RATING:
            return _parse_rating(frame)
        return _parse_status(frame)
    if f in HOST_FUNCTIONS:
        if frame.address > MAX_ADDRESS:
            raise ProtocolError("bad-address")
        if f == Function.DISPLAY:
            return _parse_display(frame)
        if f == Function.TEXT:
            return _parse_text(frame)
        if frame.data:
            raise ProtocolError("bad-length")
        return Beep(frame.address) if f == Function.BEEP else EvalPrompt(frame.address)
    raise ProtocolError("unknown-function")


def _parse_key(frame: Frame) -> KeyPress:
    data = frame.data
    if len(data) < 2:
        raise ProtocolError("bad-length")
    digit_bytes = data[1:-1]
    if len(digit_bytes) > MAX_DIGITS:
        raise ProtocolError("too-many-digits")
    if any(d > 9 for d in digit_bytes):
        raise ProtocolError("bad-digit")
    if data[-1] not in _KEY_CODES:
        raise ProtocolError("unknown-key")
    digits = "".join(str(d) for d in digit_bytes)
    return KeyPress(frame.address, data[0], digits, Key(data[-1]))


def _parse_rating(frame: Frame) -> Rating:
    if len(frame.data) != 2:
        raise ProtocolError("bad-length")
    seq, score = frame.data
    if not 1 <= score <= 5:
        raise ProtocolError("bad-score")
    return Rating(frame.address, seq, score)


def _parse_status(frame: Frame) -> DeviceStatus:
    if len(frame.data) != 2:
        raise ProtocolError("bad-length")
    seq, flags = frame.data
    # Bits 2..7 are not defined by the contract; a newer device setting them is still heard.
    return DeviceStatus(frame.address, seq, bool(flags & STATUS_FAULT), bool(flags & STATUS_TAMPER))


def _parse_display(frame: Frame) -> Display:
    if len(frame.data) != 2 * DISPLAY_GROUP:
        raise ProtocolError("bad-length")
    if any(d > BLANK_DIGIT for d in frame.data):
        raise ProtocolError("bad-digit")
    return Display(
        frame.address,
        _digits_value(frame.data[:DISPLAY_GROUP]),
        _digits_value(frame.data[DISPLAY_GROUP:]),
    )


def _digits_value(group: bytes) -> int | None:
    digits = [d for d in group if d != BLANK_DIGIT]
    if not digits:
        return None
    return int("".join(str(d) for d in digits))


def _parse_text(frame: Frame) -> Text:
    if not frame.data:
        raise ProtocolError("bad-length")
    body = frame.data[1:]
    if len(body) > MAX_TEXT_BYTES:
        raise ProtocolError("text-too-long")
    try:
        text = body.decode(TEXT_ENCODING)
    except UnicodeDecodeError:
        raise ProtocolError("bad-text") from None
    return Text(frame.address, frame.data[0], text)


def build(message: Message) -> Frame:
    """The frame carrying `message`; ValueError if it cannot be sent as the contract says."""
    match message:
        case KeyPress(address, seq, digits, key):
            _check_device(address, seq)
            if len(digits) > MAX_DIGITS or any(c not in "0123456789" for c in digits):
                raise ValueError(f"digits {digits!r}: 0..{MAX_DIGITS} decimal digits")
            return Frame(address, Function.KEY, bytes((seq, *map(int, digits), Key(key))))
        case Rating(address, seq, score):
            _check_device(address, seq)
            if not 1 <= score <= 5:
                raise ValueError(f"score {score} not in 1..5")
            return Frame(address, Function.RATING, bytes((seq, score)))
        case DeviceStatus(address, seq, fault, tamper):
            _check_device(address, seq)
            flags = (STATUS_FAULT if fault else 0) | (STATUS_TAMPER if tamper else 0)
            return Frame(address, Function.STATUS, bytes((seq, flags)))
        case Display(address, waiting, ticket):
            return display(address, waiting, ticket)
        case Beep(address):
            return beep(address)
        case EvalPrompt(address):
            return eval_prompt(address)
        case Text(address, line, body):
            return text(address, line, body)
    raise TypeError(f"not a bus68 message: {message!r}")


def _check_device(address: int, seq: int) -> None:
    if not 1 <= address <= MAX_ADDRESS:
        raise ValueError(f"device address {address} not in 1..{MAX_ADDRESS}")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq {seq} not in 0..255")


def _check_host_address(address: int) -> None:
    if not BROADCAST <= address <= MAX_ADDRESS:
        raise ValueError(f"address {address} not in 0..{MAX_ADDRESS}")


def display(address: int, waiting: int | None, ticket: int | None) -> Frame:
    """Keypad LCD: tickets waiting on the left, current ticket number on the right."""
    _check_host_address(address)
    return Frame(address, Function.DISPLAY, _digit_group(waiting) + _digit_group(ticket))


def _digit_group(value: int | None) -> bytes:
    if value is None:
        return bytes((BLANK_DIGIT,) * DISPLAY_GROUP)
    # Three digits are all the LCD has; 999 reads as "a lot" rather than a wrong small number.
    value = min(max(value, 0), DISPLAY_MAX)
    return bytes(int(c) for c in f"{value:0{DISPLAY_GROUP}d}")


def beep(address: int) -> Frame:
    _check_host_address(address)
    return Frame(address, Function.BEEP)


def eval_prompt(address: int) -> Frame:
    _check_host_address(address)
    return Frame(address, Function.EVAL_PROMPT)


def text(address: int, line: int, text: str) -> Frame:
    """Window screen text, cut to 60 GB18030 bytes at a character boundary."""
    _check_host_address(address)
    if not 0 <= line <= 0xFF:
        raise ValueError(f"line {line} is not a byte")
    return Frame(address, Function.TEXT, bytes((line,)) + _gb18030_fit(text, MAX_TEXT_BYTES))


def _gb18030_fit(text: str, limit: int) -> bytes:
    # GB18030 covers all of Unicode; "replace" only matters for lone surrogates.
    encoded = text.encode(TEXT_ENCODING, errors="replace")
    if len(encoded) <= limit:
        return encoded
    # The encoding is stateless, so encoding character by character gives the same bytes and
    # tells where each character ends.
    out = bytearray()
    for char in text:
        piece = char.encode(TEXT_ENCODING, errors="replace")
        if len(out) + len(piece) > limit:
            break
        out += piece
    return bytes(out)


# -- retransmissions ---------------------------------------------------------------------------


class RetransmitFilter:
    """Remembers which (address, function, seq) the host handled in the last 5 seconds.

    One filter per bus: addresses are only unique on their own bus. `now` must not go
    backwards (use time.monotonic()), since entries expire oldest first.
    """

    def __init__(self, window: float = RETRANSMIT_WINDOW, max_entries: int = 4096) -> None:
        self.window = window
        self.max_entries = max_entries
        self._handled: OrderedDict[tuple[int, int, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._handled)

    def seen(self, address: int, function: int, seq: int, now: float) -> bool:
        """True for a retransmission (ack it again, do not act); otherwise record it as handled."""
        self._expire(now)
        key = (address, function, seq)
        if key in self._handled:
            # Measured from the first handling, not refreshed: the contract's 5 s window is
            # about the original press, and a later genuine press may reuse a wrapped seq.
            return True
        self._handled[key] = now
        if len(self._handled) > self.max_entries:
            self._handled.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        handled = self._handled
        while handled:
            key, when = next(iter(handled.items()))
            if now - when < self.window:
                break
            del handled[key]

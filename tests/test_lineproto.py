"""Line protocol codec against serial-protocols.md §2, byte for byte."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import lineproto
from drivers.lineproto import (
    CheckIn,
    DeviceKind,
    Hello,
    Issued,
    Line,
    LineDecoder,
    LineError,
    LineErrorReason,
    Paper,
    PaperState,
    Ping,
    ProtocolError,
    ReplyCache,
    Take,
    encode_line,
    err,
    ok,
    parse_request,
    pong,
    request_words,
    status,
    ticket_reply,
)

pytestmark = pytest.mark.unit


def decode_one(data: bytes) -> Line | LineError:
    (item,) = LineDecoder().feed(data)
    return item


# -- the spec's examples -----------------------------------------------------------------------


def test_example_take_with_checksum() -> None:
    line = decode_one(b"TAKE A #1*48\n")
    assert line == Line(("TAKE", "A"), request_id=1, checksummed=True)
    assert parse_request(line) == Take("A")


def test_example_ticket_reply_with_checksum() -> None:
    wire = encode_line(ticket_reply("A001", "A", 0, 0), request_id=1, checksum=True)
    assert wire == b"TICKET A001 A 0 0 #1*07\n"


def test_example_take_priority() -> None:
    line = decode_one(b"TAKE B PRIORITY #2\n")
    assert line == Line(("TAKE", "B", "PRIORITY"), request_id=2, checksummed=False)
    assert parse_request(line) == Take("B", priority=True)
    wire = encode_line(ticket_reply("B001", "B", 0, 0), request_id=2)
    assert wire == b"TICKET B001 B 0 0 #2\n"


def test_example_unknown_service() -> None:
    line = decode_one(b"TAKE Z #3\n")
    assert isinstance(line, Line)
    assert parse_request(line) == Take("Z")
    assert (
        encode_line(err(404, "unknown-service"), line.request_id) == b"ERR 404 unknown-service #3\n"
    )


def test_example_replies_decode_too() -> None:
    # The simulator reads the host's side with the same decoder.
    decoder = LineDecoder()
    items = decoder.feed(
        b"TICKET A001 A 0 0 #1*07\nTICKET B001 B 0 0 #2\nERR 404 unknown-service #3\n"
    )
    assert items == [
        Line(("TICKET", "A001", "A", "0", "0"), 1, True),
        Line(("TICKET", "B001", "B", "0", "0"), 2, False),
        Line(("ERR", "404", "unknown-service"), 3, False),
    ]


# -- framing -----------------------------------------------------------------------------------


def test_crlf_and_lowercase_checksum() -> None:
    assert decode_one(b"PING\r\n") == Line(("PING",))
    line = b"TAKE A #1"
    assert decode_one(line + b"*48\r\n") == Line(("TAKE", "A"), 1, True)
    assert decode_one(b"PAPER LOW*" + b"%02x" % lineproto.xor_checksum(b"PAPER LOW") + b"\n") == (
        Line(("PAPER", "LOW"), None, True)
    )


def test_wrong_checksum_dropped_and_counted() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"TAKE A #1*49\nPING\n") == [
        LineError(LineErrorReason.BAD_CHECKSUM),
        Line(("PING",)),
    ]
    assert decoder.stats.bad_checksum == 1
    assert decoder.stats.lines_good == 1


def test_invalid_utf8() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"CHECKIN \xff\xfe\nPING\n") == [
        LineError(LineErrorReason.BAD_UTF8),
        Line(("PING",)),
    ]
    assert decoder.stats.bad_utf8 == 1


def test_utf8_words() -> None:
    assert decode_one("HELLO 取号机-1 dispenser v1.2\n".encode()) == Line(
        ("HELLO", "取号机-1", "dispenser", "v1.2")
    )


def test_blank_lines_ignored() -> None:
    assert LineDecoder().feed(b"\n\r\n\n") == []


def test_line_of_exactly_200_bytes_accepted() -> None:
    body = b"CHECKIN " + b"x" * 192
    assert len(body) == 200
    assert decode_one(body + b"\r\n") == Line(("CHECKIN", "x" * 192))
    assert decode_one(body + b"x\n") == LineError(LineErrorReason.TOO_LONG)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_over_long_line_counted_once_then_next_line_parses(chunk: int) -> None:
    decoder = LineDecoder()
    wire = b"X" * 5000 + b"\nPING #9\n"
    items: list[Line | LineError] = []
    for i in range(0, len(wire), chunk):
        items += decoder.feed(wire[i : i + chunk])
        assert decoder.buffered <= lineproto.MAX_LINE + 1
    assert items == [LineError(LineErrorReason.TOO_LONG), Line(("PING",), 9)]
    assert decoder.stats.too_long == 1


def test_request_id_forms() -> None:
    assert decode_one(b"PING #999999\n") == Line(("PING",), 999999)
    # Not request ids: left as words for parse_request to reject.
    for bad in (b"#0", b"#1000000", b"#007", b"#", b"#1a"):
        line = decode_one(b"PING " + bad + b"\n")
        assert isinstance(line, Line)
        assert line.request_id is None
        with pytest.raises(ProtocolError):
            parse_request(line)


def test_star_without_hex_is_not_a_checksum() -> None:
    assert decode_one(b"CHECKIN AB*XY\n") == Line(("CHECKIN", "AB*XY"))


# -- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HELLO D1 dispenser 1.0", Hello("D1", DeviceKind.DISPENSER, "1.0")),
        ("HELLO K3 keypad 2", Hello("K3", DeviceKind.KEYPAD, "2")),
        ("HELLO E1 evaluator x", Hello("E1", DeviceKind.EVALUATOR, "x")),
        ("HELLO S1 screen x", Hello("S1", DeviceKind.SCREEN, "x")),
        ("TAKE A", Take("A")),
        ("TAKE A PRIORITY", Take("A", True)),
        ("ISSUED A A012", Issued("A", "A012")),
        ("CHECKIN QR-12345", CheckIn("QR-12345")),
        ("PAPER OK", Paper(PaperState.OK)),
        ("PAPER LOW", Paper(PaperState.LOW)),
        ("PAPER OUT", Paper(PaperState.OUT)),
        ("PING", Ping()),
    ],
)
def test_parse_request(text: str, expected: lineproto.Request) -> None:
    line = decode_one(text.encode() + b"\n")
    assert isinstance(line, Line)
    assert parse_request(line) == expected
    assert request_words(expected) == line.words


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("TAKE  A", "malformed"),
        ("TAKE A ", "malformed"),
        (" PING", "malformed"),
        ("ping", "unknown-command"),
        ("Take A", "unknown-command"),
        ("FOO", "unknown-command"),
        ("TAKE", "wrong-arity"),
        ("TAKE A PRIORITY X", "wrong-arity"),
        ("PING 1", "wrong-arity"),
        ("HELLO D1 dispenser", "wrong-arity"),
        ("ISSUED A", "wrong-arity"),
        ("CHECKIN", "wrong-arity"),
        ("TAKE A priority", "bad-flag"),
        ("HELLO D1 Dispenser 1.0", "bad-kind"),
        ("HELLO D1 printer 1.0", "bad-kind"),
        ("PAPER ok", "bad-paper-state"),
        ("PAPER EMPTY", "bad-paper-state"),
        ("CHECKIN a\tb", "bad-character"),
        ("TAKE A #0", "bad-request-id"),
    ],
)
def test_parse_request_rejects(text: str, reason: str) -> None:
    line = decode_one(text.encode() + b"\n")
    assert isinstance(line, Line)
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.code == 400
    assert info.value.reason == reason


def test_malformed_keeps_request_id_for_the_reply() -> None:
    line = decode_one(b"TAKE  A #4*" + b"%02X" % lineproto.xor_checksum(b"TAKE  A #4") + b"\n")
    assert isinstance(line, Line)
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    reply = encode_line(err(info.value.code, info.value.reason), line.request_id, line.checksummed)
    assert reply.startswith(b"ERR 400 malformed #4*")
    assert decode_one(reply) == Line(("ERR", "400", "malformed"), 4, True)


# -- replies and pushes ------------------------------------------------------------------------


def test_reply_encoders() -> None:
    assert encode_line(ok()) == b"OK\n"
    assert encode_line(pong(), 17) == b"PONG #17\n"
    assert encode_line(status("A", 12, 35)) == b"STATUS A 12 35\n"
    assert encode_line(err(429, "daily-limit"), 5) == b"ERR 429 daily-limit #5\n"
    assert encode_line(ok(), checksum=True) == b"OK*" + b"%02X" % (ord("O") ^ ord("K")) + b"\n"


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_line(()),
        lambda: encode_line(("TWO WORDS",)),
        lambda: encode_line(("",)),
        lambda: encode_line(("A\n",)),
        lambda: encode_line(("A*12",)),
        lambda: encode_line(("#5",)),
        lambda: encode_line(("OK",), request_id=0),
        lambda: encode_line(("OK",), request_id=1_000_000),
        lambda: encode_line(("X" * 201,)),
        lambda: err(418, "teapot"),
        lambda: ticket_reply("A001", "A", -1, 0),
        lambda: status("A", 0, -1),
    ],
)
def test_encoder_rejects(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


# -- reply cache -------------------------------------------------------------------------------


def test_reply_cache_within_60_seconds() -> None:
    cache = ReplyCache()
    reply = ticket_reply("A001", "A", 0, 0)
    assert cache.get("D1", 1, now=0.0) is None
    cache.put("D1", 1, reply, now=0.0)
    assert cache.get("D1", 1, now=59.9) == reply
    assert cache.get("D2", 1, now=1.0) is None
    assert cache.get("D1", 2, now=1.0) is None
    assert cache.get("D1", 1, now=60.0) is None
    assert len(cache) == 0


def test_reply_cache_never_stores_500() -> None:
    cache = ReplyCache()
    cache.put("D1", 7, err(500, "store-failed"), now=0.0)
    assert cache.get("D1", 7, now=0.1) is None
    cache.put("D1", 7, err(429, "daily-limit"), now=0.2)
    assert cache.get("D1", 7, now=0.3) == ("ERR", "429", "daily-limit")


def test_reply_cache_bounded() -> None:
    cache = ReplyCache(max_entries=50)
    for i in range(5000):
        cache.put(("port", i % 7), i % 999_999 + 1, ok(), now=i * 0.001)
        assert len(cache) <= 50
    cache.put("x", 1, ok(), now=1000.0)
    assert len(cache) == 1


# -- properties --------------------------------------------------------------------------------

words = st.text(
    st.characters(
        codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn")
    ),
    min_size=1,
    max_size=6,  # six words of six 4-byte characters still fit in 200 bytes
).filter(lambda w: "*" not in w and not w.startswith("#") and w.isprintable())
lines = st.builds(
    Line,
    st.lists(words, min_size=1, max_size=6).map(tuple),
    st.none() | st.integers(1, 999_999),
    st.booleans(),
)


@settings(max_examples=200)
@given(st.lists(lines, max_size=10), st.randoms(use_true_random=False))
def test_round_trip_any_chunking(items: list[Line], rnd: random.Random) -> None:
    wire = b"".join(
        encode_line(item.words, item.request_id, item.checksummed).replace(
            b"\n", rnd.choice([b"\n", b"\r\n"])
        )
        for item in items
    )
    decoder = LineDecoder()
    out: list[Line | LineError] = []
    pos = 0
    while pos < len(wire):
        n = rnd.randint(1, 40)
        out += decoder.feed(wire[pos : pos + n])
        pos += n
    assert out == items
    assert decoder.buffered == 0


@given(st.binary(min_size=lineproto.MAX_LINE + 2, max_size=2000), lines)
def test_over_long_then_good_line(junk: bytes, line: Line) -> None:
    junk = junk.replace(b"\n", b"x")
    decoder = LineDecoder()
    out = decoder.feed(junk) + decoder.feed(
        b"\n" + encode_line(line.words, line.request_id, line.checksummed)
    )
    assert out == [LineError(LineErrorReason.TOO_LONG), line]
    assert decoder.stats.too_long == 1


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    decoder = LineDecoder()
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, Line):
                with contextlib.suppress(ProtocolError):
                    parse_request(item)
        assert decoder.buffered <= lineproto.MAX_LINE + 1

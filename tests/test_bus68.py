"""Bus protocol "68" codec against serial-protocols.md §1, byte for byte."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import bus68
from drivers.bus68 import (
    BadFrame,
    Beep,
    Bus68Decoder,
    DeviceStatus,
    Display,
    EvalPrompt,
    Frame,
    Function,
    Key,
    KeyPress,
    ProtocolError,
    Rating,
    RetransmitFilter,
    Text,
    build,
    encode,
    parse,
)

pytestmark = pytest.mark.unit


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# The spec's examples, verbatim.
DEVICE_EXAMPLES = [
    ("FF 68 04 04 68 03 01 01 0C 11 16", KeyPress(3, 1, "", Key.NEXT)),
    ("FF 68 05 05 68 03 01 02 06 0F 1B 16", KeyPress(3, 2, "6", Key.CONFIRM)),
    ("FF 68 05 05 68 03 01 03 02 13 1C 16", KeyPress(3, 3, "2", Key.TRANSFER)),
    ("FF 68 07 07 68 03 01 04 00 01 02 10 1B 16", KeyPress(3, 4, "012", Key.CALL)),
    ("FF 68 04 04 68 23 11 07 05 40 16", Rating(0x23, 7, 5)),
]
HOST_EXAMPLES = [
    ("FF 68 08 08 68 03 02 00 01 02 00 00 07 0F 16", bus68.display(3, 12, 7)),
    ("FF 68 08 08 68 03 02 0A 0A 0A 00 01 02 26 16", bus68.display(3, None, 12)),
    ("FF 68 02 02 68 03 03 06 16", bus68.beep(3)),
    ("FF 68 02 02 68 23 04 27 16", bus68.eval_prompt(0x23)),
    (
        "FF 68 13 13 68 41 05 00 41 30 31 32 20 C7 EB B5 BD 33 BA C5 B4 B0 BF DA 0D 16",
        bus68.text(0x41, 0, "A012 请到3号窗口"),
    ),
]
HOST_MESSAGES = [
    Display(3, 12, 7),
    Display(3, None, 12),
    Beep(3),
    EvalPrompt(0x23),
    Text(0x41, 0, "A012 请到3号窗口"),
]
ALL_EXAMPLE_BYTES = b"".join(h(x) for x, _ in DEVICE_EXAMPLES + HOST_EXAMPLES)


def decode_all(data: bytes) -> list[Frame]:
    return Bus68Decoder().feed(data)


# -- the spec's examples -----------------------------------------------------------------------


@pytest.mark.parametrize(("wire", "message"), DEVICE_EXAMPLES)
def test_device_example_decodes(wire: str, message: bus68.Message) -> None:
    (frame,) = decode_all(h(wire))
    assert parse(frame) == message


@pytest.mark.parametrize(("wire", "message"), DEVICE_EXAMPLES)
def test_device_example_builds(wire: str, message: bus68.Message) -> None:
    assert encode(build(message)) == h(wire)


@pytest.mark.parametrize(("wire", "frame"), HOST_EXAMPLES)
def test_host_example_builds(wire: str, frame: Frame) -> None:
    assert encode(frame) == h(wire)


@pytest.mark.parametrize(
    ("example", "message"), list(zip(HOST_EXAMPLES, HOST_MESSAGES, strict=True))
)
def test_host_example_decodes(example: tuple[str, Frame], message: bus68.Message) -> None:
    wire, frame = example
    (decoded,) = decode_all(h(wire))
    assert decoded == frame
    assert parse(decoded) == message
    assert build(message) == frame


def test_ack_is_the_frame_echoed() -> None:
    wire = h("FF 68 04 04 68 03 01 01 0C 11 16")
    (frame,) = decode_all(wire)
    assert encode(frame) == wire


def test_checksum_helper() -> None:
    assert bus68.checksum(h("23 11 07 05")) == 0x40
    assert bus68.checksum(b"\xff\xff") == 0xFE


# -- builders ----------------------------------------------------------------------------------


def test_display_clips_and_blanks() -> None:
    assert build(Display(1, 1234, None)).data == h("09 09 09 0A 0A 0A")
    assert bus68.display(1, 0, 0).data == h("00 00 00 00 00 00")
    assert bus68.display(1, -3, 5).data == h("00 00 00 00 00 05")


def test_text_truncates_on_character_boundary() -> None:
    # 31 two-byte characters: 62 bytes; the cut must fall between characters.
    frame = bus68.text(0x41, 1, "请" * 31)
    assert frame.data[0] == 1
    body = frame.data[1:]
    assert len(body) == 60
    assert body.decode("gb18030") == "请" * 30
    # 59 ASCII then a 2-byte character: 61 bytes, the character is dropped whole.
    body = bus68.text(0x41, 0, "x" * 59 + "请").data[1:]
    assert body == b"x" * 59
    # A four-byte GB18030 character (emoji) is never split either.
    body = bus68.text(0x41, 0, "x" * 57 + "😀").data[1:]
    assert body == b"x" * 57


@given(st.text(max_size=80))
def test_text_always_fits_and_decodes(s: str) -> None:
    frame = bus68.text(0x41, 0, s)
    body = frame.data[1:]
    assert len(body) <= bus68.MAX_TEXT_BYTES
    assert s.startswith(body.decode("gb18030"))


def test_builders_reject_out_of_range() -> None:
    with pytest.raises(ValueError):
        bus68.beep(248)
    with pytest.raises(ValueError):
        build(KeyPress(3, 1, "1234", Key.CALL))
    with pytest.raises(ValueError):
        build(KeyPress(0, 1, "", Key.NEXT))
    with pytest.raises(ValueError):
        build(Rating(3, 1, 6))
    with pytest.raises(ValueError):
        Frame(1, 1, bytes(65))


def test_broadcast_address_allowed_from_host() -> None:
    assert parse(bus68.beep(0)) == Beep(0)


# -- parse errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (Frame(3, Function.KEY, h("01 0A 0C")), "bad-digit"),
        (Frame(3, Function.KEY, h("01 01 02 03 04 10")), "too-many-digits"),
        (Frame(3, Function.KEY, h("01 0E")), "unknown-key"),
        (Frame(3, Function.KEY, h("01")), "bad-length"),
        (Frame(0x23, Function.RATING, h("07 00")), "bad-score"),
        (Frame(0x23, Function.RATING, h("07 06")), "bad-score"),
        (Frame(0x23, Function.RATING, h("07")), "bad-length"),
        (Frame(0x23, Function.STATUS, h("07 00 00")), "bad-length"),
        (Frame(0, Function.KEY, h("01 0C")), "bad-address"),
        (Frame(248, Function.RATING, h("01 05")), "bad-address"),
        (Frame(3, Function.DISPLAY, h("00 00 00")), "bad-length"),
        (Frame(3, Function.DISPLAY, h("00 00 0B 00 00 00")), "bad-digit"),
        (Frame(3, Function.BEEP, h("00")), "bad-length"),
        (Frame(3, Function.TEXT, b""), "bad-length"),
        (Frame(3, Function.TEXT, b"\x00\xff\xff"), "bad-text"),
        (Frame(3, Function.TEXT, bytes(62)), "text-too-long"),
        (Frame(3, 0x7F, b""), "unknown-function"),
    ],
)
def test_parse_rejects(frame: Frame, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(frame)
    assert info.value.reason == reason


def test_status_flags() -> None:
    assert parse(Frame(5, Function.STATUS, h("09 01"))) == DeviceStatus(5, 9, True, False)
    assert parse(Frame(5, Function.STATUS, h("09 02"))) == DeviceStatus(5, 9, False, True)
    # Undefined bits are ignored, not an error.
    assert parse(Frame(5, Function.STATUS, h("09 FC"))) == DeviceStatus(5, 9, False, False)
    assert build(DeviceStatus(5, 9, True, True)).data == h("09 03")


# -- decoder: framing and resynchronisation ----------------------------------------------------

NEXT = h("FF 68 04 04 68 03 01 01 0C 11 16")
RATING = h("FF 68 04 04 68 23 11 07 05 40 16")


def test_several_frames_in_one_feed() -> None:
    frames = decode_all(ALL_EXAMPLE_BYTES)
    assert [encode(f) for f in frames] == [h(x) for x, _ in DEVICE_EXAMPLES + HOST_EXAMPLES]


def test_split_byte_by_byte() -> None:
    decoder = Bus68Decoder()
    frames: list[Frame] = []
    for byte in ALL_EXAMPLE_BYTES:
        frames += decoder.feed(bytes((byte,)))
    assert len(frames) == len(DEVICE_EXAMPLES) + len(HOST_EXAMPLES)
    assert decoder.buffered == 0
    assert decoder.stats.frames_good == len(frames)
    assert decoder.stats.frames_bad == 0
    assert decoder.stats.bytes_skipped == 0


def test_preambles_skipped_uncounted() -> None:
    decoder = Bus68Decoder()
    frames = decoder.feed(b"\xfe\xfe\xff\xfe" + NEXT[1:] + NEXT[1:] + b"\xff" * 10 + RATING)
    assert [parse(f) for f in frames] == [
        KeyPress(3, 1, "", Key.NEXT),
        KeyPress(3, 1, "", Key.NEXT),
        Rating(0x23, 7, 5),
    ]
    assert decoder.stats.bytes_skipped == 0


def test_junk_before_between_after() -> None:
    decoder = Bus68Decoder()
    frames = decoder.feed(b"\x00\x01junk" + NEXT + b"\x16\x11\x00" + RATING + b"trailing")
    assert [f.function for f in frames] == [Function.KEY, Function.RATING]
    assert decoder.stats.bytes_skipped == 6 + 3 + 8
    assert decoder.buffered == 0


def test_corrupted_checksum_then_good_frame() -> None:
    bad = bytearray(NEXT)
    bad[-2] ^= 0x01
    decoder = Bus68Decoder()
    frames = decoder.feed(bytes(bad) + RATING)
    assert [parse(f) for f in frames] == [Rating(0x23, 7, 5)]
    assert decoder.stats.frames_bad == 1
    assert decoder.stats.bad[BadFrame.BAD_CHECKSUM] == 1


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("68 04 05 68 03 01 01 0C 11 16", BadFrame.LENGTH_MISMATCH),
        ("68 01 01 68 03 04 16", BadFrame.BAD_LENGTH),
        ("68 43 43 68", BadFrame.BAD_LENGTH),
        ("68 04 04 68 03 01 01 0C 11 17", BadFrame.MISSING_END),
        ("68 02 02 68 03 7F 82 16", BadFrame.UNKNOWN_FUNCTION),
        ("68 04 04 68 03 01 01 0C 12 16", BadFrame.BAD_CHECKSUM),
    ],
)
def test_bad_frame_reasons(wire: str, reason: BadFrame) -> None:
    decoder = Bus68Decoder()
    assert decoder.feed(h(wire) + NEXT) == [Frame(3, Function.KEY, h("01 0C"))]
    assert decoder.stats.frames_bad == 1
    assert decoder.stats.bad == {reason: 1}
    assert decoder.stats.frames_good == 1


def test_bogus_68_inside_garbage() -> None:
    # A header claiming 0x30 bytes swallows the real frame; the decoder must find it anyway.
    decoder = Bus68Decoder()
    frames = decoder.feed(b"\x00\x68\x30\x30\x68\x03\x01\x02" + NEXT + bytes(60))
    assert [parse(f) for f in frames] == [KeyPress(3, 1, "", Key.NEXT)]
    assert decoder.stats.bad == {BadFrame.MISSING_END: 1}


def test_lone_68_is_garbage_not_a_bad_frame() -> None:
    decoder = Bus68Decoder()
    assert decoder.feed(b"\x68\x68\x01\x02" + NEXT) == [Frame(3, Function.KEY, h("01 0C"))]
    assert decoder.stats.frames_bad == 0
    assert decoder.stats.bytes_skipped == 4


def test_frame_with_68_in_payload() -> None:
    frame = Frame(0x68, Function.TEXT, b"\x00\x68\x68\x16\x68")
    decoder = Bus68Decoder()
    wire = encode(frame)
    assert decoder.feed(wire[:7]) == []
    assert decoder.feed(wire[7:]) == [frame]


def test_partial_frame_waits_then_reset_drops_it() -> None:
    decoder = Bus68Decoder()
    assert decoder.feed(NEXT[:-1]) == []
    assert decoder.buffered == len(NEXT) - 2
    decoder.reset()
    assert decoder.buffered == 0
    assert decoder.feed(RATING) == [Frame(0x23, Function.RATING, h("07 05"))]


# -- retransmissions ---------------------------------------------------------------------------


def test_retransmit_filter_window() -> None:
    f = RetransmitFilter()
    assert not f.seen(3, Function.KEY, 1, now=100.0)
    assert f.seen(3, Function.KEY, 1, now=100.3)
    assert f.seen(3, Function.KEY, 1, now=104.9)
    # Other addresses, functions and seqs are different presses.
    assert not f.seen(4, Function.KEY, 1, now=101.0)
    assert not f.seen(3, Function.RATING, 1, now=101.0)
    assert not f.seen(3, Function.KEY, 2, now=101.0)
    # Five seconds after it was handled, the same seq is a new press.
    assert not f.seen(3, Function.KEY, 1, now=105.0)
    assert f.seen(3, Function.KEY, 1, now=105.5)


def test_retransmit_filter_memory_bounded() -> None:
    f = RetransmitFilter(max_entries=100)
    for i in range(10_000):
        f.seen(i % 247 + 1, Function.KEY, i % 256, now=i * 0.001)
        assert len(f) <= 100
    f.seen(1, Function.KEY, 0, now=1000.0)
    assert len(f) == 1


# -- properties --------------------------------------------------------------------------------

messages = st.one_of(
    st.builds(
        KeyPress,
        st.integers(1, 247),
        st.integers(0, 255),
        st.text("0123456789", max_size=3),
        st.sampled_from(Key),
    ),
    st.builds(Rating, st.integers(1, 247), st.integers(0, 255), st.integers(1, 5)),
    st.builds(DeviceStatus, st.integers(1, 247), st.integers(0, 255), st.booleans(), st.booleans()),
    st.builds(
        Display,
        st.integers(0, 247),
        st.none() | st.integers(0, 999),
        st.none() | st.integers(0, 999),
    ),
    st.builds(Beep, st.integers(0, 247)),
    st.builds(EvalPrompt, st.integers(0, 247)),
    st.builds(
        Text,
        st.integers(0, 247),
        st.integers(0, 255),
        st.text(st.characters(codec="gb18030"), max_size=15),
    ),
)
frames = st.builds(
    Frame,
    st.integers(0, 255),
    st.sampled_from(Function),
    st.binary(max_size=bus68.MAX_DATA),
)
no_68_garbage = st.binary(max_size=20).map(lambda b: b.replace(b"\x68", b"\x00"))


@settings(max_examples=200)
@given(
    st.lists(st.tuples(frames, no_68_garbage), max_size=8),
    no_68_garbage,
    st.randoms(use_true_random=False),
)
def test_round_trip_any_chunking_any_garbage(
    items: list[tuple[Frame, bytes]], lead: bytes, rnd: random.Random
) -> None:
    wire = lead + b"".join(encode(f) + g for f, g in items)
    decoder = Bus68Decoder()
    out: list[Frame] = []
    pos = 0
    while pos < len(wire):
        n = rnd.randint(1, 30)
        out += decoder.feed(wire[pos : pos + n])
        pos += n
    assert out == [f for f, _ in items]
    assert decoder.stats.frames_bad == 0
    assert decoder.buffered == 0


@given(messages)
def test_message_round_trip(message: bus68.Message) -> None:
    frame = build(message)
    (decoded,) = decode_all(encode(frame))
    assert decoded == frame
    assert parse(decoded) == message


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_random_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    decoder = Bus68Decoder()
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            with contextlib.suppress(ProtocolError):
                parse(frame)
        assert decoder.buffered < bus68.MAX_FRAME

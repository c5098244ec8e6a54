"""Receipts without a printer: the layout, the ESC/POS bytes (python-escpos Dummy), the PNG
preview read back by an independent QR decoder, status bytes, the spoken fallback."""

from __future__ import annotations

import io
import itertools
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import zxingcpp
from PIL import Image

from broadcast.phrase import PhraseBuilder
from drivers.printer.connection import parse_status
from drivers.printer.escpos_out import (
    FS_CHINESE_OFF,
    FS_CHINESE_ON,
    load_profile,
    needs_chinese_mode,
    receipt_bytes,
)
from drivers.printer.layout import build_layout, width, wrap
from drivers.printer.preview import png
from drivers.printer.service import check_profile
from hall_daemon.config import ConfigError, PrinterConfig
from hall_daemon.receipts import Receipt
from tests.test_serial_link import CONFIG

TOKEN = "Zq3xV9kLmN2pR7sT4uW8yA"  # the shape of secrets.token_urlsafe(16)
URL = f"https://hall.example.gov.cn/t/{TOKEN}"
GS_CUT = re.compile(rb"\x1dV[\x00\x01\x30\x31AB]")
NOTICE = "请留意叫号，过号需重新取号。"


def receipt(**changes: object) -> Receipt:
    fields: dict[str, object] = dict(
        number="A012",
        service="A",
        service_name="企业开办",
        service_name_en="Business registration",
        priority=False,
        appointment=None,
        ahead=7,
        wait_s=840,
        p10_s=420,
        p90_s=1380,
        issued_at=datetime(2026, 11, 28, 9, 41, 5, tzinfo=ZoneInfo("Asia/Shanghai")),
        qr_url=URL,
        hall_name="示范区政务服务中心",
        hall_name_en="Demo District Government Service Center",
        kiosk="kiosk-1",
    )
    fields.update(changes)
    return Receipt(**fields)  # type: ignore[arg-type]


def qr_payload(data: bytes) -> bytes:
    """The content stored by GS ( k ... 1 P 0 (native QR code, function 180)."""
    m = re.search(rb"\x1d\(k(..)1P0", data, re.S)
    assert m is not None, "no native QR code in the stream"
    length = m.group(1)[0] + 256 * m.group(1)[1] - 3
    return data[m.end() : m.end() + length]


@pytest.mark.unit
def test_the_stream_carries_gb18030_text_chinese_mode_the_token_in_the_qr_and_the_cut() -> None:
    data = receipt_bytes(build_layout(receipt(), paper_mm=80, notice=NOTICE), "default")
    assert data.startswith(b"\x1b@")  # ESC @ first: whatever the printer was doing before
    for text in ("示范区政务服务中心", "企业开办", "前面还有 7 人", "预计等候约 14 分钟", NOTICE):
        assert text.encode("gb18030") in data, text
    assert "企业开办".encode() not in data
    assert b"A012" in data and b"2026-11-28 09:41:05" in data
    # Chinese mode around the text, in this order: FS & ... text ... FS . ... cut.
    on, off = data.index(FS_CHINESE_ON), data.index(FS_CHINESE_OFF)
    assert on < data.index("企业开办".encode("gb18030")) < off
    assert qr_payload(data) == URL.encode()
    cut = GS_CUT.search(data)
    assert cut is not None and cut.start() > off
    assert data.index(b"A012") < data.index(b"\x1d(k")  # the number before the QR code


@pytest.mark.unit
def test_58_and_80_mm_differ_in_width_and_number_size() -> None:
    narrow = build_layout(receipt(), paper_mm=58)
    wide = build_layout(receipt(), paper_mm=80)
    assert max(width(t) for t in narrow.texts()) <= 32 < max(width(t) for t in wide.texts())
    assert "-" * 32 in narrow.texts() and "-" * 48 in wide.texts()
    n58 = receipt_bytes(narrow, "default")
    n80 = receipt_bytes(wide, "default")
    # GS ! n before the number: 3x3 on 58 mm, 4x4 on 80 mm.
    assert b"\x1d!\x22\x1bE\x01\x1ba\x01A012" in n58
    assert b"\x1d!\x33\x1bE\x01\x1ba\x01A012" in n80
    assert qr_payload(n58) == qr_payload(n80) == URL.encode()


@pytest.mark.unit
def test_printers_that_start_in_chinese_mode_get_no_mode_commands() -> None:
    # ZiJiang's ZJ-5870 is in Chinese mode from power-on: FS . would switch that off.
    profile = load_profile("ZJ-5870")
    assert not needs_chinese_mode(profile) and needs_chinese_mode(load_profile("TM-T88V"))
    data = receipt_bytes(build_layout(receipt(), paper_mm=58), "ZJ-5870")
    assert "企业开办".encode("gb18030") in data
    assert FS_CHINESE_ON not in data and FS_CHINESE_OFF not in data
    # No native QR on that profile: the code goes as a raster image, and the URL is not text.
    assert b"\x1d(k" not in data and b"\x1dv0" in data and URL.encode() not in data


@pytest.mark.unit
def test_image_mode_sends_a_bitmap_and_no_chinese_text() -> None:
    data = receipt_bytes(build_layout(receipt(), paper_mm=58), "default", chinese="image")
    assert b"\x1dv0" in data  # GS v 0: raster bit image
    assert "企业开办".encode("gb18030") not in data and FS_CHINESE_ON not in data
    assert GS_CUT.search(data) is not None
    m = re.search(rb"\x1dv0\x00(..)(..)", data, re.S)
    assert m is not None and m.group(1)[0] + 256 * m.group(1)[1] == 384 // 8


@pytest.mark.unit
@pytest.mark.parametrize("paper_mm", [58, 80])
def test_the_preview_qr_decodes_to_the_token_url_and_shows_the_tickets_lines(
    paper_mm: int,
) -> None:
    layout = build_layout(receipt(), paper_mm=paper_mm, notice=NOTICE)
    image = Image.open(io.BytesIO(png(layout)))
    assert image.width == {58: 384, 80: 576}[paper_mm]
    codes = zxingcpp.read_barcodes(image)
    assert [c.text for c in codes] == [URL]
    texts = layout.texts()
    assert "A012" in texts and "企业开办" in texts
    assert any("前面还有 7 人" in t for t in texts)
    assert any("预计等候约 14 分钟（7–23 分钟）" in t for t in texts)
    assert "2026-11-28 09:41:05" in texts
    assert NOTICE in "".join(texts)
    assert TOKEN not in "".join(texts)  # the token is in the QR code only
    assert TOKEN not in repr(layout) and TOKEN not in repr(receipt())


@pytest.mark.unit
def test_the_preview_draws_dark_text_rows_for_every_line() -> None:
    layout = build_layout(receipt(), paper_mm=80)
    image = Image.open(io.BytesIO(png(layout))).convert("L")
    rows = [
        any(image.getpixel((x, y)) < 128 for x in range(image.width)) for y in range(image.height)
    ]
    bands = sum(1 for a, b in itertools.pairwise(rows) if b and not a)
    assert bands >= len(layout.texts())  # at least one band of ink per line (plus the QR)


@pytest.mark.unit
def test_priority_and_appointment_tickets_say_so() -> None:
    assert "优先 Priority" in build_layout(receipt(priority=True), paper_mm=80).texts()
    texts = build_layout(receipt(appointment="AP-1"), paper_mm=80).texts()
    assert "预约 Appointment" in texts and "优先 Priority" not in texts


@pytest.mark.unit
def test_wrap_keeps_within_columns_and_loses_nothing() -> None:
    text = "请保管好随身物品，叫号时请留意屏幕和广播。Please keep your belongings with you."
    lines = wrap(text, 32)
    assert all(width(line) <= 32 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


@pytest.mark.unit
def test_an_unknown_profile_stops_the_start_with_the_line_of_the_setting() -> None:
    printer = PrinterConfig(connection="file", path="/tmp/x.bin", profile="TM-T88-typo")
    config = CONFIG.model_copy(update={"printer": printer})
    with pytest.raises(ConfigError) as err:
        check_profile(config)
    message = str(err.value)
    assert "printer.profile" in message and "TM-T88-typo" in message and "TM-T88V" in message


@pytest.mark.unit
def test_dle_eot_answers_become_faults() -> None:
    ok = parse_status({1: 0x16, 2: 0x12, 3: 0x12, 4: 0x12})
    assert ok.fault() is None and not ok.paper_low
    assert parse_status({1: 0x16, 2: 0x16, 3: 0x12, 4: 0x12}).fault() == "cover-open"
    assert parse_status({1: 0x1E, 2: 0x32, 3: 0x12, 4: 0x72}).fault() == "paper-out"
    low = parse_status({1: 0x16, 2: 0x12, 3: 0x12, 4: 0x1E})
    assert low.fault() is None and low.paper_low
    assert parse_status({1: 0x1E}).fault() == "offline"
    assert parse_status({1: 0xFF, 4: 0x00}) == parse_status({})  # not status bytes: ignored


@pytest.mark.unit
def test_the_spoken_fallback_spells_the_number_in_both_languages() -> None:
    announcement = PhraseBuilder(CONFIG).number_notice("A012")
    assert [clip.key for clip in announcement.clips()] == [
        *("请记好您的号码", "A", "零", "一", "二"),
        *("please note your number", "A", "zero", "one", "two"),
    ]

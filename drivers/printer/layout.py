"""What a receipt says, line by line: one layout that the ESC/POS output and the PNG preview
both draw, so the preview shows what the paper will.

Pure: a `Receipt` (hall_daemon/receipts.py) in, a `Layout` out; no I/O, no clock.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

from hall_daemon.receipts import Receipt

Size = Literal["small", "normal", "large", "huge"]
Align = Literal["left", "center"]

PAPER_DOTS = {58: 384, 80: 576}  # printable width at 203 dpi
PAPER_COLUMNS = {58: 32, 80: 48}  # Font A (12 dots) half-width columns
SCALE: dict[Size, int] = {"small": 1, "normal": 1, "large": 2, "huge": 4}
QR_CAPTION = "扫码查看排队进度 Scan to follow your ticket"


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    size: Size = "normal"
    bold: bool = False
    align: Align = "center"


@dataclass(frozen=True, slots=True)
class Layout:
    paper_mm: int
    lines: tuple[Line, ...]  # above the QR code
    qr: str  # the QR code's payload (holds the token: never log it)
    footer: tuple[Line, ...]  # below the QR code

    @property
    def dots(self) -> int:
        return PAPER_DOTS[self.paper_mm]

    @property
    def columns(self) -> int:
        return PAPER_COLUMNS[self.paper_mm]

    def texts(self) -> list[str]:
        """Every text line, in order (what a test compares with the ticket)."""
        return [line.text for line in (*self.lines, *self.footer)]

    def __repr__(self) -> str:
        return f"Layout({self.paper_mm} mm, {len(self.lines) + len(self.footer)} lines)"


def minutes(seconds: int) -> int:
    return max(round(seconds / 60), 0)


def width(text: str) -> int:
    """Columns `text` takes on the printer: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def wrap(text: str, columns: int) -> list[str]:
    """Cut `text` into lines of at most `columns` columns; breaks at spaces where it can."""
    lines: list[str] = []
    current = ""
    for ch in text:
        if width(current + ch) > columns:
            cut = current.rfind(" ")
            if ch != " " and cut > 0 and width(current) - width(current[:cut]) < columns // 2:
                lines.append(current[:cut].rstrip())
                current = current[cut + 1 :]
            else:
                lines.append(current.rstrip())
                current = ""
            if ch == " " and not current:
                continue
        current += ch
    if current.strip():
        lines.append(current.rstrip())
    return lines


def build_layout(receipt: Receipt, *, paper_mm: int, notice: str = "") -> Layout:
    """The receipt's lines for this paper width."""
    cols = PAPER_COLUMNS[paper_mm]
    lines: list[Line] = []

    def add(
        text: str, size: Size = "normal", *, bold: bool = False, align: Align = "center"
    ) -> None:
        # Double-size type takes twice the columns; a name too long for it prints normal.
        if size == "large" and width(text) > cols // 2:
            size = "normal"
        lines.extend(Line(t, size, bold, align) for t in wrap(text, cols // SCALE[size]))

    add(receipt.hall_name, "large", bold=True)
    if receipt.hall_name_en:
        add(receipt.hall_name_en, "small")
    lines.append(Line("-" * cols))
    add(receipt.service_name, "large", bold=True)
    if receipt.service_name_en:
        add(receipt.service_name_en, "small")
    lines.append(Line(receipt.number, "huge", bold=True))
    if receipt.appointment is not None:
        add("预约 Appointment", bold=True)
    elif receipt.priority:
        add("优先 Priority", bold=True)
    add(f"前面还有 {receipt.ahead} 人 · {receipt.ahead} ahead of you")
    wait, low, high = minutes(receipt.wait_s), minutes(receipt.p10_s), minutes(receipt.p90_s)
    add(f"预计等候约 {wait} 分钟（{low}–{high} 分钟）")
    add(f"Expected wait about {wait} min ({low}-{high} min)", "small")
    add(receipt.issued_at.strftime("%Y-%m-%d %H:%M:%S"))
    if notice:
        lines.append(Line("-" * cols))
        add(notice, align="left")
    footer = tuple(Line(t, "small") for t in wrap(QR_CAPTION, cols))
    return Layout(paper_mm, tuple(lines), receipt.qr_url, footer)

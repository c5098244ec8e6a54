"""The receipt as a picture: the same layout drawn with Pillow and Noto Sans CJK.

The admin page shows it (a hall checks its layout without a printer) and `chinese: image`
prints it, for printers that have no Chinese font. 384 dots wide on 58 mm paper, 576 on 80.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont

from .layout import Layout, Line

FONT_DIR = Path("/usr/share/fonts/opentype/noto")
REGULAR = FONT_DIR / "NotoSansCJK-Regular.ttc"
BOLD = FONT_DIR / "NotoSansCJK-Bold.ttc"
SC_INDEX = 2  # Noto Sans CJK SC in the collection: the Simplified Chinese glyph forms
MARGIN = 8
PX = {"small": 20, "normal": 24, "large": 40}  # Font A is 24 dots high; double size 48


class FontMissing(RuntimeError):
    """Noto Sans CJK is not installed (scripts/setup.sh installs fonts-noto-cjk)."""


@cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = BOLD if bold and BOLD.exists() else REGULAR
    try:
        return ImageFont.truetype(str(path), size, index=SC_INDEX)
    except OSError as exc:
        raise FontMissing(f"cannot load {path}: {exc} (install fonts-noto-cjk)") from None


def _px(line: Line, paper_mm: int) -> int:
    if line.size == "huge":
        return 96 if paper_mm == 80 else 72
    return PX[line.size]


def qr_image(payload: str, target_px: int) -> Image.Image:
    """A QR code with its quiet zone, scaled by whole modules to about `target_px`."""
    code = qrcode.QRCode(border=4, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(payload)
    code.make(fit=True)
    modules = code.modules_count + 2 * code.border
    box = max(target_px // modules, 2)
    matrix = code.get_matrix()  # includes the border
    img = Image.new("L", (modules * box, modules * box), 255)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                draw.rectangle((x * box, y * box, (x + 1) * box - 1, (y + 1) * box - 1), fill=0)
    return img


def render(layout: Layout) -> Image.Image:
    """The receipt as a 1-bit-ready greyscale image, `layout.dots` wide."""
    width = layout.dots
    qr = qr_image(layout.qr, int(width * 0.6))
    rows: list[tuple[Line, ImageFont.FreeTypeFont, int]] = []
    height = MARGIN
    for line in (*layout.lines, *layout.footer):
        f = font(_px(line, layout.paper_mm), line.bold)
        box = f.getbbox(line.text or " ")
        h = max(int(f.size * 1.25), int(box[3]))
        rows.append((line, f, h))
        height += h
    height += qr.height + 2 * MARGIN
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    y = MARGIN
    for i, (line, f, h) in enumerate(rows):
        if i == len(layout.lines):  # the QR code sits between the lines and the footer
            img.paste(qr, ((width - qr.width) // 2, y))
            y += qr.height
        text_w = draw.textlength(line.text, font=f)
        if line.text and set(line.text) == {"-"}:
            draw.line((MARGIN, y + h // 2, width - MARGIN, y + h // 2), fill=0, width=2)
        else:
            x = MARGIN if line.align == "left" else max((width - text_w) / 2, 0)
            draw.text((x, y), line.text, font=f, fill=0)
        y += h
    if not layout.footer:
        img.paste(qr, ((width - qr.width) // 2, y))
    return img


def png(layout: Layout) -> bytes:
    out = io.BytesIO()
    render(layout).save(out, format="PNG", compress_level=6)
    return out.getvalue()

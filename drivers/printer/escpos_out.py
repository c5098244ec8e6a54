"""The layout as ESC/POS bytes, built with python-escpos on its Dummy printer.

Chinese goes out as GB18030. Printers with a Chinese font need their Chinese (Kanji) mode
for two-byte text: FS & selects it and FS . cancels it, which python-escpos never sends.
Printers sold for the Chinese market mostly start in Chinese mode already (set by a DIP
switch or the feed button); for their profiles nothing is sent, because FS . at the end
would leave them in single-byte mode for whatever prints next. `chinese: image` prints the
preview bitmap instead, for printers without a Chinese font.
"""

from __future__ import annotations

from escpos.capabilities import CAPABILITIES, BaseProfile, get_profile
from escpos.exceptions import Error as EscposError
from escpos.printer import Dummy

from .layout import Layout, Line
from .preview import render

FS_CHINESE_ON = b"\x1c\x26"  # FS &
FS_CHINESE_OFF = b"\x1c\x2e"  # FS .
ESC_INIT = b"\x1b\x40"
ENCODING = "gb18030"

# Vendors of the capabilities database whose printers start in Chinese mode.
CHINESE_BY_DEFAULT = frozenset({"Zjiang", "ZiJiang", "Netum", "Rongta", "Xprinter", "Sunmi"})


class UnknownProfile(ValueError):
    pass


def known_profiles() -> list[str]:
    return sorted(CAPABILITIES["profiles"])


def load_profile(name: str) -> BaseProfile:
    if name not in known_profiles():
        raise UnknownProfile(
            f"unknown printer profile {name!r}; python-escpos knows: {', '.join(known_profiles())}"
        )
    profile: BaseProfile = get_profile(name)
    return profile


def needs_chinese_mode(profile: BaseProfile) -> bool:
    return profile.profile_data.get("vendor") not in CHINESE_BY_DEFAULT


def _style(p: Dummy, line: Line, paper_mm: int) -> None:
    # GS ! sizes the Chinese characters too; ESC ! (python-escpos's double_width) does not.
    n = {"huge": 4 if paper_mm == 80 else 3, "large": 2}.get(line.size, 1)
    p.set(align=line.align, bold=line.bold, custom_size=True, width=n, height=n)


def receipt_bytes(layout: Layout, profile_name: str, chinese: str = "native") -> bytes:
    """The whole job: initialise, text, QR code, feed and cut."""
    profile = load_profile(profile_name)
    p = Dummy(profile=profile_name)
    p._raw(ESC_INIT)
    if chinese == "image":
        p.image(render(layout), impl="bitImageRaster", center=False)
    else:
        kanji = needs_chinese_mode(profile)
        if kanji:
            p._raw(FS_CHINESE_ON)
        for line in layout.lines:
            _write(p, line, layout.paper_mm)
        p.set(align="center", bold=False, custom_size=True, width=1, height=1)
        native_qr = bool(profile.supports("qrCode"))
        try:
            p.qr(layout.qr, size=8 if layout.paper_mm == 80 else 6, native=native_qr)
        except EscposError:
            p.qr(layout.qr, size=6, native=False)
        for line in layout.footer:
            _write(p, line, layout.paper_mm)
        p.set(align="left", bold=False, custom_size=True, width=1, height=1)
        if kanji:
            p._raw(FS_CHINESE_OFF)
    p.cut()
    return bytes(p.output)


def _write(p: Dummy, line: Line, paper_mm: int) -> None:
    _style(p, line, paper_mm)
    p._raw(line.text.encode(ENCODING, errors="replace") + b"\n")

"""One printer connection as python-escpos configures it, and its real-time status.

Blocking throughout: only the printer's worker thread calls into this module.

Status is read with DLE EOT n (10 04 n, n = 1..4) where the connection can answer
(network, serial). A file or device path and USB are write-only here: their faults show as
write errors. No shell is involved anywhere: python-escpos opens sockets, serial ports,
files and USB devices directly, and the CUPS/lp printers (which run commands) are not
offered.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from escpos.escpos import Escpos
from escpos.printer import File, Network, Serial, Usb

if TYPE_CHECKING:
    from hall_daemon.config import PrinterConfig

DLE_EOT = b"\x10\x04"
STATUS_TIMEOUT_S = 0.5
NETWORK_TIMEOUT_S = 3.0


class PrinterFault(Exception):
    """The printer cannot print now; `detail` is what device.fault says."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Status:
    """What DLE EOT told: each field None when the printer did not answer that question."""

    offline: bool | None = None
    cover_open: bool | None = None
    paper_out: bool | None = None
    paper_low: bool | None = None
    error: bool | None = None

    def fault(self) -> str | None:
        """The device.fault detail, or None if it can print."""
        if self.cover_open:
            return "cover-open"
        if self.paper_out:
            return "paper-out"
        if self.error:
            return "printer-error"
        if self.offline:
            return "offline"
        return None


def _valid(b: int) -> bool:
    # Every DLE EOT answer has bits 1 and 4 set and bits 0 and 7 clear.
    return b & 0x93 == 0x12


def parse_status(answers: dict[int, int]) -> Status:
    """Answers to DLE EOT 1..4 (missing or malformed ones are left out) -> Status."""
    a = {n: b for n, b in answers.items() if _valid(b)}
    s1, s2, s3, s4 = a.get(1), a.get(2), a.get(3), a.get(4)
    paper_out = None
    if s4 is not None or s2 is not None:
        paper_out = bool(s4 is not None and s4 & 0x60) or bool(s2 is not None and s2 & 0x20)
    return Status(
        offline=None if s1 is None else bool(s1 & 0x08),
        cover_open=None if s2 is None else bool(s2 & 0x04),
        paper_out=paper_out,
        paper_low=None if s4 is None else bool(s4 & 0x0C),
        error=None if s3 is None else bool(s3 & 0x68),
    )


class _AppendFile(File):  # type: ignore[misc]
    """python-escpos's File truncates on open; a receipt log (or /dev/usb/lp0) is appended to."""

    def open(self, raise_not_found: bool = True) -> None:
        self.device = open(self.devfile, "ab")  # noqa: SIM115 (kept open: it is the printer)


def describe(config: PrinterConfig) -> str:
    """Where the printer is, for logs and the device's `port` (no secrets in any of it)."""
    match config.connection:
        case "network":
            return f"network:{config.host}:{config.port}"
        case "serial":
            return f"serial:{config.url}"
        case "usb":
            return f"usb:{config.vendor_id or 0:04x}:{config.product_id or 0:04x}"
        case _:
            return f"file:{config.path}"


class Connection:
    def __init__(self, config: PrinterConfig) -> None:
        self.config = config
        self.name = describe(config)
        self.reads_status = config.connection in ("network", "serial")
        self._printer: Escpos | None = None

    @property
    def is_open(self) -> bool:
        return self._printer is not None

    def _make(self) -> Escpos:
        c = self.config
        kw: dict[str, Any] = {"profile": c.profile}
        match c.connection:
            case "network":
                return Network(host=c.host, port=c.port, timeout=NETWORK_TIMEOUT_S, **kw)
            case "serial":
                return Serial(devfile=c.url, baudrate=c.baud, timeout=STATUS_TIMEOUT_S, **kw)
            case "usb":
                return Usb(idVendor=c.vendor_id, idProduct=c.product_id, timeout=5000, **kw)
            case _:
                return _AppendFile(devfile=str(c.path), **kw)

    def open(self) -> None:
        """Connect; raises PrinterFault("offline") if the printer is not there."""
        if self._printer is not None:
            return
        printer = self._make()
        try:
            printer.open()
        except Exception as exc:
            raise PrinterFault("offline") from exc
        if getattr(printer, "device", None) is None:
            raise PrinterFault("offline")
        self._printer = printer

    def close(self) -> None:
        printer, self._printer = self._printer, None
        if printer is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                printer.close()

    def write(self, data: bytes) -> None:
        if self._printer is None:
            raise PrinterFault("offline")
        try:
            self._printer._raw(data)
        except Exception as exc:
            self.close()
            raise PrinterFault("offline") from exc

    def status(self) -> Status | None:
        """Ask DLE EOT 1..4; None where this connection cannot ask. PrinterFault("offline")
        if the connection broke; a printer that answers nothing also counts as offline."""
        if not self.reads_status:
            return None
        if self._printer is None:
            raise PrinterFault("offline")
        answers: dict[int, int] = {}
        try:
            self._discard_input()
            for n in (1, 2, 3, 4):
                self._printer._raw(DLE_EOT + bytes([n]))
                b = self._read_byte()
                if b is None:
                    # Answers carry no question number: a late one would be read as the
                    # next question's. Ask no more this time; the late bytes are discarded.
                    break
                answers[n] = b
        except Exception as exc:
            self.close()
            raise PrinterFault("offline") from exc
        if not answers:
            self.close()
            raise PrinterFault("offline")
        return parse_status(answers)

    def _read_byte(self) -> int | None:
        device = getattr(self._printer, "device", None)
        if isinstance(device, socket.socket):
            ready, _, _ = select.select([device], [], [], STATUS_TIMEOUT_S)
            if not ready:
                return None
            data = device.recv(1)
            if not data:
                raise ConnectionResetError("the printer closed the connection")
            return data[0]
        if device is None or not hasattr(device, "read"):
            return None
        data = device.read(1)  # pyserial: back as soon as one byte came, else after its timeout
        return data[0] if data else None

    def _discard_input(self) -> None:
        # Stray bytes (an answer that came too late) must not be read as the next answer.
        device = getattr(self._printer, "device", None)
        if isinstance(device, socket.socket):
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                ready, _, _ = select.select([device], [], [], 0)
                if not ready:
                    return
                if not device.recv(256):
                    raise ConnectionResetError("the printer closed the connection")
        elif device is not None and hasattr(device, "reset_input_buffer"):
            device.reset_input_buffer()

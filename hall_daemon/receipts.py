"""What a receipt carries and what prints one, shared by the kiosk page and the printer.

Both sides speak this type, so it lives in the core: the kiosk page (display/) builds a
`Receipt` and hands it to whatever `ReceiptPrinter` the composition root gives it, and the
printer (drivers/printer/) lays it out, without either output importing the other.

The kiosk issues the ticket first and shows it; printing runs afterwards, in the
background. A printer that fails never takes the ticket back: the page tells the applicant
to note the number, and the applicant page (the QR code's target) still works without paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Receipt:
    """Everything a receipt carries. `qr_url` holds the ticket's token: print it, log it never."""

    number: str
    service: str
    service_name: str
    service_name_en: str
    priority: bool
    appointment: str | None
    ahead: int
    wait_s: int
    p10_s: int
    p90_s: int
    issued_at: datetime
    qr_url: str
    hall_name: str
    hall_name_en: str
    kiosk: str  # which kiosk page asked (the `kiosk` URL parameter), to pick its printer

    def __repr__(self) -> str:
        # Keep the token out of logs and tracebacks that print the object.
        return f"Receipt({self.number}, service={self.service}, kiosk={self.kiosk!r})"


class ReceiptPrinter(Protocol):
    """Prints one receipt; raises if it could not (out of paper, offline)."""

    async def print_receipt(self, receipt: Receipt) -> None: ...

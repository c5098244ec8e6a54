"""Receipt printers (ESC/POS through python-escpos): layout, preview, print queue, faults.

`start_printer(hall, config)` starts the printer config.yaml names (None without one); the
handle is the kiosk's `ReceiptPrinter`, takes dispenser tickets with `print_ticket`, reprints
on `receipt.reprint_requested`, and `add_receipt_routes` shows previews on the admin page.
"""

from __future__ import annotations

from .routes import add_receipt_routes
from .service import PrinterHandle, check_profile, start_printer

__all__ = ["PrinterHandle", "add_receipt_routes", "check_profile", "start_printer"]

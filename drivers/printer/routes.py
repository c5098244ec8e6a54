"""The receipt preview on the admin page: GET /admin/receipts/<number>.png and sample.png.

The admin's login middleware protects everything under /admin; nothing here checks it.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from .service import PrinterHandle

NUMBER = re.compile(r"[A-Z]{1,2}\d{3}")


def add_receipt_routes(app: web.Application, printer: PrinterHandle) -> None:
    async def sample(request: web.Request) -> web.Response:
        receipt = printer.sample_receipt()
        data = await asyncio.get_running_loop().run_in_executor(None, printer.render_png, receipt)
        return _png(data)

    async def ticket(request: web.Request) -> web.Response:
        number = request.match_info["number"].upper()
        t = printer.hall.state.tickets.get(number) if NUMBER.fullmatch(number) else None
        if t is None:
            raise web.HTTPNotFound(text=f"no ticket {number} today")
        receipt = printer.receipt_for(t)  # read the state here, on the loop
        data = await asyncio.get_running_loop().run_in_executor(None, printer.render_png, receipt)
        return _png(data)

    # sample.png first: {number}.png would take it otherwise.
    app.router.add_get("/admin/receipts/sample.png", sample)
    app.router.add_get("/admin/receipts/{number}.png", ticket)


def _png(data: bytes) -> web.Response:
    # The picture carries a ticket's token in its QR code: never cache it anywhere.
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-store"})

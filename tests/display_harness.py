"""The display pages' test hall: a real Hall (engine, SQLite store, bus) and the daemon's aiohttp
app with the display mounted, on 127.0.0.1, and the Chromium pages that watch it.

Shared by the display browser tests (test_display_browser, test_display_keypad,
test_display_notice); the `browser` and `server` fixtures are imported by name there.
Screenshots go to $DISPLAY_SCREENSHOTS, default state/screenshots/ (ignored by git).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from display import setup_display
from display.server import DisplayHandle
from hall_daemon import commands as c
from hall_daemon.config import HallConfig, load_config
from hall_daemon.hall import Hall
from hall_daemon.receipts import Receipt
from hall_daemon.store import Store
from hall_daemon.web import make_app
from tests.chromium import PageWatch, chromium
from tests.daemon_harness import free_port

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(REPO / "config.yaml")
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=TZ)  # a Friday morning; every service open
SHOTS = Path(os.environ.get("DISPLAY_SCREENSHOTS", REPO / "state" / "screenshots"))
expect.set_options(timeout=5000)


class FakePrinter:
    """The receipt hook as the printer driver will use it; records what it was given."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []

    async def print_receipt(self, receipt: Receipt) -> None:
        await asyncio.sleep(0.05)
        self.receipts.append(receipt)


@dataclass
class HallServer:
    """The daemon's hall and web server, in this process, restartable on the same port."""

    db: Path
    config: HallConfig = CONFIG
    port: int = field(default_factory=free_port)
    printer: FakePrinter = field(default_factory=FakePrinter)
    hall: Hall | None = None
    display: DisplayHandle | None = None
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start_hall(self) -> Hall:
        self.hall = Hall(self.config.to_spec(), Store(Store.sqlite_url(self.db)), clock=lambda: T0)
        await self.hall.start()
        return self.hall

    async def start_web(self) -> None:
        assert self.hall is not None
        app = make_app(self.hall)
        self.display = setup_display(app, self.hall, self.config, receipts=self.printer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        # The daemon's order: inputs (web) first, then the hall.
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.hall is not None:
            await self.hall.stop()
            self.hall = None

    async def do(self, *commands: c.Command) -> None:
        assert self.hall is not None
        for command in commands:
            await self.hall.submit(command)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def server(tmp_path: Path) -> AsyncIterator[HallServer]:
    s = HallServer(tmp_path / "hall.db")
    await s.start_hall()
    await s.start_web()
    yield s
    await s.stop()


async def open_page(
    browser: Browser, url: str, base: str, *, width: int, height: int, **kw: object
) -> tuple[Page, PageWatch]:
    context = await browser.new_context(
        viewport={"width": width, "height": height},
        locale="zh-CN",
        **kw,  # type: ignore[arg-type]
    )
    page = await context.new_page()
    watch = PageWatch(page, base)
    await page.goto(url)
    return page, watch


def tok() -> str:
    return secrets.token_urlsafe(16)

"""The admin status page in real headless Chromium (Debian's /usr/bin/chromium via Playwright).

A real Hall (engine, SQLite store, bus) and the daemon's aiohttp app with the display and
the admin side mounted, on 127.0.0.1. The test logs in with the password the first start
logged, watches a call appear live, and uses the page's buttons; every action must end as
an event in the store.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from hall_daemon import commands as c
from hall_daemon.hall import Hall
from tests.admin_harness import admin_hall
from tests.chromium import PageWatch, chromium

pytestmark = pytest.mark.service

REPO = Path(__file__).resolve().parents[1]
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=TZ)  # a Friday morning; every service open
SHOTS = Path(os.environ.get("DISPLAY_SCREENSHOTS", REPO / "state" / "screenshots"))
expect.set_options(timeout=5000)


class Server:
    def __init__(self, hall: Hall, port: int, password: str) -> None:
        self.hall, self.port, self.password = hall, port, password
        self.url = f"http://127.0.0.1:{port}"

    def types(self) -> list[str]:
        return [e.type for e in self.hall.store.events_after(0, limit=10_000)]

    def events(self, kind: str) -> list[dict[str, object]]:
        return [e.data for e in self.hall.store.events_after(0, limit=10_000) if e.type == kind]


@pytest_asyncio.fixture
async def server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Server]:
    async with admin_hall(tmp_path, caplog, lambda: T0) as (hall, port, password):
        yield Server(hall, port, password)


async def login(page: Page, server: Server) -> None:
    await page.goto(server.url + "/admin/")
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await page.fill("input[name=password]", "not the password")
    await page.click("section.login button[type=submit]")
    await expect(page.locator(".flash.bad")).to_contain_text("Wrong password")
    await page.fill("input[name=password]", server.password)
    await page.click("section.login button[type=submit]")
    await expect(page).to_have_url(server.url + "/admin/")
    await expect(page.locator("#conn")).to_have_attribute("data-conn", "live")


async def test_admin_sees_calls_live_and_acts_through_the_page(server: Server) -> None:
    hall = server.hall
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(10_000)
        page = await context.new_page()
        watch = PageWatch(page, server.url, "ws://127.0.0.1")
        await login(page, server)

        # A call made elsewhere (a keypad's NEXT) appears live, without a reload.
        await hall.submit(c.TakeTicket(T0, "A", "tok-admin-browser-1"))
        await hall.submit(c.TakeTicket(T0, "A", "tok-admin-browser-2"))
        row1 = page.locator('#counters tr[data-counter="1"]')
        await expect(row1.locator(".state [data-state]")).to_have_attribute("data-state", "closed")
        await hall.submit(c.CallNext(T0, 1))
        await expect(row1.locator(".ticket")).to_contain_text("A001")
        await expect(row1.locator(".state [data-state]")).to_have_attribute("data-state", "open")
        await expect(page.locator('#services tr[data-service="A"] .waiting')).to_have_text("1")

        # Pause counter 1 from the page.
        await row1.locator('button[data-action="counter.pause"]').click()
        await expect(row1.locator(".state [data-state]")).to_have_attribute("data-state", "paused")
        assert hall.state.counters[1].state == "paused"
        assert server.events("counter.paused") == [{"counter": 1}]

        # Set the scrolling notice.
        await page.fill("#notice-text", "今日16:00停止取号 No tickets after 16:00")
        await page.click('#form-notice button[type="submit"]')
        await expect(page.locator("#notice-current")).to_contain_text("今日16:00停止取号")
        assert hall.state.notice == "今日16:00停止取号 No tickets after 16:00"
        assert server.events("hall.notice_set") == [
            {"text": "今日16:00停止取号 No tickets after 16:00"}
        ]

        # Cancel the waiting ticket A002 from its row.
        row2 = page.locator('#tickets tr[data-ticket="A002"]')
        await row2.locator('button[data-action="ticket.cancel"]').click()
        await expect(row2).to_have_count(0)
        assert hall.state.tickets["A002"].state == "cancelled"
        cancelled = server.events("ticket.cancelled")
        assert cancelled == [{"number": "A002", "service": "A", "reason": "admin"}]

        # Hand-issue a ticket, and move it to another service by number.
        await page.select_option("#form-issue select", "A")
        await page.click('#form-issue button[type="submit"]')
        await expect(page.locator("#result")).to_contain_text("A003")
        await page.fill("#form-ticket input[name=ticket]", "a003")
        await page.select_option("#form-ticket select", "B")
        await page.click('#form-ticket button[data-do="ticket.move"]')
        await expect(page.locator('#tickets tr[data-ticket="A003"] td').nth(1)).to_have_text("B")
        issued = server.events("ticket.issued")[-1]
        assert issued["channel"] == "counter" and issued["number"] == "A003"
        assert server.events("ticket.transferred")[-1] == {
            "number": "A003",
            "from": "A",
            "to": "B",
            "counter": None,
        }

        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "admin-status.png"), full_page=True)

        # The outlook (错峰): a table per service, today and the next six days, in minutes.
        await page.click('nav a[href="/admin/outlook"]')
        await expect(page.locator("#outlook-status")).to_have_attribute("data-state", "ready")
        services = list(hall.state.services)
        tables = page.locator("#outlook .outlook-service")
        await expect(tables).to_have_count(len(services))
        first = page.locator(f'#outlook .outlook-service[data-service="{services[0]}"]')
        await expect(first.locator("tbody tr")).to_have_count(7)
        now_cell = first.locator("tbody tr").first.locator("td[data-wait]").first
        live = hall.forecaster(hall.state, services[0], hall.state.waiting(services[0]), hall.now())
        assert await now_cell.get_attribute("data-wait") == str(live["wait_s"])
        await page.screenshot(path=str(SHOTS / "admin-outlook.png"), full_page=True)
        watch.check()

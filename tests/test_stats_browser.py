"""The statistics page in real headless Chromium (Debian's /usr/bin/chromium via Playwright).

A real Hall on SQLite with the daemon's app, display and admin side mounted (so the page
sits behind the real login). Two Fridays are played through the engine; the admin logs in
with the password the first start logged, opens /admin/stats, sees the day's figures, the
week-old best next to them and the hourly chart, switches to 30 days, gets a clear error
for a backwards range, and downloads the CSV, whose content is checked.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, expect

from hall_daemon import commands as c
from hall_daemon.hall import Hall
from tests.admin_harness import admin_hall
from tests.chromium import PageWatch, chromium

pytestmark = pytest.mark.service

REPO = Path(__file__).resolve().parents[1]
TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 27)  # a Friday
WEEK_AGO = date(2026, 11, 20)
SHOTS = Path(os.environ.get("DISPLAY_SCREENSHOTS", REPO / "state" / "screenshots"))
expect.set_options(timeout=10_000)


def at(day: date, clock: str) -> datetime:
    h, m, *s = (int(x) for x in clock.split(":"))
    return datetime(day.year, day.month, day.day, h, m, s[0] if s else 0, tzinfo=TZ)


class Server:
    def __init__(self, url: str, password: str) -> None:
        self.url, self.password = url, password


async def play(hall: Hall, clock: list[datetime]) -> None:
    async def do(*commands: c.Command) -> None:
        for cmd in commands:
            clock[0] = cmd.at
            await hall.submit(cmd)

    w, d = WEEK_AGO, DAY
    # A week ago: two served in the 10 o'clock hour after 30 s and 60 s (best: 2, 0:45).
    await do(
        c.TakeTicket(at(w, "10:00"), "A", "tok-week-ago-0001-xxxxxx"),
        c.TakeTicket(at(w, "10:00"), "A", "tok-week-ago-0002-xxxxxx"),
        c.CallNext(at(w, "10:00:30"), 1),
        c.CallNext(at(w, "10:01"), 2),
        c.Done(at(w, "10:05"), 1),
        c.Done(at(w, "10:06"), 2),
    )
    # The day: A001 waits 2:00, is served 5:00 and rates 4; A002 waits 4:00, never comes.
    await do(
        c.TakeTicket(at(d, "10:00"), "A", "tok-the-day-0001-xxxxxxx"),
        c.TakeTicket(at(d, "10:00"), "A", "tok-the-day-0002-xxxxxxx"),
        c.CallNext(at(d, "10:02"), 1),
        c.Serving(at(d, "10:03"), 1),
        c.CallNext(at(d, "10:04"), 2),
        c.NoShow(at(d, "10:06"), 2),
        c.Done(at(d, "10:08"), 1),
        c.Rate(at(d, "10:08:10"), 1, 4),
    )
    clock[0] = at(d, "12:00")


@pytest_asyncio.fixture
async def server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Server]:
    clock = [at(WEEK_AGO, "08:00")]
    async with admin_hall(tmp_path, caplog, lambda: clock[0]) as (hall, port, password):
        await play(hall, clock)
        yield Server(f"http://127.0.0.1:{port}", password)


async def login_to_stats(page: Page, server: Server) -> None:
    await page.goto(server.url + "/admin/stats")
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await page.fill("input[name=password]", server.password)
    await page.click("section.login button[type=submit]")
    await expect(page).to_have_url(server.url + "/admin/stats")


def cell(page: Page, table: str, key: str, col: str) -> Locator:
    return page.locator(f'#{table} tr[data-key="{key}"] td[data-col="{col}"]')


async def test_admin_sees_the_days_figures_chart_and_exports_csv(server: Server) -> None:
    async with chromium() as browser:
        context = await browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        page = await context.new_page()
        watch = PageWatch(page, server.url, console_errors=True)
        await login_to_stats(page, server)
        await expect(page.locator("#stats-status")).to_have_attribute("data-state", "ready")
        await expect(page.locator("#from")).to_have_value("2026-11-27")

        # The whole hall today, with the week-old best beside it.
        summary = page.locator("#summary")
        await expect(summary.locator('[data-fig="issued"] b')).to_have_text("2")
        await expect(summary.locator('[data-fig="served"] b')).to_have_text("1")
        await expect(summary.locator('[data-fig="served"] .best')).to_contain_text("2")
        await expect(summary.locator('[data-fig="wait_mean"] b')).to_have_text("3:00")
        await expect(summary.locator('[data-fig="wait_mean"] .best')).to_contain_text("0:45")

        # Service A and counters 1 and 2 in the tables.
        for col, text in [
            ("issued", "2"),
            ("served", "1"),
            ("no_show", "1"),
            ("wait_mean", "3:00"),
            ("wait_median", "3:00"),
            ("wait_p90", "3:48"),
            ("handle_mean", "5:00"),
            ("rating_mean", "4"),
            ("rating_dist", "0/0/0/1/0"),
            ("best_served", "2"),
            ("best_wait", "0:45"),
        ]:
            await expect(cell(page, "table-services", "A", col)).to_have_text(text)
        await expect(cell(page, "table-services", "B", "issued")).to_have_text("0")
        await expect(cell(page, "table-counters", "1", "served")).to_have_text("1")
        await expect(cell(page, "table-counters", "2", "no_show")).to_have_text("1")
        await expect(page.locator('#table-counters [data-col="issued"]')).to_have_count(0)
        await expect(page.locator("#model-note")).to_contain_text("no model")

        # The hourly chart: bars for 10:00, the best served mark and the wait dot.
        chart = page.locator("#chart-counts svg")
        await expect(chart.locator('rect[data-kind="issued"][data-hour="10"]')).to_have_attribute(
            "data-value", "2"
        )
        await expect(chart.locator('rect[data-kind="served"][data-hour="10"]')).to_have_attribute(
            "data-value", "1"
        )
        await expect(chart.locator('line.best-served[data-hour="10"]')).to_have_attribute(
            "data-value", "2"
        )
        served_bar = await chart.locator('rect[data-kind="served"][data-hour="10"]').bounding_box()
        assert served_bar is not None and served_bar["height"] > 10
        await expect(page.locator('#chart-wait svg circle[data-hour="10"]')).to_have_attribute(
            "data-value", "180"
        )
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "admin-stats.png"), full_page=True)
        await page.select_option("#scope", "c:2")
        await expect(
            page.locator('#chart-counts svg rect[data-kind="served"][data-hour="10"]')
        ).to_have_attribute("data-value", "0")

        # The CSV link downloads the service table: BOM, bilingual header, the figures.
        async with page.expect_download() as info:
            await page.click("#csv-service")
        download = await info.value
        assert download.suggested_filename == "hall-stats-service-2026-11-27_2026-11-27.csv"
        path = await download.path()
        raw = Path(path).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
        head = rows[0]
        a = dict(zip(head, rows[1], strict=True))
        assert a["服务 service"] == "A" and a["名称 name"] == "企业开办"
        assert (a["取号 issued"], a["办结 served"], a["过号 no_show"]) == ("2", "1", "1")
        assert (a["平均等候秒 wait_mean_s"], a["等候P90秒 wait_p90_s"]) == ("180.0", "228.0")
        assert (a["平均办理秒 handle_mean_s"], a["历史同期最多办结 best_served"]) == (
            "300.0",
            "2",
        )
        assert [r[0] for r in rows[1:]] == ["A", "B", "C"]

        # Thirty days take in the week-old Friday too.
        await page.click('button[data-days="30"]')
        await expect(page).to_have_url(re.compile(r"from=2026-10-29&to=2026-11-27"))
        await expect(cell(page, "table-services", "A", "issued")).to_have_text("4")
        await expect(cell(page, "table-services", "A", "served")).to_have_text("3")
        assert "from=2026-10-29" in (await page.get_attribute("#csv-ticket", "href") or "")

        # A backwards range gets the server's clear answer on the page.
        await page.fill("#from", "2026-11-27")
        await page.fill("#to", "2026-11-20")
        await page.click("#show")
        await expect(page.locator("#stats-error")).to_contain_text("is after")
        await expect(page.locator("#stats-error")).to_be_visible()

        assert [e for e in watch.errors if "400" not in e] == [], watch.errors
        assert watch.foreign == [], watch.foreign

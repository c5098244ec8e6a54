"""Issue 5's kiosk → receipt, end to end: the real `hall-daemon run` process with its file
printer, headless Chromium tapping a service on /kiosk, the receipt read back from the
printer's file, and the admin page's preview of it decoded by an independent QR reader."""

from __future__ import annotations

import io
import re
from pathlib import Path

import aiohttp
import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import expect

from tests.chromium import chromium
from tests.daemon_harness import Daemon, admin_login, free_port, hall_daemon, quiet_config

pytestmark = pytest.mark.service

QR = re.compile(rb"\x1d\(k(..)1P0", re.S)


def qr_payloads(data: bytes) -> list[str]:
    """The contents of every native QR code (GS ( k ... 1 P 0) in an ESC/POS stream."""
    found = []
    for m in QR.finditer(data):
        length = m.group(1)[0] + 256 * m.group(1)[1] - 3
        found.append(data[m.end() : m.end() + length].decode())
    return found


async def admin_png(base: str, password: str, path: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        assert (await admin_login(s, base, password))[0] == 303
        async with s.get(base + path) as r:
            if r.status == 200:
                assert r.headers.get("Cache-Control") == "no-store"
            return r.status, await r.read()


async def test_a_tap_on_the_kiosk_issues_shows_and_prints_the_ticket(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(quiet_config(tmp_path, port), port)
    receipts = tmp_path / "state" / "receipts.bin"
    daemon.start()
    try:
        async with chromium() as browser:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 1024}, locale="zh-CN", has_touch=True
            )
            page = await context.new_page()
            await page.goto(f"{base}/kiosk?kiosk=k1")
            await expect(page.locator("body")).to_have_attribute("data-conn", "online")
            await page.locator('#services .service[data-service="B"]').tap()
            await expect(page.locator("#result-number")).to_have_text("B001", timeout=10000)
            await expect(page.locator("#result-receipt")).to_have_attribute(
                "data-state", "printed", timeout=10000
            )

        data = receipts.read_bytes()
        assert b"B001" in data and "不动产登记".encode("gb18030") in data
        assert "示范区政务服务中心".encode("gb18030") in data and data.count(b"\x1dV") == 1
        [url] = qr_payloads(data)
        assert url.startswith(f"http://127.0.0.1:{port}/t/")
        # The QR code leads to this ticket's own page.
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert r.status == 200
        status, _ = daemon.get("/api/queues")
        assert status == 200

        # The admin page's preview of the same receipt: its QR decodes to the same URL.
        password = (tmp_path / "state" / "admin-password.initial").read_text().strip()
        status, png = await admin_png(base, password, "/admin/receipts/B001.png")
        assert status == 200
        image = Image.open(io.BytesIO(png))
        assert image.width == 576  # config.yaml: 80 mm paper
        assert [c.text for c in zxingcpp.read_barcodes(image)] == [url]
        status, _ = await admin_png(base, password, "/admin/receipts/Z999.png")
        assert status == 404
        status, sample = await admin_png(base, password, "/admin/receipts/sample.png")
        assert status == 200 and Image.open(io.BytesIO(sample)).width == 576
        token = url.rsplit("/", 1)[1]
        assert token not in daemon.log_text()  # the token is never logged
    finally:
        assert daemon.stop() == 0


def test_the_daemon_refuses_an_unknown_printer_profile_naming_the_line(tmp_path: Path) -> None:
    config = quiet_config(tmp_path, free_port())
    text = config.read_text(encoding="utf-8").replace("profile: default", "profile: TM-T88X")
    config.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "profile: TM-T88X" in t)
    done = hall_daemon("run", "-c", str(config))
    assert done.returncode == 2
    assert f"{config}:{line} printer.profile: unknown printer profile 'TM-T88X'" in done.stderr
    assert "TM-T88V" in done.stderr and "Traceback" not in done.stderr

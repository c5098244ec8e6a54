"""Keypad bytes to a hall screen in real headless Chromium.

The test plays the RS-485 counter bus: it writes the contract's bus68 KEY frames
(serial-protocols.md §1) into a real port, over socket:// (a serial server) and over a
socat pty pair, and echoes the daemon's host frames as the keypads would. The daemon side
is the real thing in this process: Hall on SQLite, the port driver (drivers.ports), and the
aiohttp app with the display mounted. The screens are Debian's Chromium via Playwright.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from drivers import bus68
from drivers.bus68 import Key, KeyPress
from drivers.link import LinkState
from drivers.ports import PortManager, start_ports
from hall_daemon import commands as c
from tests.display_harness import (
    CONFIG,
    SHOTS,
    T0,
    HallServer,
    open_page,
    tok,
)
from tests.test_serial_link import (
    BusDevices,
    SocatPair,
    TcpServer,
    bus_port,
    eventually,
    fast_backoff,
    with_ports,
)

pytestmark = [pytest.mark.service, pytest.mark.asyncio(loop_scope="module")]
pytest_plugins = ["tests.display_harness"]  # the browser and server fixtures

SERVICE_NUMBER = {s.code: n for n, s in enumerate(CONFIG.services, start=1)}  # A=1, B=2, C=3


@dataclass
class Keypads:
    """The keypads on the bus: each counts its own press seq, as the device does."""

    bus: BusDevices
    seqs: dict[int, int] = field(default_factory=dict)

    async def press(self, address: int, key: Key, digits: str = "") -> bytes:
        seq = self.seqs.get(address, 0) + 1
        self.seqs[address] = seq % 256
        raw = bus68.encode(bus68.build(KeyPress(address, seq % 256, digits, key)))
        # Acked (its echo seen) before the test looks at the screens. How fast is the serial
        # tests' and benches' business; on these shared cores it is no assertion here.
        await self.bus.press(raw)
        return raw


@contextlib.asynccontextmanager
async def counter_bus(transport: str, folder: Path) -> AsyncIterator[tuple[str, BusDevices]]:
    """The far end of the counter bus port: its URL for config.yaml and the devices on it."""
    if transport == "pty":
        socat = SocatPair(folder)
        await socat.start()
        try:
            yield socat.url, BusDevices(socat.peer)
        finally:
            await socat.kill()
    else:
        server = TcpServer()
        await server.start()
        try:
            yield server.url, BusDevices(server.peer)
        finally:
            await server.kill()


@contextlib.asynccontextmanager
async def hall_with_bus(transport: str, tmp: Path) -> AsyncIterator[tuple[HallServer, Keypads]]:
    """The daemon's parts in its order: hall, ports, web; stopped in reverse."""
    async with counter_bus(transport, tmp) as (url, bus):
        config = with_ports(bus_port(url))
        server = HallServer(tmp / "hall.db", config=config)
        hall = await server.start_hall()
        ports: PortManager = await start_ports(hall, config, backoff=fast_backoff)
        try:
            await ports.link("counter-bus").wait_for(LinkState.CONNECTED)
            await eventually(lambda: bus.peer._write is not None, 5.0, "the daemon to connect")
            await server.start_web()
            yield server, Keypads(bus)
        finally:
            if server.runner is not None:
                await server.runner.cleanup()
                server.runner = None
            await ports.stop()
            await server.stop()


async def waiting(page: Page, service: str) -> tuple[str | None, str | None]:
    row = page.locator(f'#queues tr[data-service="{service}"]')
    return await row.get_attribute("data-waiting"), await row.get_attribute("data-wait")


@pytest.mark.parametrize("transport", ["socket", "pty"])
async def test_keypad_presses_show_on_the_screens(
    browser: Browser, tmp_path: Path, transport: str
) -> None:
    async with hall_with_bus(transport, tmp_path) as (server, keypads):
        await server.do(
            *(c.TakeTicket(T0 + timedelta(seconds=i), "A", tok()) for i in range(4)),
            *(c.TakeTicket(T0 + timedelta(seconds=10 + i), "B", tok()) for i in range(2)),
            *(c.OpenCounter(T0, n) for n in (1, 2, 3)),
        )
        hall_page, hall_watch = await open_page(
            browser, f"{server.url}/screen/hall", server.url, width=1920, height=1080
        )
        portrait, portrait_watch = await open_page(
            browser, f"{server.url}/screen/area-a", server.url, width=1080, height=1920
        )
        for page in (hall_page, portrait):
            await expect(page.locator("body")).to_have_attribute("data-conn", "online")
        now = hall_page.locator("#now")
        row_a = hall_page.locator('#queues tr[data-service="A"]')
        row_b = hall_page.locator('#queues tr[data-service="B"]')
        await expect(row_a).to_have_attribute("data-waiting", "4")
        await expect(row_b).to_have_attribute("data-waiting", "2")
        a_before = await waiting(hall_page, "A")
        b_before = await waiting(hall_page, "B")
        await expect(now).to_have_attribute("data-number", "")

        # NEXT on counter 1's keypad: both screens show the call, large and flashing.
        await keypads.press(1, Key.NEXT)
        for page in (hall_page, portrait):
            await expect(page.locator("#now")).to_have_attribute("data-number", "A001")
            await expect(page.locator("#now")).to_have_attribute("data-counter", "1")
            await expect(page.locator("#now")).to_have_class("now flash")
            await expect(page.locator("#now-number")).to_have_text("A001")
            await expect(page.locator("#now-counter .zh")).to_have_text("1号窗口")
            await expect(page.locator("#flash-number")).to_have_text("A001")
        await expect(now).to_have_attribute("data-flashes", "1")
        await expect(now).to_have_attribute("data-recall", "0")
        await expect(
            hall_page.locator('#counters .counter[data-counter="1"] .cticket')
        ).to_have_text("A001")
        # Waiting count and forecast of A both moved; B's count did not.
        await expect(row_a).to_have_attribute("data-waiting", "3")
        assert (await waiting(hall_page, "A"))[1] != a_before[1]
        assert (await waiting(hall_page, "B"))[0] == b_before[0]

        # RECALL: the same call flashes again, on both screens.
        await keypads.press(1, Key.RECALL)
        for page in (hall_page, portrait):
            await expect(page.locator("#now")).to_have_attribute("data-flashes", "2")
            await expect(page.locator("#now")).to_have_attribute("data-recall", "1")
            await expect(page.locator("#now")).to_have_class("now flash")
        await expect(now).to_have_attribute("data-number", "A001")
        await expect(row_a).to_have_attribute("data-waiting", "3")  # a recall calls nobody new

        # NEXT on counter 2: A002 is the new call; A001 moves to the recent list.
        await keypads.press(2, Key.NEXT)
        await expect(now).to_have_attribute("data-number", "A002")
        await expect(now).to_have_attribute("data-counter", "2")
        await expect(now).to_have_attribute("data-flashes", "3")
        await expect(hall_page.locator('#recent li[data-number="A001"]')).to_have_count(1)
        await expect(row_a).to_have_attribute("data-waiting", "2")

        # 6 + CONFIRM on counter 2 (no-show): marked missed, the counter is free.
        await keypads.press(2, Key.CONFIRM, "6")
        await expect(now).to_have_attribute("data-status", "no_show")
        await expect(hall_page.locator("#now-status .zh")).to_have_text("过号")
        counter_2 = hall_page.locator('#counters .counter[data-counter="2"]')
        await expect(counter_2).to_have_attribute("data-ticket", "")
        await expect(counter_2.locator(".cticket")).to_have_text("—")

        # 2 + TRANSFER on counter 1: A001 leaves counter 1 and the call lists and queues for
        # service 2 (B), keeping its place by its issue time (一票到底).
        await keypads.press(1, Key.TRANSFER, str(SERVICE_NUMBER["B"]))
        await expect(row_b).to_have_attribute("data-waiting", "3")
        assert (await waiting(hall_page, "B"))[1] != b_before[1]
        await expect(hall_page.locator('#counters .counter[data-counter="1"]')).to_have_attribute(
            "data-ticket", ""
        )
        await expect(hall_page.locator('#recent li[data-number="A001"]')).to_have_count(0)
        await expect(portrait.locator('#recent li[data-number="A001"]')).to_have_count(0)

        # NEXT on counter 3 (prefers B): A001, which waited longest for B, is called there.
        await keypads.press(3, Key.NEXT)
        await expect(now).to_have_attribute("data-number", "A001")
        await expect(now).to_have_attribute("data-counter", "3")
        await expect(hall_page.locator("#now-counter .zh")).to_have_text("3号窗口")
        await expect(row_b).to_have_attribute("data-waiting", "2")
        # The area-A screen follows A's calls only: A001 now belongs to B.
        await expect(portrait.locator("#now")).to_have_attribute("data-number", "A002")
        await expect(portrait.locator("#queues tr")).to_have_count(1)

        # The keypads' own LCDs were kept up to date over the same bus.
        assert keypads.bus.sent_to(3, bus68.Function.DISPLAY)

        # A fresh flash for the pictures, then the DOM must hold what a person sees in them.
        await keypads.press(1, Key.NEXT)
        await expect(now).to_have_attribute("data-number", "A003")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await hall_page.screenshot(path=SHOTS / f"keypad-hall-landscape-{transport}.png")
        await portrait.screenshot(path=SHOTS / f"keypad-area-a-portrait-{transport}.png")
        text = await hall_page.locator("main.data").text_content() or ""
        for expected in ("A003", "1号窗口", "A002", "过号", "A001", "3号窗口", "企业开办"):
            assert expected in text, expected

        hall_watch.check()
        portrait_watch.check()
        await hall_page.context.close()
        await portrait.context.close()

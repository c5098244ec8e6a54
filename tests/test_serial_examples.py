"""Every example in serial-protocols.md, both directions, over a socat pty and over socket://.

Device to host: the contract's frames and lines are written by the test playing the device;
the daemon echoes each bus frame byte for byte and commits what it asks for. Host to device:
the hall is put in the state an example describes and the daemon's bytes on the wire must be
exactly the example's hex.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers import bus68
from drivers.bus68 import Frame, Function, Key
from drivers.link import LinkState
from hall_daemon import commands as c
from hall_daemon.config import DeviceConfig, PortConfig
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from tests.test_serial_link import (
    BEEP_K3,
    CALL_012_K3,
    LCD_K3_12_7,
    LCD_K3_BLANK_12,
    NEXT_K3,
    PROMPT_E23,
    RATING_5_E23,
    SCREEN_41_A012,
    SPEC,
    BusDevices,
    LineDevice,
    Peer,
    SocatPair,
    TcpServer,
    dispenser_port,
    eventually,
    hall_clock,
    open_all_counters,
    running,
    with_ports,
)

NO_SHOW_K3 = bytes.fromhex("FF 68 05 05 68 03 01 02 06 0F 1B 16")
TRANSFER_2_K3 = bytes.fromhex("FF 68 05 05 68 03 01 03 02 13 1C 16")

TRANSPORTS = ["pty", "socket"]


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Hall]:
    h = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=hall_clock())
    await h.start()
    yield h
    await h.stop()


@contextlib.asynccontextmanager
async def far_end(
    transport: str, folder: Path
) -> AsyncIterator[tuple[str, Peer, TcpServer | None]]:
    """The device side of one port: a socat pty pair or a raw TCP serial server."""
    if transport == "pty":
        socat = SocatPair(folder)
        await socat.start()
        try:
            yield socat.url, socat.peer, None
        finally:
            await socat.kill()
    else:
        server = TcpServer()
        await server.start()
        try:
            yield server.url, server.peer, server
        finally:
            with contextlib.suppress(AssertionError):
                await server.kill()


def example_bus(url: str) -> PortConfig:
    """Counter 3's keypad, evaluator 0x23 and, as in the contract's example, screen 0x41."""
    return PortConfig(
        name="counter-bus",
        url=url,
        protocol="bus68",
        devices=(
            DeviceConfig(kind="keypad", address=3, counter=3),
            DeviceConfig(kind="evaluator", address=0x23, counter=3),
            DeviceConfig(kind="screen", address=0x41, counter=3),
        ),
    )


async def last_seq(hall: Hall) -> int:
    return await hall.io(hall.store.last_seq)


async def queue_events(hall: Hall, after: int) -> list[tuple[str, dict[str, Any]]]:
    """What the hall's log holds after `after`, device health reports left out."""
    events = await hall.io(hall.store.events_after, after)
    return [(e.type, e.data) for e in events if not e.type.startswith("device.")]


async def press(hall: Hall, bus: BusDevices, raw: bytes, commits: int = 1) -> list[tuple[str, Any]]:
    """Send a device frame; it must come back byte for byte within 100 ms and commit events.

    Returns (type, ticket number) of the queue events it committed.
    """
    mark = await last_seq(hall)
    heard = len(bus.peer.received)
    assert await bus.press(raw) < 0.1
    assert raw in bytes(bus.peer.received[heard:]), "the echo is not the frame byte for byte"
    got: list[tuple[str, dict[str, Any]]] = []

    async def enough() -> bool:
        got[:] = await queue_events(hall, mark)
        return len(got) >= commits

    deadline = time.monotonic() + 3.0
    while not await enough() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # and nothing more after it
    await enough()
    assert len(got) == commits, got
    return [(kind, data.get("number")) for kind, data in got]


def wire_holds(peer: Peer, raw: bytes) -> bool:
    return raw in bytes(peer.received)


async def shown(bus: BusDevices, address: int, function: int, raw: bytes) -> None:
    """The latest frame of that kind is the example, and these were the bytes on the wire."""
    await bus.shown(address, function, raw)
    assert wire_holds(bus.peer, raw)


def current(hall: Hall, counter: int) -> str | None:
    return hall.state.counters[counter].current


def key(seq: int, k: Key, digits: bytes = b"") -> bytes:
    return bus68.encode(Frame(3, Function.KEY, bytes([seq]) + digits + bytes([k])))


@pytest.mark.service
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bus68_examples(hall: Hall, tmp_path: Path, transport: str) -> None:
    async with far_end(transport, tmp_path) as (url, peer, server):
        bus = BusDevices(peer)
        async with running(hall, with_ports(example_bus(url))) as manager:
            await manager.link("counter-bus").wait_for(LinkState.CONNECTED)
            if server is not None:
                await eventually(lambda: server.connections == 1, what="the daemon to connect")
            await _bus68_story(hall, bus)


async def _bus68_story(hall: Hall, bus: BusDevices) -> None:
    await hall.submit(c.OpenCounter(hall.now(), 3))
    # Counter 3's queue (services B, A) goes from empty to one ticket: "keypad 3 beep".
    await hall.submit(c.TakeTicket(hall.now(), "B", "t-b1"))
    await shown(bus, 3, Function.BEEP, BEEP_K3)

    # "keypad 3, seq 1, NEXT": B001 is called at counter 3.
    assert await press(hall, bus, NEXT_K3) == [("ticket.called", "B001")]
    assert current(hall, 3) == "B001"

    # "keypad 3, seq 2, 6 + CONFIRM (no-show)": B001 did not come.
    assert await press(hall, bus, NO_SHOW_K3) == [("ticket.no_show", "B001")]
    assert current(hall, 3) is None

    # "keypad 3, seq 3, 2 + TRANSFER": A001, being served at 3, moves to service 2 (B).
    await hall.submit(c.TakeTicket(hall.now(), "A", "t-a1"))
    assert await press(hall, bus, key(10, Key.NEXT)) == [("ticket.called", "A001")]
    assert await press(hall, bus, TRANSFER_2_K3) == [("ticket.transferred", "A001")]
    assert hall.state.tickets["A001"].service == "B"
    assert await press(hall, bus, key(11, Key.NEXT)) == [("ticket.called", "A001")]
    assert await press(hall, bus, key(12, Key.DONE)) == [("ticket.done", "A001")]

    # "keypad 3, seq 4, CALL 012": A012 is called; nothing else waits for counter 3, so the
    # LCD reads "blank, ticket 12" and screen 0x41 (counter 3's here) says where to go.
    await hall.submit(c.TakeTicket(hall.now(), "A", "t-a12", number="A012"))
    assert await press(hall, bus, CALL_012_K3) == [("ticket.called", "A012")]
    await shown(bus, 3, Function.DISPLAY, LCD_K3_BLANK_12)
    await shown(bus, 0x41, Function.TEXT, SCREEN_41_A012)

    # RATE lights the evaluator ("evaluator 0x23 prompt"); "evaluator 0x23, seq 7, rating 5"
    # rates the ticket counter 3 finished last.
    assert await press(hall, bus, key(13, Key.DONE)) == [("ticket.done", "A012")]
    assert await press(hall, bus, key(14, Key.RATE), commits=0) == []
    await shown(bus, 0x23, Function.EVAL_PROMPT, PROMPT_E23)
    assert await press(hall, bus, RATING_5_E23) == [("ticket.rated", "A012")]

    # "keypad 3 LCD: 12 waiting, ticket 7": B007 called at 3 with twelve B tickets waiting.
    for i in range(6):
        await hall.submit(c.TakeTicket(hall.now(), "B", f"t-b{i + 2}"))  # B002..B007
    await hall.submit(c.CallNumber(hall.now(), 3, "007"))
    for i in range(7):
        await hall.submit(c.TakeTicket(hall.now(), "B", f"t-b{i + 8}"))  # B008..B014
    assert current(hall, 3) == "B007"
    assert hall.state.waiting_for_counter(3) == 12
    await shown(bus, 3, Function.DISPLAY, LCD_K3_12_7)


@pytest.mark.service
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_line_examples(hall: Hall, tmp_path: Path, transport: str) -> None:
    await open_all_counters(hall)  # idle open counters: the forecast wait is 0
    async with far_end(transport, tmp_path) as (url, peer, server):
        dispenser = LineDevice(peer)
        async with running(hall, with_ports(dispenser_port(url))) as manager:
            await manager.link("dispenser").wait_for(LinkState.CONNECTED)
            if server is not None:
                await eventually(lambda: server.connections == 1, what="the daemon to connect")
            mark = await last_seq(hall)

            assert await dispenser.request(b"TAKE A #1*48\n") == b"TICKET A001 A 0 0 #1*07\n"
            assert await dispenser.request(b"TAKE B PRIORITY #2\n") == b"TICKET B001 B 0 0 #2\n"
            assert await dispenser.request(b"TAKE Z #3\n") == b"ERR 404 unknown-service #3\n"

            issued = [
                (d["number"], d["service"], d.get("priority", False))
                for kind, d in await queue_events(hall, mark)
                if kind == "ticket.issued"
            ]
            assert issued == [("A001", "A", False), ("B001", "B", True)]
            assert hall.state.tickets["B001"].priority
            assert hall.state.issued.get("Z", 0) == 0

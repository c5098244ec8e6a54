"""The receipt printer with real parts: a network printer emulated on loopback (it answers
DLE EOT), a file printer, a dispenser over socket://, the voice writing WAV files.

The test plays the printer and the dispenser and reads the hall's log and state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from broadcast.service import VoiceHandle
from drivers.devices.dispenser import DispenserPort
from drivers.link import LinkState
from drivers.printer import PrinterHandle
from drivers.printer.connection import DLE_EOT
from hall_daemon import commands as c
from hall_daemon.config import HallConfig, PrinterConfig
from hall_daemon.hall import Hall
from hall_daemon.state import WAITING
from hall_daemon.store import Store
from tests.test_serial_link import (
    CONFIG,
    SPEC,
    LineDevice,
    SocatPair,
    TcpServer,
    dispenser_port,
    eventually,
    hall_clock,
    open_all_counters,
    running,
    with_ports,
)

READY = {1: 0x16, 2: 0x12, 3: 0x12, 4: 0x12}  # online, cover shut, paper present
PAPER_LOW = {**READY, 4: 0x1E}
PAPER_OUT = {1: 0x1E, 2: 0x32, 3: 0x12, 4: 0x72}
NAME_A = "企业开办".encode("gb18030")


class NetPrinter:
    """An ESC/POS printer on TCP port 9100's role: keeps what it is sent, answers DLE EOT n
    with its status byte (after `delay` seconds, as a busy printer does)."""

    def __init__(self) -> None:
        self.port = 0
        self.status = dict(READY)
        self.delay = 0.0
        self.received = bytearray()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        pending = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.received += data
                pending += data
                while (i := pending.find(DLE_EOT)) != -1 and i + 2 < len(pending):
                    n = pending[i + 2]
                    pending = pending[i + 3 :]
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    if n in self.status:
                        writer.write(bytes([self.status[n]]))
                pending = pending[-2:]

    def jobs_with(self, text: bytes) -> int:
        return bytes(self.received).count(text)

    async def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        self._writers.clear()
        await self._server.wait_closed()


def printer_config(**fields: object) -> HallConfig:
    printer = PrinterConfig(profile="default", paper_mm=58, notice="请留意叫号。", **fields)  # type: ignore[arg-type]
    return CONFIG.model_copy(update={"printer": printer})


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Hall]:
    h = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=hall_clock())
    await h.start()
    await open_all_counters(h)
    yield h
    await h.stop()


@contextlib.asynccontextmanager
async def printing(hall: Hall, config: HallConfig) -> AsyncIterator[PrinterHandle]:
    printer = PrinterHandle(hall, config, poll_s=0.2)
    await printer.start()
    try:
        yield printer
    finally:
        await printer.stop()


async def take(hall: Hall, service: str = "A") -> tuple[str, str]:
    token = f"test-token-{service}-{len(hall.state.tickets):04d}-xyz"
    events = await hall.submit(c.TakeTicket(hall.now(), service, token))
    return events[-1].data["number"], token


def printer_state(hall: Hall) -> tuple[str, str] | None:
    return hall.state.devices.get("printer")


async def logged(hall: Hall, kind: str) -> list[str]:
    events = await hall.io(hall.store.events_after, 0)
    return [e.data["detail"] for e in events if e.type == kind and e.data["device"] == "printer"]


@pytest.mark.service
async def test_a_network_printer_prints_reports_paper_and_going_away_and_comes_back(
    hall: Hall, tmp_path: Path
) -> None:
    emulator = NetPrinter()
    await emulator.start()
    config = printer_config(connection="network", host="127.0.0.1", port=emulator.port)
    config = config.model_copy(
        update={"voice": config.voice.model_copy(update={"folder": tmp_path / "voice"})}
    )
    voice = VoiceHandle(hall, config, cache_dir=tmp_path / "cache", prewarm=False)
    await voice.start()
    async with printing(hall, config) as printer:
        printer.on_failed = voice.say_number
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "printer online")

        number, token = await take(hall)
        assert printer.print_ticket(number)
        assert await printer.drain()
        await eventually(lambda: emulator.jobs_with(f"/t/{token}".encode()) == 1, 3, "receipt")
        assert NAME_A in emulator.received and number.encode() in emulator.received
        assert printer.stats()["printed"] == 1

        # The roll is nearly out: still printing, the status page says so.
        emulator.status = dict(PAPER_LOW)
        await eventually(lambda: printer_state(hall) == ("online", "paper-low"), 5, "paper low")

        # Out of paper: a fault; the ticket is issued anyway and its number is said aloud.
        emulator.status = dict(PAPER_OUT)
        await eventually(lambda: printer_state(hall) == ("fault", "paper-out"), 5, "paper out")
        no_paper, no_paper_token = await take(hall)
        printer.print_ticket(no_paper)
        assert await printer.drain()
        assert emulator.jobs_with(no_paper_token.encode()) == 0
        assert hall.state.tickets[no_paper].state == WAITING
        assert await voice.drain()
        said = sorted(p.name for p in (tmp_path / "voice").glob("*.wav"))
        assert any(f"number-{no_paper}" in name for name in said), said

        emulator.status = dict(READY)
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "paper back")

        # The printer goes away: offline fault, the ticket still issued.
        await emulator.kill()
        await eventually(lambda: printer_state(hall) == ("fault", "offline"), 5, "offline")
        gone, gone_token = await take(hall)
        printer.print_ticket(gone)
        assert await printer.drain()
        assert hall.state.tickets[gone].state == WAITING
        assert printer.stats()["failed"] == 2 and printer.stats()["last_fault"] == "offline"

        # It comes back on the same address: online again, and the admin's reprint prints.
        await emulator.start()
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "back online")
        await hall.submit(c.RequestReprint(hall.now(), gone))
        await eventually(lambda: emulator.jobs_with(gone_token.encode()) == 1, 5, "reprint")
        assert printer.stats()["state"] == "online" and printer.stats()["queue"] == 0

    await voice.stop()
    await emulator.kill()
    assert await logged(hall, "device.fault") == ["paper-out", "offline"]
    assert await logged(hall, "device.online") == ["", "paper-low", "", ""]


@pytest.mark.service
async def test_a_dispenser_gets_its_ticket_reply_before_a_slow_printer_has_the_receipt(
    hall: Hall,
) -> None:
    emulator = NetPrinter()
    await emulator.start()
    config = printer_config(connection="network", host="127.0.0.1", port=emulator.port)
    server = TcpServer()
    await server.start()
    dispenser = LineDevice(server.peer)
    async with (
        printing(hall, config) as printer,
        running(hall, with_ports(dispenser_port(server.url))) as ports,
    ):
        device = ports.device("dispenser")
        assert isinstance(device, DispenserPort)
        device.receipts = printer
        await ports.link("dispenser").wait_for(LinkState.CONNECTED)
        await eventually(lambda: server.connections == 1, what="the daemon to connect")
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "printer online")
        emulator.delay = 0.3  # each status answer: a print now takes seconds

        assert await dispenser.request(b"TAKE A #1\n") == b"TICKET A001 A 0 0 #1\n"
        assert b"A001" not in emulator.received  # the reply did not wait for the paper
        # A self-printing dispenser's ticket is never printed by the hall.
        assert await dispenser.request(b"ISSUED A A050 #2\n") == b"OK #2\n"
        await eventually(lambda: b"A001" in emulator.received, 10, "the receipt")
        assert await printer.drain(10)
        token = hall.state.tickets["A001"].token
        assert emulator.jobs_with(token.encode()) == 1
        assert b"A050" not in emulator.received and printer.stats()["printed"] == 1
    await server.kill()
    await emulator.kill()


@pytest.mark.service
async def test_a_dispenser_take_and_checkin_land_in_the_file_printer(
    hall: Hall, tmp_path: Path
) -> None:
    path = tmp_path / "receipts.bin"
    config = printer_config(connection="file", path=path)
    server = TcpServer()
    await server.start()
    dispenser = LineDevice(server.peer)
    start = hall.now()
    await hall.submit(c.UpsertAppointment(start, "AP-77", "B", start, start + timedelta(hours=2)))
    async with (
        printing(hall, config) as printer,
        running(hall, with_ports(dispenser_port(server.url))) as ports,
    ):
        device = ports.device("dispenser")
        assert isinstance(device, DispenserPort)
        device.receipts = printer
        await eventually(lambda: server.connections == 1, what="the daemon to connect")
        assert await dispenser.request(b"TAKE C\n") == b"TICKET C001 C 0 0\n"
        reply = await dispenser.request(b"CHECKIN AP-77\n")
        assert reply.startswith(b"TICKET B001 B ")
        assert await printer.drain()
        data = path.read_bytes()
        for number in ("C001", "B001"):
            token = hall.state.tickets[number].token
            assert f"/t/{token}".encode() in data
        assert "社保医保".encode("gb18030") in data and "不动产登记".encode("gb18030") in data
        assert data.count(b"\x1dV") == 2  # two receipts, two cuts
        # File printers cannot report status: online while writes succeed.
        assert printer_state(hall) == ("online", "")
    await server.kill()


@pytest.mark.service
async def test_a_dispenser_out_of_paper_still_gives_the_ticket_and_the_number_is_said(
    hall: Hall,
) -> None:
    server = TcpServer()
    await server.start()
    dispenser = LineDevice(server.peer)
    said: list[str] = []
    async with running(hall, with_ports(dispenser_port(server.url))) as ports:
        device = ports.device("dispenser")
        assert isinstance(device, DispenserPort)
        device.say_number = said.append
        await eventually(lambda: server.connections == 1, what="the daemon to connect")
        assert await dispenser.request(b"TAKE A\n") == b"TICKET A001 A 0 0\n"
        assert said == []  # it had paper
        assert await dispenser.request(b"PAPER OUT\n") == b"OK\n"
        assert (await dispenser.request(b"TAKE A\n")).startswith(b"TICKET A002 A 1 ")
        assert said == ["A002"]
        await eventually(lambda: hall.state.devices.get("kiosk-1") == ("fault", "paper-out"))
        assert await dispenser.request(b"PAPER OK\n") == b"OK\n"
        assert await dispenser.request(b"TAKE B\n") == b"TICKET B001 B 0 0\n"
        assert said == ["A002"]
    await server.kill()


@pytest.mark.service
async def test_a_serial_printer_over_a_pty_prints_and_reports_its_cover(
    hall: Hall, tmp_path: Path
) -> None:
    socat = SocatPair(tmp_path)
    await socat.start()
    status = dict(READY)
    pending = bytearray()

    def answer(data: bytes) -> None:  # the printer's side of the serial line
        pending.extend(data)
        while (i := pending.find(DLE_EOT)) != -1 and i + 2 < len(pending):
            n = pending[i + 2]
            del pending[: i + 3]
            socat.peer.write(bytes([status[n]]))
        del pending[:-2]

    socat.peer.listeners.append(answer)
    config = printer_config(connection="serial", url=socat.url, baud=19200)
    async with printing(hall, config) as printer:
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "printer online")
        number, token = await take(hall, "C")
        printer.print_ticket(number)
        assert await printer.drain()
        assert token.encode() in socat.peer.received and number.encode() in socat.peer.received
        assert "社保医保".encode("gb18030") in socat.peer.received
        status[2] = 0x16  # the cover is opened
        await eventually(lambda: printer_state(hall) == ("fault", "cover-open"), 5, "cover")
        status[2] = 0x12
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "cover shut")
    await socat.kill()


@pytest.mark.service
async def test_a_stuck_printer_fills_a_bounded_queue_and_later_receipts_fail_at_once(
    hall: Hall,
) -> None:
    emulator = NetPrinter()
    await emulator.start()
    config = printer_config(connection="network", host="127.0.0.1", port=emulator.port)
    printer = PrinterHandle(hall, config, poll_s=0.2, queue_size=2)
    failed: list[str] = []
    printer.on_failed = failed.append
    await printer.start()
    try:
        await eventually(lambda: printer_state(hall) == ("online", ""), 5, "printer online")
        emulator.delay = 0.1  # every status answer: the printer is slow
        numbers = [(await take(hall))[0] for _ in range(6)]
        for number in numbers:
            printer.print_ticket(number)
        # At most one printing and two waiting: the other three fail now, not later.
        assert printer.stats()["dropped"] >= 3 and printer.stats()["queue"] <= 2
        assert await printer.drain(20)
        assert len(failed) == printer.stats()["dropped"] and set(failed) <= set(numbers)
        assert printer.stats()["printed"] == 6 - len(failed)
        assert all(hall.state.tickets[n].state == WAITING for n in numbers)
    finally:
        await printer.stop()
        await emulator.kill()

"""Serial ports end to end: a real hall, real sockets and socat ptys, the contract's bytes.

The test plays the devices: a dispenser behind a TCP server (the daemon connects to it as to
a ser2net serial server, `socket://`), and the counter bus at the far end of a socat pty
pair (the daemon opens one end as it would /dev/ttyUSB0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers import bus68
from drivers.bus68 import HOST_FUNCTIONS, Bus68Decoder, Frame, Function, Key, KeyPress
from drivers.devices import counter_view
from drivers.devices.coalesce import Coalescer
from drivers.devices.counter_bus import CounterBus
from drivers.devices.keypad import PromptEvaluator, Unusable, key_action
from drivers.link import LinkState, SerialLink, Write
from drivers.ports import PortManager, start_ports
from hall_daemon import commands as c
from hall_daemon.backoff import Backoff
from hall_daemon.config import DeviceConfig, HallConfig, PortConfig, load_config
from hall_daemon.hall import Hall
from hall_daemon.model import CounterSpec
from hall_daemon.store import Store

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(REPO / "config.yaml")
SPEC = CONFIG.to_spec()
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

# The contract's examples (serial-protocols.md §1 and §2), byte for byte.
NEXT_K3 = bytes.fromhex("FF 68 04 04 68 03 01 01 0C 11 16")
CALL_012_K3 = bytes.fromhex("FF 68 07 07 68 03 01 04 00 01 02 10 1B 16")
RATING_5_E23 = bytes.fromhex("FF 68 04 04 68 23 11 07 05 40 16")
BEEP_K3 = bytes.fromhex("FF 68 02 02 68 03 03 06 16")
PROMPT_E23 = bytes.fromhex("FF 68 02 02 68 23 04 27 16")
SCREEN_41_A012 = bytes.fromhex(
    "FF 68 13 13 68 41 05 00 41 30 31 32 20 C7 EB B5 BD 33 BA C5 B4 B0 BF DA 0D 16"
)
LCD_K3_12_7 = bytes.fromhex("FF 68 08 08 68 03 02 00 01 02 00 00 07 0F 16")
LCD_K3_BLANK_12 = bytes.fromhex("FF 68 08 08 68 03 02 0A 0A 0A 00 01 02 26 16")


def fast_backoff() -> Backoff:
    return Backoff(first=0.1, cap=0.4)


def hall_clock() -> Callable[[], datetime]:
    """Hall time runs with the test from a fixed weekday morning: no day change mid-test."""
    started = time.monotonic()
    return lambda: T0 + timedelta(seconds=time.monotonic() - started)


def dispenser_port(url: str) -> PortConfig:
    return PortConfig(
        name="dispenser",
        url=url,
        protocol="line",
        devices=(DeviceConfig(kind="dispenser", id="kiosk-1"),),
    )


def bus_port(url: str) -> PortConfig:
    demo = next(p for p in CONFIG.ports if p.protocol == "bus68")
    return demo.model_copy(update={"url": url})


def with_ports(*ports: PortConfig) -> HallConfig:
    return CONFIG.model_copy(update={"ports": ports})


async def eventually(check: Callable[[], bool], timeout: float = 3.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Hall]:
    h = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=hall_clock())
    await h.start()
    yield h
    await h.stop()


@contextlib.asynccontextmanager
async def running(hall: Hall, config: HallConfig) -> AsyncIterator[PortManager]:
    manager = await start_ports(hall, config, backoff=fast_backoff)
    try:
        yield manager
    finally:
        await manager.stop()


async def open_all_counters(hall: Hall) -> None:
    """An idle open counter for every service: a new ticket's forecast wait is then 0."""
    for counter in SPEC.counters:
        await hall.submit(c.OpenCounter(hall.now(), counter.id))


# -- the far ends of the ports ---------------------------------------------------------------


class Peer:
    """The device side of a port: everything the daemon sent, and a way to answer."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.listeners: list[Callable[[bytes], None]] = []
        self._write: Write | None = None

    def attach(self, write: Write | None) -> None:
        self._write = write

    def write(self, data: bytes) -> None:
        assert self._write is not None, "the port's far end is not open"
        self._write(data)

    def feed(self, data: bytes) -> None:
        self.received += data
        for listener in self.listeners:
            listener(data)


class TcpServer:
    """A serial server (ser2net, 串口服务器) in raw TCP mode, with the device behind it."""

    def __init__(self) -> None:
        self.peer = Peer()
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._clients: list[tuple[asyncio.StreamWriter, asyncio.Task[None]]] = []

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.peer.attach(writer.write)
        task = asyncio.current_task()
        assert task is not None
        self._clients.append((writer, task))
        while data := await reader.read(4096):
            self.peer.feed(data)

    async def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer, _ in self._clients:
            writer.close()  # the daemon sees EOF, as when a serial server restarts
        await asyncio.gather(*(t for _, t in self._clients), return_exceptions=True)
        self._clients.clear()
        self.peer.attach(None)
        await self._server.wait_closed()


class SocatPair:
    """`socat pty,link=a pty,link=b`: the daemon opens a, the test is the bus at b."""

    def __init__(self, folder: Path) -> None:
        self.a = folder / "a"
        self.b = folder / "b"
        self.log = folder / "socat.log"
        self.peer = Peer()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None

    @property
    def url(self) -> str:
        return str(self.a)

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    "socat",
                    "-d",
                    "-d",
                    f"pty,raw,echo=0,link={self.a}",
                    f"pty,raw,echo=0,link={self.b}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        await eventually(lambda: self.a.exists() and self.b.exists(), 5.0, "socat's ptys")
        # Open our end before the daemon opens its own, so socat always has a reader here.
        fd = os.open(self.b, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        self.peer.attach(self._write)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        os.write(self._fd, data)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.peer.feed(data)
        else:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self.peer.attach(None)

    async def kill(self) -> None:
        self._close()
        if self._proc is not None:
            self._proc.terminate()
            await asyncio.to_thread(self._proc.wait, 5)
            self._proc = None


class LineDevice:
    """A dispenser: sends lines, reads the replies (STATUS pushes kept aside)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self._taken = 0

    def lines(self) -> list[bytes]:
        return [line + b"\n" for line in bytes(self.peer.received).split(b"\n")[:-1]]

    def replies(self) -> list[bytes]:
        return [line for line in self.lines() if not line.startswith(b"STATUS ")]

    def statuses(self) -> list[bytes]:
        return [line for line in self.lines() if line.startswith(b"STATUS ")]

    async def request(self, line: bytes) -> bytes:
        self.peer.write(line)
        return await self.reply()

    async def reply(self) -> bytes:
        await eventually(lambda: len(self.replies()) > self._taken, 3.0, "a reply")
        self._taken += 1
        return self.replies()[self._taken - 1]

    async def no_reply(self, line: bytes, within: float = 0.3) -> None:
        self.peer.write(line)
        await asyncio.sleep(within)
        assert self.replies()[self._taken :] == []


class BusDevices:
    """Every device on the counter bus at once: echoes host frames, watches for acks."""

    def __init__(self, peer: Peer, silent: frozenset[int] = frozenset()) -> None:
        self.peer = peer
        self.silent = silent  # addresses with no device behind them
        self.decoder = Bus68Decoder()
        self.host_frames: list[Frame] = []
        self.acks: list[tuple[float, Frame]] = []
        peer.listeners.append(self._heard)

    def _heard(self, data: bytes) -> None:
        now = time.monotonic()
        for frame in self.decoder.feed(data):
            if frame.function in HOST_FUNCTIONS:
                self.host_frames.append(frame)
                if frame.address not in self.silent:
                    self.peer.write(bus68.encode(frame))
            else:
                self.acks.append((now, frame))

    async def press(self, raw: bytes) -> float:
        """Send a device frame; return how long its ack took."""
        frame = Bus68Decoder().feed(raw)[0]
        sent = time.monotonic()
        self.peer.write(raw)

        def acked() -> float | None:
            for when, ack in self.acks:
                if when >= sent and ack == frame:
                    return when - sent
            return None

        await eventually(lambda: acked() is not None, 2.0, f"the ack of {raw.hex(' ')}")
        latency = acked()
        assert latency is not None
        return latency

    def sent_to(self, address: int, function: int) -> list[bytes]:
        return [
            bus68.encode(f)
            for f in self.host_frames
            if f.address == address and f.function == function
        ]

    async def shown(self, address: int, function: int, raw: bytes) -> None:
        def latest() -> bytes | None:
            frames = self.sent_to(address, function)
            return frames[-1] if frames else None

        await eventually(lambda: latest() == raw, 3.0, f"{raw.hex(' ')} (last {latest()!r})")


def device_stats(manager: PortManager, port: str, device_id: str) -> dict[str, object]:
    stats = manager.device(port).stats()
    devices = stats["devices"]
    assert isinstance(devices, list)
    return next(d for d in devices if d["id"] == device_id)


# -- dispenser over socket:// ------------------------------------------------------------------


@pytest.mark.service
async def test_dispenser_over_a_socket(hall: Hall) -> None:
    server = TcpServer()
    await server.start()
    await open_all_counters(hall)
    dispenser = LineDevice(server.peer)
    async with running(hall, with_ports(dispenser_port(server.url))) as manager:
        await manager.link("dispenser").wait_for(LinkState.CONNECTED)
        await eventually(lambda: server.connections == 1, what="the daemon to connect")

        assert await dispenser.request(b"TAKE A #1*48\n") == b"TICKET A001 A 0 0 #1*07\n"
        a001 = hall.state.tickets["A001"]
        assert (a001.service, a001.channel, a001.priority) == ("A", "dispenser", False)
        assert await dispenser.request(b"TAKE B PRIORITY #2\n") == b"TICKET B001 B 0 0 #2\n"
        assert hall.state.tickets["B001"].priority
        assert await dispenser.request(b"TAKE Z #3\n") == b"ERR 404 unknown-service #3\n"

        # A retry after a lost reply: the same answer, one ticket.
        first = await dispenser.request(b"TAKE C #7\n")
        assert first == b"TICKET C001 C 0 0 #7\n"
        assert await dispenser.request(b"TAKE C #7\n") == first
        assert hall.state.issued["C"] == 1 and "C002" not in hall.state.tickets

        # A wrong checksum: dropped, counted, never answered; the next line is.
        await dispenser.no_reply(b"PING*00\n")
        assert await dispenser.request(b"PING\n") == b"PONG\n"
        assert await dispenser.request(b"PING*10\n") == b"PONG*16\n"
        stats = manager.device("dispenser").stats()
        assert stats["bad_checksum"] == 1
        assert device_stats(manager, "dispenser", "kiosk-1")["frames_bad"] == 1

        assert await dispenser.request(b"TAKE\n") == b"ERR 400 wrong-arity\n"
        assert await dispenser.request(b"ISSUED A A050 #9\n") == b"OK #9\n"
        assert hall.state.tickets["A050"].channel == "dispenser"
        assert await dispenser.request(b"ISSUED A A050\n") == b"ERR 409 duplicate-number\n"

        assert await dispenser.request(b"HELLO kiosk-1 dispenser 1.2.0\n") == b"OK\n"
        await eventually(lambda: hall.state.devices.get("kiosk-1") == ("online", ""))
        assert await dispenser.request(b"PAPER OUT\n") == b"OK\n"
        await eventually(lambda: hall.state.devices.get("kiosk-1") == ("fault", "paper-out"))

        # A ticket taken on a phone, printed at the dispenser by its code: no new ticket.
        await hall.submit(c.TakeTicket(hall.now(), "B", "remote-code-1", channel="remote"))
        reply = await dispenser.request(b"CHECKIN remote-code-1 #12\n")
        assert re.fullmatch(rb"TICKET B002 B 1 \d+ #12\n", reply), reply
        assert hall.state.issued["B"] == 2
        # A code that does not exist and one booked for tomorrow: one answer, so that a miss
        # tells a guesser nothing.
        tomorrow = hall.now() + timedelta(days=1)
        await hall.submit(
            c.UpsertAppointment(
                hall.now(), "TOMORROW", "B", tomorrow, tomorrow + timedelta(hours=1)
            )
        )
        for code in (b"nosuchcode", b"TOMORROW"):
            reply = await dispenser.request(b"CHECKIN " + code + b"\n")
            assert reply == b"ERR 404 no-appointment-now\n", reply

        # The queue's state is pushed, and its latest value is what the dispenser holds.
        waiting_a = hall.state.waiting("A")
        await eventually(
            lambda: any(s.startswith(b"STATUS A %d " % waiting_a) for s in dispenser.statuses()),
            what="a STATUS push for A",
        )
    await server.kill()


# -- counter bus over a socat pty --------------------------------------------------------------


@pytest.mark.service
async def test_counter_bus_over_a_pty(hall: Hall, tmp_path: Path) -> None:
    socat = SocatPair(tmp_path)
    await socat.start()
    # 0x46, counter 6's window screen, is configured but has nothing behind it.
    bus = BusDevices(socat.peer, silent=frozenset({0x46}))
    try:
        async with running(hall, with_ports(bus_port(socat.url))) as manager:
            await manager.link("counter-bus").wait_for(LinkState.CONNECTED)
            await _counter_bus_story(hall, manager, bus)
    finally:
        await socat.kill()


async def _counter_bus_story(hall: Hall, manager: PortManager, bus: BusDevices) -> None:
    port = manager.device("counter-bus")
    assert isinstance(port, CounterBus)

    # Counter 3's queue goes from empty to one: its keypad beeps.
    await hall.submit(c.TakeTicket(hall.now(), "B", "t-b1"))
    await eventually(lambda: BEEP_K3 in bus.sent_to(3, Function.BEEP), what="the beep")
    await hall.submit(c.TakeTicket(hall.now(), "A", "t-a1"))
    await hall.submit(c.TakeTicket(hall.now(), "A", "t-a2"))

    # NEXT: echoed byte for byte within 100 ms, then counter 3 calls its first service's ticket.
    assert await bus.press(NEXT_K3) < 0.1
    assert NEXT_K3 in socat_bytes(bus)
    await eventually(lambda: hall.state.counters[3].current == "B001", what="B001 called")
    # LCD: 2 waiting (A001, A002), ticket 1.
    await bus.shown(
        3, Function.DISPLAY, bytes.fromhex("FF 68 08 08 68 03 02 00 00 02 00 00 01 08 16")
    )

    # The keypad did not see the ack and sends the same frame again, 300 ms later.
    await asyncio.sleep(0.3)
    assert await bus.press(NEXT_K3) < 0.1
    await asyncio.sleep(0.2)
    assert hall.state.counters[3].current == "B001"
    assert hall.state.waiting("A") == 2
    assert device_stats(manager, "counter-bus", "counter-bus:3")["retransmissions"] == 1

    # CALL 012 (the contract's example) calls A012 and the window screen says so.
    await hall.submit(c.TakeTicket(hall.now(), "A", "t-a12", number="A012"))
    assert await bus.press(CALL_012_K3) < 0.1
    await eventually(lambda: hall.state.counters[3].current == "A012", what="A012 called")
    await bus.shown(
        3, Function.DISPLAY, bytes.fromhex("FF 68 08 08 68 03 02 00 00 02 00 01 02 0A 16")
    )
    screen_43 = SCREEN_41_A012[:5] + b"\x43" + SCREEN_41_A012[6:-2] + b"\x0f\x16"
    await bus.shown(0x43, Function.TEXT, screen_43)

    # RATE lights counter 3's evaluator; its rating rates the ticket finished last (B001).
    assert await bus.press(bus68.encode(Frame(3, Function.KEY, bytes([5, Key.RATE])))) < 0.1
    await eventually(lambda: PROMPT_E23 in bus.sent_to(0x23, Function.EVAL_PROMPT))
    assert await bus.press(RATING_5_E23) < 0.1
    await eventually(lambda: hall.state.tickets["B001"].rated, what="B001 rated")

    # Garbage between frames is skipped and counted; a frame with a bad checksum is not acked.
    skipped = port.decoder.stats.bytes_skipped
    bad = port.decoder.stats.frames_bad
    done_k3 = bus68.encode(Frame(3, Function.KEY, bytes([6, Key.DONE])))
    next_k1 = bus68.encode(Frame(1, Function.KEY, bytes([1, Key.NEXT])))
    corrupt = bytearray(bus68.encode(Frame(2, Function.KEY, bytes([1, Key.NEXT]))))
    corrupt[-2] ^= 0x55
    acks_before = len(bus.acks)
    bus.peer.write(b"\x00\x13\x37zz" + bytes(corrupt) + done_k3 + b"hello" + next_k1)
    await eventually(lambda: len(bus.acks) >= acks_before + 2, what="two acks")
    await asyncio.sleep(0.1)
    assert [ack for _, ack in bus.acks[acks_before:]] == [
        Bus68Decoder().feed(done_k3)[0],
        Bus68Decoder().feed(next_k1)[0],
    ]
    # The bad frame's bytes after its FF 68 are skipped too: a good frame could start there.
    garbage = len(b"\x00\x13\x37zz") + len(b"hello") + len(corrupt) - 2
    assert port.decoder.stats.bytes_skipped - skipped == garbage
    assert port.decoder.stats.frames_bad - bad == 1
    await eventually(lambda: hall.state.counters[3].current is None, what="A012 done")
    await eventually(lambda: hall.state.counters[1].current == "A001", what="A001 called at 1")
    await bus.shown(
        3, Function.DISPLAY, bytes.fromhex("FF 68 08 08 68 03 02 00 00 01 0A 0A 0A 24 16")
    )
    await bus.shown(0x43, Function.TEXT, bus68.encode(bus68.text(0x43, 0, "3号窗口 欢迎光临")))

    # The silent screen was tried three times, then marked unresponsive and offline.
    await eventually(
        lambda: hall.state.devices.get("counter-bus:70") == ("offline", "no-echo"),
        what="0x46 offline",
    )
    assert len(bus.sent_to(0x46, Function.TEXT)) == 3
    screen_46 = device_stats(manager, "counter-bus", "counter-bus:70")
    assert screen_46["unresponsive"] == 1 and screen_46["responsive"] is False
    assert hall.state.devices.get("counter-bus:3") == ("online", "")

    # Someone plugs the screen in; the next probe finds it and it shows the idle text.
    bus.silent = frozenset()
    port.probe()
    idle_6 = bus68.encode(bus68.text(0x46, 0, "6号窗口 欢迎光临"))
    await bus.shown(0x46, Function.TEXT, idle_6)
    await eventually(lambda: hall.state.devices.get("counter-bus:70") == ("online", ""))
    assert device_stats(manager, "counter-bus", "counter-bus:70")["responsive"] is True


def socat_bytes(bus: BusDevices) -> bytes:
    return bytes(bus.peer.received)


# -- reconnection ------------------------------------------------------------------------------


@pytest.mark.service
async def test_ports_reconnect_by_themselves_and_alone(hall: Hall, tmp_path: Path) -> None:
    server = TcpServer()
    await server.start()
    socat = SocatPair(tmp_path)
    await socat.start()
    dispenser = LineDevice(server.peer)
    bus = BusDevices(socat.peer)
    config = with_ports(dispenser_port(server.url), bus_port(socat.url))
    try:
        async with running(hall, config) as manager:
            line_link = manager.link("dispenser")
            bus_link = manager.link("counter-bus")
            await line_link.wait_for(LinkState.CONNECTED)
            await bus_link.wait_for(LinkState.CONNECTED)
            await eventually(lambda: server.connections == 1)
            assert await dispenser.request(b"PING\n") == b"PONG\n"

            # The serial server goes away: the dispenser's link backs off, the bus carries on.
            mark = len(line_link.history)
            await server.kill()
            await eventually(lambda: line_link.state is LinkState.BACKOFF, what="backoff")
            assert await bus.press(NEXT_K3) < 0.1
            await asyncio.sleep(0.5)  # a few failed reconnects while the server is down
            await server.start()
            await line_link.wait_for(LinkState.CONNECTED)
            states = [s for _, s in list(line_link.history)[mark:]]
            assert states[0] is LinkState.BACKOFF and states[-1] is LinkState.CONNECTED
            await eventually(lambda: server.connections == 2, what="a new connection")
            # The wait (last figure) is the forecaster's: not this test's business.
            reply = await dispenser.request(b"TAKE A #11\n")
            assert re.fullmatch(rb"TICKET A001 A 0 \d+ #11\n", reply), reply

            # socat dies: now the bus link backs off and the dispenser carries on.
            mark = len(bus_link.history)
            await socat.kill()
            await eventually(lambda: bus_link.state is LinkState.BACKOFF, what="bus backoff")
            assert await dispenser.request(b"PING\n") == b"PONG\n"
            await socat.start()
            await bus_link.wait_for(LinkState.CONNECTED)
            states = [s for _, s in list(bus_link.history)[mark:]]
            assert states[0] is LinkState.BACKOFF and states[-1] is LinkState.CONNECTED
            next_k3_seq2 = bus68.encode(Frame(3, Function.KEY, bytes([2, Key.NEXT])))
            assert await bus.press(next_k3_seq2) < 0.1
            await eventually(lambda: hall.state.counters[3].current == "A001", what="A001")
            await bus.shown(
                3, Function.DISPLAY, bytes.fromhex("FF 68 08 08 68 03 02 0A 0A 0A 00 00 01 24 16")
            )
            assert line_link.stats.failures >= 2 and bus_link.stats.failures >= 1
    finally:
        await socat.kill()
        with contextlib.suppress(AssertionError):
            await server.kill()


# -- the link-up race -------------------------------------------------------------------------


class EagerDispenser:
    """A serial server whose dispenser sends a TAKE the moment the daemon connects (the
    button was pressed while the link was down), reads the reply, then drops the link."""

    def __init__(self) -> None:
        self.port = 0
        self.replies: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._taken = 0

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._taken += 1
        writer.write(b"TAKE A #%d\n" % self._taken)
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(2.0):
                while True:
                    line = await reader.readline()
                    if not line or not line.startswith(b"STATUS "):
                        break
                self.replies.append(line)
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.mark.service
async def test_a_take_sent_as_the_link_comes_up_is_answered_every_time(hall: Hall) -> None:
    device = EagerDispenser()
    await device.start()
    links = 30
    manager = await start_ports(
        hall, with_ports(dispenser_port(device.url)), backoff=lambda: Backoff(0.01, 0.02)
    )
    try:
        await eventually(lambda: len(device.replies) >= links, 20.0, f"{links} link-ups")
    finally:
        await manager.stop()
        await device.stop()
    for n, reply in enumerate(device.replies[:links], start=1):
        assert re.fullmatch(rb"TICKET A%03d A \d+ \d+ #%d\n" % (n, n), reply), (n, reply)


@pytest.mark.service
async def test_a_take_waiting_in_a_pty_before_the_port_opens_is_answered(
    hall: Hall, tmp_path: Path
) -> None:
    socat = SocatPair(tmp_path)
    await socat.start()
    dispenser = LineDevice(socat.peer)
    try:
        socat.peer.write(b"TAKE A #5\n")  # pressed before the daemon opened its end
        async with running(hall, with_ports(dispenser_port(socat.url))):
            reply = await dispenser.reply()
            assert re.fullmatch(rb"TICKET A001 A \d+ \d+ #5\n", reply), reply
    finally:
        await socat.kill()


# -- the link alone --------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.write: Write | None = None
        self.data = bytearray()
        self.made = 0
        self.lost: list[Exception | None] = []

    def connection_made(self, write: Write) -> None:
        self.write = write
        self.made += 1

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


@pytest.mark.unit
async def test_a_link_writes_and_reads_through_pyserial() -> None:
    protocol = Recorder()
    link = SerialLink("loop", "loop://", protocol)
    link.start()
    await link.wait_for(LinkState.CONNECTED)
    assert protocol.write is not None
    protocol.write(b"hello ")
    protocol.write(b"world")
    await eventually(lambda: bytes(protocol.data) == b"hello world")
    await link.stop()
    assert link.state is LinkState.STOPPED
    assert protocol.lost == [None]
    assert link.snapshot()["bytes_in"] == link.snapshot()["bytes_out"] == 11


@pytest.mark.unit
async def test_a_port_that_will_not_open_is_retried_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0

    def opener(url: str, baudrate: int) -> object:
        nonlocal attempts
        attempts += 1
        raise OSError(2, "No such file or directory")

    link = SerialLink(
        "ghost",
        "/dev/nonexistent",
        Recorder(),
        backoff=Backoff(0.02, 0.05),
        opener=opener,  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.INFO, logger="drivers.link"):
        link.start()
        await eventually(lambda: attempts >= 5, what="five attempts")
        assert link.state in (LinkState.BACKOFF, LinkState.CONNECTING)
        await link.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot open" in warnings[0].getMessage()
    assert link.state is LinkState.STOPPED


@pytest.mark.unit
def test_a_link_retries_after_half_a_second_doubling_to_30_s_with_jitter() -> None:
    backoff = SerialLink("p", "loop://", Recorder()).backoff
    ceilings, delays = [], []
    for _ in range(9):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))
    backoff.reset()
    assert backoff.ceiling() == 0.5


# -- pure rules ------------------------------------------------------------------------------


def press(raw: bytes) -> KeyPress:
    message = bus68.parse(Bus68Decoder().feed(raw)[0])
    assert isinstance(message, KeyPress)
    return message


@pytest.mark.unit
def test_the_key_table() -> None:
    numbers = {s.number: s.code for s in SPEC.services}
    examples = {
        NEXT_K3: c.CallNext(T0, 3),
        bytes.fromhex("FF 68 05 05 68 03 01 02 06 0F 1B 16"): c.NoShow(T0, 3),
        bytes.fromhex("FF 68 05 05 68 03 01 03 02 13 1C 16"): c.Transfer(T0, 3, "B"),
        CALL_012_K3: c.CallNumber(T0, 3, "012"),
    }
    for raw, command in examples.items():
        assert key_action(press(raw), 3, T0, numbers) == command

    def key(k: Key, digits: str = "") -> KeyPress:
        return KeyPress(3, 9, digits, k)

    assert key_action(key(Key.RECALL), 3, T0, numbers) == c.Recall(T0, 3)
    assert key_action(key(Key.RATE), 3, T0, numbers) == PromptEvaluator(3)
    assert key_action(key(Key.DONE), 3, T0, numbers) == c.Done(T0, 3)
    assert key_action(key(Key.PAUSE), 3, T0, numbers) == c.TogglePause(T0, 3)
    assert key_action(key(Key.CONFIRM, "0"), 3, T0, numbers) == c.Suspend(T0, 3)
    assert key_action(key(Key.CONFIRM, "3"), 3, T0, numbers) == c.Resume(T0, 3)
    assert key_action(key(Key.TRANSFER, "3"), 3, T0, numbers) == c.Transfer(T0, 3, "C")
    for bad in (
        key(Key.NEXT, "1"),
        key(Key.CALL),
        key(Key.CONFIRM, "5"),
        key(Key.TRANSFER, "9"),
        key(Key.TRANSFER, "002"),
    ):
        assert isinstance(key_action(bad, 3, T0, numbers), Unusable)


@pytest.mark.unit
def test_what_a_counters_devices_show() -> None:
    from hall_daemon.engine import Engine

    engine = Engine(SPEC)
    for i in range(1, 13):
        engine.execute(c.TakeTicket(T0, "A", f"t{i}"))
    engine.execute(c.TakeTicket(T0, "B", "tb"))
    state = engine.state
    assert bus68.encode(counter_view.lcd(3, state, 1)) == bytes.fromhex(
        "FF 68 08 08 68 03 02 00 01 02 0A 0A 0A 26 16"
    )
    engine.execute(c.CallNumber(T0, 3, "A012"))
    # The contract's example puts counter 3's text on the screen at 0x41.
    assert bus68.encode(counter_view.screen(0x41, SPEC.counters[2], state)) == SCREEN_41_A012
    assert (
        counter_view.screen_text(CounterSpec(1, "综合受理", ("A",)), state) == "综合受理 欢迎光临"
    )
    assert counter_view.window_label(CounterSpec(1, "综合受理", ("A",))) == "1号窗口"
    # The contract's LCD examples come from the same builder.
    assert bus68.encode(bus68.display(3, 12, 7)) == LCD_K3_12_7
    assert (
        bus68.encode(bus68.display(3, None, counter_view.ticket_digits("A012"))) == LCD_K3_BLANK_12
    )


@pytest.mark.unit
async def test_status_pushes_are_coalesced_to_one_a_second_the_last_value_last() -> None:
    sent: list[tuple[str, int]] = []
    coalescer = Coalescer[str, int](lambda k, v: sent.append((k, v)), interval=0.1)
    coalescer.offer("A", 1)
    coalescer.offer("A", 2)
    coalescer.offer("A", 3)
    coalescer.offer("B", 1)
    coalescer.offer("B", 1)
    assert sent == [("A", 1), ("B", 1)]
    await asyncio.sleep(0.15)
    assert sent == [("A", 1), ("B", 1), ("A", 3)]
    coalescer.offer("A", 3)  # unchanged: nothing to say
    await asyncio.sleep(0.15)
    assert sent[-1] == ("A", 3) and len(sent) == 3
    coalescer.close()

"""The serial ports under abuse, end to end: garbage, floods, unplugging, retransmissions.

Real bytes on real ports (socat pty pairs, socket://) into a real hall on sqlite; the test
plays the devices and reads the hall's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers import bus68
from drivers.bus68 import Bus68Decoder, Frame, Function, Key
from drivers.devices.counter_bus import CounterBus
from drivers.link import LinkState
from drivers.ports import start_ports
from hall_daemon import commands as c
from hall_daemon.backoff import Backoff
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from tests.test_serial_link import (
    NEXT_K3,
    SPEC,
    BusDevices,
    LineDevice,
    SocatPair,
    TcpServer,
    bus_port,
    device_stats,
    dispenser_port,
    eventually,
    hall_clock,
    running,
    with_ports,
)

T = TypeVar("T")
FIRST_SERVICE = {counter.id: counter.services[0] for counter in SPEC.counters}
KEYPADS = sorted(FIRST_SERVICE)  # the demo bus: keypad n is at address n, counter n


@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Hall]:
    h = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=hall_clock())
    await h.start()
    for counter in SPEC.counters:
        await h.submit(c.OpenCounter(h.now(), counter.id))
    yield h
    await h.stop()


def next_key(address: int, seq: int) -> bytes:
    return bus68.encode(Frame(address, Function.KEY, bytes([seq, Key.NEXT])))


async def calls_after(hall: Hall, seq: int) -> list[tuple[int, str]]:
    """(counter, ticket) of every ticket.called the log holds after `seq`."""
    events = await hall.io(hall.store.events_after, seq)
    return [(e.data["counter"], e.data["number"]) for e in events if e.type == "ticket.called"]


async def stock(hall: Hall, per_service: int) -> None:
    """Keep enough tickets waiting that every NEXT calls one."""
    for service in sorted(set(FIRST_SERVICE.values())):
        while hall.state.waiting(service) < per_service:
            await hall.submit(c.TakeTicket(hall.now(), service, os.urandom(8).hex()))


class Errors(logging.Handler):
    """Anything logged at ERROR or above (a logged exception is one that escaped a handler)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def errors_logged() -> Any:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


async def pour(fd: int, data: bytes, chunk: int = 4096) -> None:
    """Write everything to a non-blocking fd, waiting while the pty's buffer is full."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view[:chunk])
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        view = view[n:]
        if n < chunk:
            await asyncio.sleep(0)


# -- resync ------------------------------------------------------------------------------------


class LoopThread:
    """An event loop in a thread, so hypothesis (synchronous) can drive one long-lived hall."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class ResyncRig:
    """One hall, one counter bus over socat; the devices never echo, so the daemon's decoder
    sees exactly the bytes the test writes and its statistics can be checked to the byte."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.next_press = 0

    async def start(self) -> None:
        self.hall = Hall(SPEC, Store(Store.sqlite_url(self.folder / "hall.db")), clock=hall_clock())
        await self.hall.start()
        self.socat = SocatPair(self.folder)
        await self.socat.start()
        self.bus = BusDevices(self.socat.peer, silent=frozenset(range(256)))
        config = with_ports(bus_port(self.socat.url))
        self.manager = await start_ports(self.hall, config, backoff=lambda: Backoff(0.1, 0.4))
        await self.manager.link("counter-bus").wait_for(LinkState.CONNECTED)
        port = self.manager.device("counter-bus")
        assert isinstance(port, CounterBus)
        self.port = port

    async def stop(self) -> None:
        await self.manager.stop()
        await self.socat.kill()
        await self.hall.stop()

    def presses(self, n: int) -> list[bytes]:
        """n NEXT frames, each with an (address, seq) not used in the last 5 s."""
        frames = []
        for _ in range(n):
            k = self.next_press
            self.next_press += 1
            frames.append(next_key(KEYPADS[k % len(KEYPADS)], (k // len(KEYPADS)) % 256))
        return frames

    @staticmethod
    def stream(garbage: list[bytes], frames: list[bytes]) -> tuple[bytes, Bus68Decoder]:
        """The bytes to write, and the pure decoder's reading of them (the expected stats)."""
        stream = b"".join(g + f for g, f in zip(garbage, frames, strict=False))
        stream += b"".join(garbage[len(frames) :])
        # A false start (68 L L 68) in the garbage waits for its L bytes: zeros settle it.
        stream += bytes(bus68.MAX_FRAME)
        reference = Bus68Decoder()
        assume([bus68.encode(f) for f in reference.feed(stream)] == frames)
        return stream, reference

    async def example(self, stream: bytes, reference: Bus68Decoder, frames: list[bytes]) -> None:
        hall, port = self.hall, self.port
        await stock(hall, len(frames) + 2)
        mark = await hall.io(hall.store.last_seq)
        acks_before = len(self.bus.acks)
        before = port.decoder.stats
        bad, skipped = before.frames_bad, before.bytes_skipped
        assert self.socat._fd is not None
        await pour(self.socat._fd, stream, chunk=97)

        wanted = [Bus68Decoder().feed(f)[0] for f in frames]
        await eventually(lambda: len(self.bus.acks) - acks_before >= len(frames), 5.0, "acks")
        await eventually(lambda: port._jobs.empty(), 5.0, "the port's jobs")
        want = Counter(bus68.Bus68Decoder().feed(f)[0].address for f in frames)
        deadline = time.monotonic() + 5.0
        while Counter(k for k, _ in await calls_after(hall, mark)) != want:
            assert time.monotonic() < deadline, (await calls_after(hall, mark), want)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        assert [a for _, a in self.bus.acks[acks_before:]] == wanted
        assert Counter(k for k, _ in await calls_after(hall, mark)) == want
        assert port.decoder.stats.frames_bad - bad == reference.stats.frames_bad
        assert port.decoder.stats.bytes_skipped - skipped == reference.stats.bytes_skipped
        assert port.decoder.buffered == 0


def _broken(address: int, seq: int, at: int, xor: int, cut: bool) -> bytes:
    """A keypad frame cut short or with one byte changed (never its FF, which is optional)."""
    raw = bytearray(next_key(address, seq))
    at = 1 + at % (len(raw) - 1)
    if cut:
        return bytes(raw[:at])
    raw[at] ^= xor
    return bytes(raw)


no_68 = st.binary(max_size=120).map(lambda b: b.replace(b"\x68", b""))
broken = st.builds(
    _broken,
    st.sampled_from(KEYPADS),
    st.integers(0, 255),
    st.integers(0, 20),
    st.integers(1, 255),
    st.booleans(),
)
noise = st.one_of(no_68, st.binary(max_size=120), broken)


@pytest.mark.service
def test_garbage_between_frames_never_loses_or_doubles_a_press(tmp_path: Path) -> None:
    loop = LoopThread()
    rig = ResyncRig(tmp_path)
    with errors_logged() as errors:
        loop.run(rig.start())
        try:

            @settings(
                max_examples=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            @given(data=st.data(), n=st.integers(0, 5))
            def check(data: st.DataObject, n: int) -> None:
                garbage = data.draw(st.lists(noise, min_size=n, max_size=n + 1))
                frames = rig.presses(n)
                stream, reference = rig.stream(garbage, frames)
                loop.run(rig.example(stream, reference, frames))

            check()
        finally:
            loop.run(rig.stop())
            loop.close()
    assert errors == []
    assert rig.port.decoder.stats.frames_bad > 0  # the garbage did hold false starts


# -- floods ------------------------------------------------------------------------------------

FLOOD = 10 * 1024 * 1024


@pytest.mark.service
async def test_ten_megabytes_of_noise_into_the_counter_bus(hall: Hall, tmp_path: Path) -> None:
    socat = SocatPair(tmp_path)
    await socat.start()
    bus = BusDevices(socat.peer)
    try:
        with errors_logged() as errors:
            async with running(hall, with_ports(bus_port(socat.url))) as manager:
                link = manager.link("counter-bus")
                await link.wait_for(LinkState.CONNECTED)
                port = manager.device("counter-bus")
                assert isinstance(port, CounterBus)
                await stock(hall, 2)
                began = time.monotonic()
                assert socat._fd is not None
                await asyncio.wait_for(pour(socat._fd, os.urandom(FLOOD)), 30)
                await pour(socat._fd, bytes(bus68.MAX_FRAME))  # end any false start
                await eventually(lambda: link.stats.bytes_in >= FLOOD, 20.0, "the flood read")
                flood_s = time.monotonic() - began
                assert link.state is LinkState.CONNECTED and link.stats.connects == 1
                assert port.decoder.stats.bytes_skipped > FLOOD // 2
                mark = await hall.io(hall.store.last_seq)
                assert await bus.press(NEXT_K3) < 0.1
                await eventually(lambda: hall.state.counters[3].current is not None, 3.0)
                assert len(await calls_after(hall, mark)) == 1
        assert errors == []
        assert flood_s < 30
    finally:
        await socat.kill()


@pytest.mark.service
async def test_ten_megabytes_of_noise_into_a_dispenser(hall: Hall) -> None:
    server = TcpServer()
    await server.start()
    dispenser = LineDevice(server.peer)
    try:
        with errors_logged() as errors:
            async with running(hall, with_ports(dispenser_port(server.url))) as manager:
                link = manager.link("dispenser")
                await link.wait_for(LinkState.CONNECTED)
                await eventually(lambda: server.connections == 1, what="the daemon to connect")
                writer = server._clients[-1][0]
                noise = os.urandom(FLOOD)

                async def flood() -> None:
                    for i in range(0, FLOOD, 65536):
                        writer.write(noise[i : i + 65536])
                        await writer.drain()
                    writer.write(b"\n")
                    await writer.drain()

                await asyncio.wait_for(flood(), 30)
                await eventually(lambda: link.stats.bytes_in >= FLOOD + 1, 20.0, "the flood read")
                assert link.state is LinkState.CONNECTED and link.stats.connects == 1
                # Whatever the noise earned (ERR 400 lines), the next requests are answered.
                server.peer.write(b"PING #77\n")
                server.peer.write(b"TAKE A #78\n")
                await eventually(
                    lambda: dispenser.replies()[-2:] == [b"PONG #77\n", b"TICKET A001 A 0 0 #78\n"],
                    10.0,
                    "the answers after the flood",
                )
                assert hall.state.issued["A"] == 1
        assert errors == []
    finally:
        with contextlib.suppress(AssertionError):
            await server.kill()


# -- unplug ------------------------------------------------------------------------------------


@pytest.mark.service
async def test_unplugged_mid_traffic_reconnects_and_loses_no_acked_press(
    hall: Hall, tmp_path: Path
) -> None:
    socat = SocatPair(tmp_path)
    await socat.start()
    bus = BusDevices(socat.peer)
    await stock(hall, 40)
    # The production backoff (0.5 s doubling to 30 s), not the tests' fast one.
    manager = await start_ports(hall, with_ports(bus_port(socat.url)), backoff=Backoff)
    sent: list[bytes] = []
    mark = await hall.io(hall.store.last_seq)
    try:
        link = manager.link("counter-bus")
        await link.wait_for(LinkState.CONNECTED)
        stop = asyncio.Event()

        async def traffic(first: int) -> None:
            k = first
            while not stop.is_set():
                raw = next_key(KEYPADS[k % len(KEYPADS)], (k // len(KEYPADS)) % 256)
                k += 1
                with contextlib.suppress(AssertionError, OSError):
                    socat.peer.write(raw)
                    sent.append(raw)
                await asyncio.sleep(0.005)

        presses = asyncio.create_task(traffic(0))
        await eventually(lambda: len(sent) >= 30, what="traffic")
        await socat.kill()  # unplugged while presses are on the wire
        stop.set()
        await presses
        await eventually(lambda: link.state is LinkState.BACKOFF, what="backoff")
        acked_before_kill = [a for _, a in bus.acks]
        await asyncio.sleep(0.3)
        mark_history = len(link.history)
        await socat.start()
        returned = time.monotonic()
        await asyncio.wait_for(link.wait_for(LinkState.CONNECTED), 5)
        connected_at = next(
            t for t, s in list(link.history)[mark_history:] if s is LinkState.CONNECTED
        )
        assert connected_at - returned < 2.0, connected_at - returned
        print(f"reconnected {connected_at - returned:.3f} s after the port returned")

        # Every press acked before the unplug reached the engine, once.
        want = Counter(f.address for f in acked_before_kill)
        deadline = time.monotonic() + 5
        while True:
            calls = Counter(k for k, _ in await calls_after(hall, mark))
            if all(calls[a] >= n for a, n in want.items()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert all(calls[a] >= n for a, n in want.items()), (calls, want)
        sent_per = Counter(Bus68Decoder().feed(r)[0].address for r in sent)
        assert all(calls[a] <= sent_per[a] for a in calls), (calls, sent_per)
        assert len(acked_before_kill) >= 20

        # And the bus works again.
        bus.decoder.reset()
        stop.clear()
        before = sum(calls.values())
        assert await bus.press(next_key(1, 200)) < 0.1
        await eventually(lambda: hall.state.counters[1].current is not None)
        deadline = time.monotonic() + 3
        while len(await calls_after(hall, mark)) != before + 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await manager.stop()
        await socat.kill()


# -- retransmissions ---------------------------------------------------------------------------


@pytest.mark.service
@pytest.mark.parametrize("gap", [0.0, 0.3])
async def test_the_same_frame_three_times_is_one_call(
    hall: Hall, tmp_path: Path, gap: float
) -> None:
    socat = SocatPair(tmp_path)
    await socat.start()
    bus = BusDevices(socat.peer)
    await stock(hall, 3)
    try:
        async with running(hall, with_ports(bus_port(socat.url))) as manager:
            await manager.link("counter-bus").wait_for(LinkState.CONNECTED)
            mark = await hall.io(hall.store.last_seq)
            acks = len(bus.acks)
            if gap:
                for _ in range(3):  # a keypad that misses its ack: 300 ms apart
                    assert await bus.press(NEXT_K3) < 0.1
                    await asyncio.sleep(gap)
            else:
                socat.peer.write(NEXT_K3 * 3)
                await eventually(lambda: len(bus.acks) >= acks + 3, what="three acks")
            await asyncio.sleep(0.2)
            frame = Bus68Decoder().feed(NEXT_K3)[0]
            assert [a for _, a in bus.acks[acks:]] == [frame] * 3  # each one acked
            assert len(await calls_after(hall, mark)) == 1
            assert hall.state.counters[3].current is not None
            stats = device_stats(manager, "counter-bus", "counter-bus:3")
            assert stats["retransmissions"] == 2 and stats["frames_good"] == 1
    finally:
        await socat.kill()


@pytest.mark.service
async def test_a_long_unplug_still_reconnects_within_2_s_of_the_port_returning(
    hall: Hall, tmp_path: Path
) -> None:
    """With the production backoff an outage of 4 s puts the next retry seconds away; the
    link must notice the device path coming back rather than sleep through it."""
    socat = SocatPair(tmp_path)
    await socat.start()
    bus = BusDevices(socat.peer)
    await stock(hall, 2)
    manager = await start_ports(hall, with_ports(bus_port(socat.url)), backoff=Backoff)
    try:
        link = manager.link("counter-bus")
        await link.wait_for(LinkState.CONNECTED)
        await socat.kill()
        await eventually(lambda: link.state is LinkState.BACKOFF, what="backoff")
        await asyncio.sleep(4.0)
        mark = len(link.history)
        await socat.start()
        returned = time.monotonic()
        await asyncio.wait_for(link.wait_for(LinkState.CONNECTED), 10)
        connected_at = next(t for t, s in list(link.history)[mark:] if s is LinkState.CONNECTED)
        assert connected_at - returned < 2.0, connected_at - returned
        assert await bus.press(NEXT_K3) < 0.1
        await eventually(lambda: hall.state.counters[3].current is not None, what="the call")
    finally:
        await manager.stop()
        await socat.kill()

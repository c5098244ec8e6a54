"""Counter keypads over a real pty: press-to-commit latency and one bus68 link's frame rate.

A socat pty pair stands in for the RS-485 adapter: the daemon's ports open one end, this
script plays every device on the bus at the other (it echoes the daemon's LCD and screen
frames as the devices would). The hall runs on a temporary sqlite file, as in production.

Latency: one press at a time, NEXT and DONE alternating at each keypad in turn so every press
commits exactly one event (ticket.called or ticket.done); measured from the moment the
frame's last byte is written to the pty until a hall bus subscriber sees the event, i.e.
after it is in the log. Throughput: the same presses pipelined (at most --window not yet
committed) through one link; frames per second from the first byte to the last commit.

The bench hall has 60 counters with a keypad each, and 12 services, counter k serving
service k mod 12 (five counters a service): a keypad's 8-bit seq comes round every 256
presses, and the contract's 5 s retransmission window must not mistake a new press for a
retransmission, so a fast bench needs many keypads. Daily limits (999 per service) bound
one run to about 20,000 presses.

    python bench/serial_bench.py            # 10,000 presses, 10,000 pipelined frames
    python bench/serial_bench.py --quick    # 1,000 and 2,000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers import bus68
from drivers.bus68 import Frame, Function, Key
from drivers.devices.counter_bus import CounterBus
from drivers.link import LinkState
from drivers.ports import PortManager, start_ports
from hall_daemon import commands as c
from hall_daemon.backoff import Backoff
from hall_daemon.config import CounterConfig, DeviceConfig, HallConfig, PortConfig, ServiceConfig
from hall_daemon.events import StoredEvent
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from tests.test_serial_link import CONFIG, BusDevices, SocatPair, hall_clock

COUNTERS = 60
SERVICES = 12
COMMITTING = ("ticket.called", "ticket.done")


def bench_config(url: str) -> HallConfig:
    services = tuple(
        ServiceConfig(code=f"S{i + 1}", name=f"业务{i + 1}", prefix=chr(ord("A") + i))
        for i in range(SERVICES)
    )
    counters = tuple(
        CounterConfig(id=k, name=f"{k}号窗口", services=(f"S{(k - 1) % SERVICES + 1}",))
        for k in range(1, COUNTERS + 1)
    )
    port = PortConfig(
        name="counter-bus",
        url=url,
        protocol="bus68",
        devices=tuple(
            DeviceConfig(kind="keypad", address=k, counter=k) for k in range(1, COUNTERS + 1)
        ),
    )
    return CONFIG.model_copy(
        update={"services": services, "counters": counters, "ports": (port,), "screens": ()}
    )


def presses(n: int) -> list[bytes]:
    """n key frames: keypad k in turn, NEXT then DONE, each keypad's seq counting up."""
    frames = []
    for i in range(n):
        keypad = i % COUNTERS + 1
        round_ = i // COUNTERS
        key = Key.NEXT if round_ % 2 == 0 else Key.DONE
        frames.append(bus68.encode(Frame(keypad, Function.KEY, bytes([round_ % 256, key]))))
    return frames


class Rig:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.committed = 0
        self.committed_at: list[float] = []
        self.changed = asyncio.Event()

    async def start(self, n: int) -> None:
        self.socat = SocatPair(self.folder)
        await self.socat.start()
        self.bus = BusDevices(self.socat.peer)
        config = bench_config(self.socat.url)
        spec = config.to_spec()
        store = Store(Store.sqlite_url(self.folder / "hall.db"))
        self.hall = Hall(spec, store, clock=hall_clock())
        await self.hall.start()
        for counter in spec.counters:
            await self.hall.submit(c.OpenCounter(self.hall.now(), counter.id))
        # One ticket per NEXT, spread over the services as the keypads will call them.
        nexts = [0] * SERVICES
        for i in range(0, n, 2 * COUNTERS):
            for k in range(min(COUNTERS, n - i)):
                nexts[k % SERVICES] += 1
        takes = [
            self.hall.submit(c.TakeTicket(self.hall.now(), f"S{s + 1}", os.urandom(8).hex()))
            for s, count in enumerate(nexts)
            for _ in range(count)
        ]
        for i in range(0, len(takes), 200):
            await asyncio.gather(*takes[i : i + 200])
        self.hall.bus.subscribe("bench", self._event, maxsize=100_000)
        self.manager: PortManager = await start_ports(
            self.hall, config, backoff=lambda: Backoff(0.1, 0.4)
        )
        await self.manager.link("counter-bus").wait_for(LinkState.CONNECTED)
        await asyncio.sleep(1.0)  # the first LCD round goes out and is echoed
        assert self.socat._fd is not None
        self.fd = self.socat._fd

    async def _event(self, event: StoredEvent) -> None:
        if event.type in COMMITTING:
            self.committed += 1
            self.committed_at.append(time.monotonic())
            self.changed.set()

    async def until(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.committed < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.committed} of {count} presses committed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def write(self, raw: bytes) -> float:
        """Write a whole frame; the time its last byte went into the pty."""
        view = memoryview(raw)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                time.sleep(0.0005)
        return time.monotonic()

    async def stop(self) -> None:
        await self.manager.stop()
        await self.socat.kill()
        await self.hall.stop()

    def port(self) -> CounterBus:
        port = self.manager.device("counter-bus")
        assert isinstance(port, CounterBus)
        return port


async def latency(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        await rig.start(n)
        try:
            samples = []
            for i, raw in enumerate(presses(n)):
                sent = rig.write(raw)
                await rig.until(i + 1)
                samples.append(rig.committed_at[i] - sent)
            check(rig, n)
            return samples
        finally:
            await rig.stop()


async def throughput(n: int, window: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        await rig.start(n)
        try:
            frames = presses(n)
            began = time.monotonic()
            for i, raw in enumerate(frames):
                if i - rig.committed >= window:
                    await rig.until(i - window + 1)
                rig.write(raw)
            await rig.until(n, timeout=60)
            elapsed = rig.committed_at[-1] - began
            check(rig, n)
            return n / elapsed, len(rig.bus.acks)
        finally:
            await rig.stop()


def check(rig: Rig, n: int) -> None:
    port = rig.port()
    stats = port.stats()
    refused = sum(int(d["refused"]) for d in stats["devices"])
    retrans = sum(int(d["retransmissions"]) for d in stats["devices"])
    if rig.committed != n or refused or retrans or port.jobs_dropped:
        raise SystemExit(
            f"not every press committed once: {rig.committed}/{n}, refused {refused}, "
            f"retransmissions {retrans}, jobs dropped {port.jobs_dropped}"
        )


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=10_000, help="latency samples")
    parser.add_argument("--frames", type=int, default=10_000, help="pipelined frames")
    parser.add_argument("--window", type=int, default=100, help="presses in flight at most")
    parser.add_argument("--quick", action="store_true", help="1,000 presses, 2,000 frames")
    args = parser.parse_args()
    if args.quick:
        args.presses, args.frames = 1_000, 2_000
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print(f"bench hall: {COUNTERS} keypads on one bus68 link over a socat pty, sqlite log")

    samples = await latency(args.presses)
    ms = [s * 1000 for s in samples]
    print(
        f"press -> event committed, {len(ms)} presses: p50 {pct(ms, 50):.2f} ms, "
        f"p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms"
    )
    rate, acks = await throughput(args.frames, args.window)
    print(
        f"one bus68 link, {args.frames} key frames pipelined (window {args.window}): "
        f"{rate:,.0f} frames/s committed ({acks} acks)"
    )
    wire = 9600 / 10 / 11
    print(f"(for scale: a 9600 8N1 line carries at most {wire:.0f} such 11-byte frames/s)")


if __name__ == "__main__":
    asyncio.run(main())

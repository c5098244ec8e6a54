"""Keypad frame (or command) → DOM updated on a hall screen in headless Chromium: p50/p99.

The daemon side (a real Hall on SQLite, the daemon's counter-bus driver and its aiohttp app
with the display mounted) runs in its own process, as in a hall. Two ways in:

- keypad frame: the bench plays the RS-485 bus as a serial server the daemon connects to
  (`socket://`, as to ser2net), echoes the daemon's host frames as the devices do, and
  presses NEXT on keypads 4, 5 and 6: t0 is the moment the frame's last byte was written
  to the socket;
- command: a bench-only route stamps t0 right before it submits `CallNext` to the hall
  (the serial path left out).

The screen page (/screen/hall?trace) stamps the time right after it has written the call
into the DOM, and again at the start of the next frame; both clocks are this machine's wall
clock. 500 calls per set-up after 20 warm-up calls; by default the next call is made as soon
as every page showed the last one (back to back, flashes overlapping); --gap waits between.

1. command, one Chromium screen;
2. command, 50 screens: one Chromium screen measured and 49 more WebSocket clients (the
   other TVs of a hall are other PCs: what the daemon pays for them is the fan-out);
3. command, 50 Chromium screens, all in this one headless Chromium on this machine (a worst
   case: 50 pages rendering on the daemon's own two cores);
4., 5., 6. the same three, from a keypad frame.

    python bench/display_bench.py                     # all six
    python bench/display_bench.py --setups 4 5 6      # keypad frame → DOM
    python bench/display_bench.py --setups 6 --gap 1  # 50 pages, one call a second
    python bench/display_bench.py --profile 50        # where Chromium's time goes per call
    python bench/display_bench.py --quick             # 100 calls each, set-ups 1, 2, 4, 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from drivers.bus68 import HOST_FUNCTIONS, Bus68Decoder, Frame, Function, Key, encode

REPO = Path(__file__).resolve().parents[1]
COUNTERS = (4, 5, 6)  # they all serve C (daily limit 999): calls rotate among them
WARMUP = 20
TARGET_P99_MS = 50.0


# --- the daemon side (a subprocess) ----------------------------------------------------------


async def serve(port: int, db: Path, bus_url: str | None) -> None:
    from display import setup_display
    from drivers.ports import start_ports
    from hall_daemon import commands as c
    from hall_daemon.config import load_config
    from hall_daemon.connections import start_web
    from hall_daemon.hall import Hall
    from hall_daemon.store import Store
    from hall_daemon.web import make_app

    config = load_config(REPO / "config.yaml")
    # Its fifty screens all come from this machine, over a hall's share for one address.
    limits = config.web.limits.model_copy(update={"feeds_per_client": 100})
    config = config.model_copy(update={"web": config.web.model_copy(update={"limits": limits})})
    hall = Hall(config.to_spec(), Store(Store.sqlite_url(db)))
    await hall.start()
    ports = None
    if bus_url is not None:
        # The daemon's counter-bus driver, connected to the bench's bus as to a serial server.
        bus = next(p for p in config.ports if p.protocol == "bus68")
        config = config.model_copy(update={"ports": (bus.model_copy(update={"url": bus_url}),)})
        ports = await start_ports(hall, config)
    app = make_app(hall)
    setup_display(app, hall, config)

    async def tickets(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        now = hall.now()
        await asyncio.gather(
            *(
                hall.submit(c.TakeTicket(now + timedelta(microseconds=i), "C", f"bench-{i:06d}"))
                for i in range(n)
            )
        )
        return web.json_response({"waiting": hall.state.waiting("C")})

    async def call(request: web.Request) -> web.Response:
        counter = int(request.query["counter"])
        t0 = time.time() * 1000
        events = await hall.submit(c.CallNext(hall.now(), counter))
        called = [e.data["number"] for e in events if e.type == "ticket.called"]
        return web.json_response({"t0": t0, "number": called[0] if called else None})

    app.router.add_post("/bench/tickets", tickets)
    app.router.add_post("/bench/call", call)
    # Served as the daemon serves it: behind the front door.
    web_config = config.web.model_copy(update={"host": "127.0.0.1", "port": port})
    runner, _door = await start_web(app, web_config)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    if ports is not None:
        await ports.stop()
    await hall.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(tmp: Path, bus_url: str | None = None) -> Any:
    port = free_port()
    bus = ["--bus", bus_url] if bus_url else []
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(tmp / f"hall-{port}.db"), *bus],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bench daemon did not start")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- the measuring side ---------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def browser_cpu_s() -> float:
    """CPU seconds used so far by the Chromium this bench started."""
    return sum(chromium_cpu_s().values())


def chromium_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by the Chromium this bench started (this process's
    descendants), by kind of process: renderer (a page's main thread and its raster
    workers), gpu (with --disable-gpu: the software compositor, viz) and browser."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    mine = {os.getpid()}
    total: dict[str, float] = defaultdict(float)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                grew = True
    for pid in mine - {os.getpid()}:
        with contextlib.suppress(OSError, IndexError):
            if (Path(f"/proc/{pid}/comm")).read_text().startswith("chrom"):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                kind = re.search(rb"--type=([a-z-]+)", cmdline)
                name = kind[1].decode() if kind else "browser"
                total[{"gpu-process": "gpu", "zygote": "browser"}.get(name, name)] += cpu_s(pid)
    return total


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 50):6.1f} ms   p99 {pct(values, 99):6.1f} ms   "
        f"max {max(values):6.1f} ms   (n={len(values)})"
    )


CALL_LABEL = re.compile(r"^(frame:|raw:)?call:[^:]+:(\d+)$")


class Arrivals:
    """Reports from pages and raw sockets: label -> arrival times (epoch ms).

    A call's report `call:<number>:<counter>` also counts under `counter:<counter>`, so a
    keypad press (which does not know the number it will call) can wait for its counter's.
    """

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = defaultdict(list)
        self.changed = asyncio.Condition()

    async def add(self, label: str, t: float) -> None:
        async with self.changed:
            self.seen[label].append(t)
            m = CALL_LABEL.match(label)
            if m:
                self.seen[f"{m[1] or ''}counter:{m[2]}"].append(t)
            self.changed.notify_all()

    def count(self, label: str) -> int:
        return len(self.seen.get(label, ()))

    async def since(self, label: str, mark: int, n: int, t0: float) -> list[float]:
        """The next n arrivals under `label` after the first `mark`, in ms after t0."""
        times = await self.wait(label, mark + n)
        return [t - t0 for t in times[mark : mark + n]]

    async def wait(self, label: str, n: int, timeout: float = 10.0) -> list[float]:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.seen.get(label, ())) >= n), timeout
            )
            return list(self.seen[label])


class KeypadBus:
    """The RS-485 counter bus as a serial server (ser2net) the daemon connects to.

    Keypads 4, 5 and 6 press NEXT; every host frame (keypad LCDs, window screens) is echoed
    as the devices would, so the daemon's bus driver runs as in a hall.
    """

    def __init__(self) -> None:
        self.decoder = Bus68Decoder()
        self.seqs: dict[int, int] = defaultdict(int)
        self.acks = 0
        self.connected = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.url = f"socket://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writer = writer
        self.connected.set()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                for frame in self.decoder.feed(data):
                    if frame.function in HOST_FUNCTIONS:
                        writer.write(encode(frame))
                    else:
                        self.acks += 1

    def press_next(self, address: int) -> float:
        """Write one NEXT frame; the time (epoch ms) its last byte went to the socket."""
        assert self._writer is not None
        seq = self.seqs[address] = (self.seqs[address] + 1) % 256
        self._writer.write(encode(Frame(address, Function.KEY, bytes([seq, Key.NEXT]))))
        t0 = time.time() * 1000
        # Written to the kernel at once, not buffered by asyncio: t0 is the last byte's time.
        assert self._writer.transport.get_write_buffer_size() == 0
        return t0

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
        # The daemon has stopped by now: its end is closed and the readers see EOF.
        await asyncio.wait_for(asyncio.gather(*self._clients, return_exceptions=True), 10)


async def raw_screen(url: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    """A screen that is not a browser: reads the feed as a page would, notes flashes."""
    ws_url = url.replace("http://", "ws://") + "/ws/screen/hall"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        async for msg in ws:
            m = json.loads(msg.data)
            if m["t"] == "full":
                ready.set()
            for f in m.get("flash", ()):
                await arrivals.add(f"raw:call:{f['number']}:{f['counter']}", time.time() * 1000)


async def run_setup(
    browser: Any,
    tmp: Path,
    title: str,
    pages_n: int,
    raw_n: int,
    calls: int,
    keypad: bool,
    gap: float = 0.0,
) -> dict[str, Any]:
    bus = KeypadBus() if keypad else None
    if bus is not None:
        await bus.start()
    with daemon(tmp, bus.url if bus else None) as (url, pid):
        if bus is not None:
            await asyncio.wait_for(bus.connected.wait(), 10)
        arrivals = Arrivals()
        context = await browser.new_context(viewport={"width": 1920, "height": 1080})
        await context.expose_function("benchReport", arrivals.add)
        pages = []
        for _ in range(pages_n):
            page = await context.new_page()
            await page.goto(f"{url}/screen/hall?trace")
            pages.append(page)
        for page in pages:
            await page.wait_for_selector("body[data-conn=online]")
        raw_ready = [asyncio.Event() for _ in range(raw_n)]
        raw_tasks = [asyncio.create_task(raw_screen(url, arrivals, e)) for e in raw_ready]
        for ready in raw_ready:
            await asyncio.wait_for(ready.wait(), 10)

        dom: list[float] = []
        frame: list[float] = []
        raw: list[float] = []
        slowest: list[float] = []
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/bench/tickets?n={calls + WARMUP + 10}") as r:
                assert r.status == 200
            cpu0, browser0 = cpu_s(pid), browser_cpu_s()
            for k in range(calls + WARMUP):
                counter = COUNTERS[k % len(COUNTERS)]
                label = f"counter:{counter}"
                seen = {p: arrivals.count(p + label) for p in ("", "frame:", "raw:")}
                if bus is not None:
                    t0 = bus.press_next(counter)  # keypad address n is counter n's
                else:
                    async with session.post(f"{url}/bench/call?counter={counter}") as r:
                        t0 = (await r.json())["t0"]

                got = await arrivals.since(label, seen[""], pages_n, t0)
                frames = await arrivals.since("frame:" + label, seen["frame:"], pages_n, t0)
                raws = await arrivals.since("raw:" + label, seen["raw:"], raw_n, t0)
                if k >= WARMUP:
                    dom += got
                    frame += frames
                    raw += raws
                    slowest.append(max(got))
                if gap:
                    await asyncio.sleep(gap)
            cpu1, browser1 = cpu_s(pid), browser_cpu_s()
        for t in raw_tasks:
            t.cancel()
        await asyncio.gather(*raw_tasks, return_exceptions=True)
        await context.close()
    if bus is not None:
        assert bus.acks >= calls + WARMUP, "every press is acked"
        await bus.close()
    result = {
        "title": title,
        "source": "keypad frame" if keypad else "command",
        "dom": dom,
        "frame": frame,
        "raw": raw,
        "slowest": slowest,
        "daemon_cpu_ms_per_call": (cpu1 - cpu0) * 1000 / (calls + WARMUP),
        "browser_cpu_ms_per_call": (browser1 - browser0) * 1000 / (calls + WARMUP),
        "load": os.getloadavg()[1],  # the machine is shared: how busy it was meanwhile
    }
    report(result, pages_n)
    return result


# What --profile hides, one more part at a time, to see what each part of a call costs.
HIDE = (
    ("as shipped", ()),
    ("the flash layer hidden", ("#now-flash",)),
    ("and the recent calls", ("section.recent",)),
    ("and the queues and counters", ("section.queues", "section.counters")),
    ("and the newest call (only header, clock, notice left)", ("section.now",)),
)


async def profile(browser: Any, tmp: Path, pages_n: int, calls: int) -> None:
    """Chromium CPU per call per page above its idle rate, by process kind, with parts of
    the page hidden one after another (calls 1 s apart, so each call's work is done before
    the next). Idle is what the pages cost with no calls: the clock, the notice, languages."""
    print(f"\nwhere the time goes: {pages_n} Chromium screens, {calls} calls 1 s apart per row")
    with daemon(tmp) as (url, _pid):
        context = await browser.new_context(viewport={"width": 1920, "height": 1080})
        pages = []
        for _ in range(pages_n):
            page = await context.new_page()
            await page.goto(f"{url}/screen/hall")
            pages.append(page)
        for page in pages:
            await page.wait_for_selector("body[data-conn=online]")
        k = 0
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/bench/tickets?n={calls * len(HIDE) + 10}") as r:
                assert r.status == 200
            for name, selectors in HIDE:
                for page in pages:
                    for sel in selectors:
                        await page.locator(sel).evaluate("e => { e.style.display = 'none'; }")
                await asyncio.sleep(7)  # the last flash is over
                c0, t0 = chromium_cpu_s(), time.monotonic()
                await asyncio.sleep(5)
                c1, t1 = chromium_cpu_s(), time.monotonic()
                idle = {kind: (c1[kind] - c0.get(kind, 0.0)) / (t1 - t0) for kind in c1}
                for _ in range(calls):
                    counter = COUNTERS[k % len(COUNTERS)]
                    k += 1
                    async with session.post(f"{url}/bench/call?counter={counter}") as r:
                        assert r.status == 200
                    await asyncio.sleep(1.0)
                c2, t2 = chromium_cpu_s(), time.monotonic()
                above = {
                    kind: ((c2[kind] - c1.get(kind, 0.0)) - idle.get(kind, 0.0) * (t2 - t1))
                    * 1000
                    / calls
                    / pages_n
                    for kind in c2
                }
                parts = ", ".join(f"{kind} {ms:.1f}" for kind, ms in sorted(above.items()))
                print(
                    f"  {name:56s} idle {sum(idle.values()) * 100:4.0f}% of a core;"
                    f" per call per page {sum(above.values()):5.1f} ms ({parts})"
                )
        await context.close()
    print(f"  load average (5 min) {os.getloadavg()[1]:.1f}")


def report(r: dict[str, Any], pages_n: int) -> None:
    src = f"{r['source']} ->".ljust(16)
    print(f"\n{r['title']}")
    print(f"  {src} DOM updated      {summary(r['dom'])}")
    if pages_n > 1:
        print(f"  slowest of the {pages_n} pages      {summary(r['slowest'])}")
    print(f"  {src} next frame       {summary(r['frame'])}")
    if r["raw"]:
        print(f"  {src} other sockets    {summary(r['raw'])}")
    print(
        f"  CPU per call: daemon {r['daemon_cpu_ms_per_call']:.2f} ms, "
        f"Chromium {r['browser_cpu_ms_per_call']:.1f} ms; load average (5 min) {r['load']:.1f}"
    )
    verdict = "meets" if pct(r["dom"], 99) <= TARGET_P99_MS else "MISSES"
    print(f"  {verdict} the target p99 <= {TARGET_P99_MS:.0f} ms (DOM updated)")


# number: (title, Chromium pages, other WebSocket screens, driven by keypad frames)
SETUPS = {
    1: ("command, 1 Chromium screen", 1, 0, False),
    2: ("command, 50 screens: 1 Chromium + 49 WebSocket clients", 1, 49, False),
    3: ("command, 50 Chromium screens on this machine", 50, 0, False),
    4: ("keypad frame, 1 Chromium screen", 1, 0, True),
    5: ("keypad frame, 50 screens: 1 Chromium + 49 WebSocket clients", 1, 49, True),
    6: ("keypad frame, 50 Chromium screens on this machine", 50, 0, True),
}


async def main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))  # the tests' Chromium launcher: one set of flags for both
    from tests.chromium import CHROMIUM, chromium

    calls = 100 if args.quick else args.calls
    print(f"display bench: {calls} calls per set-up, {os.cpu_count()} cores, Chromium {CHROMIUM}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # A TV's page is in front: no throttling of timers or frames.
        async with chromium(
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
        ) as browser:
            if args.profile:
                await profile(browser, tmp, args.profile, min(calls, 30))
            else:
                setups = args.setups or ([1, 2, 4, 5] if args.quick else list(SETUPS))
                for n in setups:
                    title, pages_n, raw_n, keypad = SETUPS[n]
                    if args.gap:
                        title += f", {args.gap:g} s between calls"
                    await run_setup(
                        browser, tmp, f"{n}. {title}", pages_n, raw_n, calls, keypad, args.gap
                    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setups", type=int, nargs="*", choices=sorted(SETUPS))
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds to wait after every page showed a call (default 0: back to back)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="PAGES",
        help="instead: where Chromium's CPU goes per call with PAGES screens open",
    )
    parser.add_argument("--bus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), Path(args.serve[1]), args.bus))
    else:
        asyncio.run(main(args))

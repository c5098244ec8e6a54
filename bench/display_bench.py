"""Command → DOM updated on a hall screen in headless Chromium: p50/p99 over 500 calls.

The daemon side (a real Hall on SQLite, the daemon's aiohttp app with the display mounted)
runs in its own process, as in a hall. A bench-only route there stamps the time (epoch ms)
right before it submits `CallNext` to the hall: that is where a keypad's frame would end up
once its last byte is read (the serial drivers are measured in their own bench). The screen
page (/screen/hall?trace) stamps the time right after it has written the call into the DOM,
and again at the start of the next frame; both clocks are this machine's wall clock.

Three set-ups, 500 calls each (after 20 warm-up calls):

1. one Chromium screen;
2. 50 screens connected: one Chromium screen measured and 49 more WebSocket clients (the
   other TVs of a hall are other PCs: what the daemon pays for them is the fan-out);
3. 50 Chromium screens, all in this one headless Chromium on this machine (a worst case:
   50 pages rendering on the daemon's own two cores).

    python bench/display_bench.py               # all three
    python bench/display_bench.py --quick       # 100 calls each, set-ups 1 and 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
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

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
COUNTERS = (4, 5, 6)  # they all serve C (daily limit 999): calls rotate among them
WARMUP = 20
TARGET_P99_MS = 50.0


# --- the daemon side (a subprocess) ----------------------------------------------------------


async def serve(port: int, db: Path) -> None:
    from display import setup_display
    from hall_daemon import commands as c
    from hall_daemon.config import load_config
    from hall_daemon.hall import Hall
    from hall_daemon.store import Store
    from hall_daemon.web import make_app

    config = load_config(REPO / "config.yaml")
    hall = Hall(config.to_spec(), Store(Store.sqlite_url(db)))
    await hall.start()
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
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    await hall.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(tmp: Path) -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(tmp / f"hall-{port}.db")],
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
    """CPU seconds used so far by the Chromium this bench started (this process's
    descendants: Playwright's driver and the browser it launched)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    mine, total = {os.getpid()}, 0.0
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
                total += cpu_s(pid)
    return total


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 50):6.1f} ms   p99 {pct(values, 99):6.1f} ms   "
        f"max {max(values):6.1f} ms   (n={len(values)})"
    )


class Arrivals:
    """Reports from pages and raw sockets: label -> arrival times (epoch ms)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = defaultdict(list)
        self.changed = asyncio.Condition()

    async def add(self, label: str, t: float) -> None:
        async with self.changed:
            self.seen[label].append(t)
            self.changed.notify_all()

    async def wait(self, label: str, n: int, timeout: float = 10.0) -> list[float]:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.seen.get(label, ())) >= n), timeout
            )
            return list(self.seen[label])


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
    browser: Any, tmp: Path, title: str, pages_n: int, raw_n: int, calls: int
) -> dict[str, Any]:
    with daemon(tmp) as (url, pid):
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
                async with session.post(f"{url}/bench/call?counter={counter}") as r:
                    answer = await r.json()
                label = f"call:{answer['number']}:{counter}"
                got = [t - answer["t0"] for t in await arrivals.wait(label, pages_n)]
                frames = [t - answer["t0"] for t in await arrivals.wait("frame:" + label, pages_n)]
                raws = [t - answer["t0"] for t in await arrivals.wait("raw:" + label, raw_n)]
                if k >= WARMUP:
                    dom += got
                    frame += frames
                    raw += raws
                    slowest.append(max(got))
            cpu1, browser1 = cpu_s(pid), browser_cpu_s()
        for t in raw_tasks:
            t.cancel()
        await asyncio.gather(*raw_tasks, return_exceptions=True)
        await context.close()
    result = {
        "title": title,
        "dom": dom,
        "frame": frame,
        "raw": raw,
        "slowest": slowest,
        "daemon_cpu_ms_per_call": (cpu1 - cpu0) * 1000 / (calls + WARMUP),
        "browser_cpu_ms_per_call": (browser1 - browser0) * 1000 / (calls + WARMUP),
    }
    report(result, pages_n)
    return result


def report(r: dict[str, Any], pages_n: int) -> None:
    print(f"\n{r['title']}")
    print(f"  command -> DOM updated      {summary(r['dom'])}")
    if pages_n > 1:
        print(f"  slowest of the {pages_n} pages  {summary(r['slowest'])}")
    print(f"  command -> next frame       {summary(r['frame'])}")
    if r["raw"]:
        print(f"  command -> other sockets    {summary(r['raw'])}")
    print(
        f"  CPU per call: daemon {r['daemon_cpu_ms_per_call']:.2f} ms, "
        f"Chromium {r['browser_cpu_ms_per_call']:.1f} ms"
    )
    verdict = "meets" if pct(r["dom"], 99) <= TARGET_P99_MS else "MISSES"
    print(f"  {verdict} the target p99 <= {TARGET_P99_MS:.0f} ms (DOM updated)")


async def main(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    calls = 100 if args.quick else args.calls
    print(f"display bench: {calls} calls per set-up, {os.cpu_count()} cores, Chromium {CHROMIUM}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--disable-sync",
                    # A TV's page is in front: no throttling of timers or frames.
                    "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows",
                ],
            )
            setups = args.setups or ([1, 2] if args.quick else [1, 2, 3])
            if 1 in setups:
                await run_setup(browser, tmp, "1 Chromium screen", 1, 0, calls)
            if 2 in setups:
                await run_setup(
                    browser, tmp, "50 screens: 1 Chromium + 49 WebSocket clients", 1, 49, calls
                )
            if 3 in setups:
                await run_setup(browser, tmp, "50 Chromium screens on this machine", 50, 0, calls)
            await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setups", type=int, nargs="*", choices=(1, 2, 3))
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), Path(args.serve[1])))
    else:
        asyncio.run(main(args))

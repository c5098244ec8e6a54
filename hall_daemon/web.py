"""The daemon's HTTP server: health for systemd and monitors, the public queue view.

The display pages, the applicant page and the authenticated admin pages mount on this
same aiohttp application.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from .hall import Hall
from .webedge import hide_server_banner

HALL_KEY = web.AppKey("hall", Hall)
LOOP_LAG_LIMIT_S = 1.0  # /healthz says "not ready" when the event loop falls this far behind
LOOP_PROBE_S = 0.25


class LoopMonitor:
    """How late the event loop wakes a sleeper: the lag every timer, socket and keypad sees.

    A probe sleeps LOOP_PROBE_S again and again; how much later than asked it wakes is the
    lag. `lag_s` is the worst of the last few probes, so one stall is still seen by the
    next health check; `max_lag_s` is the worst since start (for /metrics).
    """

    def __init__(self) -> None:
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self.probes = 0
        self._recent: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LOOP_PROBE_S)
            lag = max(loop.time() - asked - LOOP_PROBE_S, 0.0)
            self._recent = [*self._recent[-7:], lag]
            self.lag_s = max(self._recent)
            self.max_lag_s = max(self.max_lag_s, lag)
            self.probes += 1


LOOP_KEY = web.AppKey("loop_monitor", LoopMonitor)


def queue_view(hall: Hall) -> dict[str, Any]:
    """What any screen in the hall may show: no tokens, nothing personal."""
    s = hall.state
    now = hall.now()
    services = []
    for code, spec in s.services.items():
        waiting = s.waiting(code)
        services.append(
            {
                "service": code,
                "name": spec.name,
                "name_en": spec.name_en,
                "waiting": waiting,
                "serving": s.serving_numbers(code),
                "open_counters": [c.id for c in s.open_counters(code)],
                "forecast": hall.forecaster(s, code, waiting, now),
            }
        )
    counters = [
        {"counter": c.id, "state": c.state, "ticket": c.current, "services": list(c.services)}
        for c in s.counters.values()
    ]
    return {
        "v": 1,
        "day": s.day.isoformat() if s.day else None,
        "services": services,
        "counters": counters,
    }


async def healthz(request: web.Request) -> web.Response:
    """Ready (200) only when the store answers, the writer runs (its last commit worked and
    the engine is not failing command after command) and the loop keeps time; else 503 and
    the first `reason` found."""
    hall = request.app[HALL_KEY]
    monitor = request.app[LOOP_KEY]
    started = time.perf_counter()
    await asyncio.sleep(0)
    loop_lag = max(time.perf_counter() - started, monitor.lag_s)
    try:
        async with asyncio.timeout(2.0):
            store_ok = await hall.io(hall.store.ping)
    except Exception:
        store_ok = False
    loop_ok = loop_lag < LOOP_LAG_LIMIT_S
    writer_problem = hall.problem()
    problems = [
        writer_problem,
        None if store_ok else "the store did not answer a read within 2 s",
        None if loop_ok else f"the event loop lags {loop_lag:.1f} s",
    ]
    reason = next((p for p in problems if p is not None), None)
    ok = reason is None
    body = {
        "ok": ok,
        "reason": reason,
        "store": store_ok,
        "writer": writer_problem is None,
        "loop": loop_ok,
        "seq": hall.store.last_seq(),
        "boot": hall.boot,
        "loop_lag_s": round(loop_lag, 4),
    }
    return web.json_response(body, status=200 if ok else 503)


async def queues(request: web.Request) -> web.Response:
    return web.json_response(queue_view(request.app[HALL_KEY]))


def make_app(hall: Hall) -> web.Application:
    hide_server_banner()
    app = web.Application(client_max_size=64 * 1024)
    app[HALL_KEY] = hall
    monitor = app[LOOP_KEY] = LoopMonitor()

    async def start_monitor(_app: web.Application) -> None:
        monitor.start()

    async def stop_monitor(_app: web.Application) -> None:
        await monitor.stop()

    app.on_startup.append(start_monitor)
    app.on_cleanup.append(stop_monitor)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/queues", queues)
    return app

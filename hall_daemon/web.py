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

HALL_KEY = web.AppKey("hall", Hall)


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
    hall = request.app[HALL_KEY]
    started = time.perf_counter()
    await asyncio.sleep(0)
    loop_lag = time.perf_counter() - started
    try:
        store_ok = await asyncio.wait_for(hall.io(hall.store.ping), timeout=2.0)
    except Exception:
        store_ok = False
    ok = hall.healthy and store_ok
    body = {
        "ok": ok,
        "store": store_ok,
        "writer": hall.healthy,
        "seq": hall.store.last_seq(),
        "boot": hall.boot,
        "loop_lag_s": round(loop_lag, 4),
    }
    return web.json_response(body, status=200 if ok else 503)


async def queues(request: web.Request) -> web.Response:
    return web.json_response(queue_view(request.app[HALL_KEY]))


def make_app(hall: Hall) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[HALL_KEY] = hall
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/queues", queues)
    return app

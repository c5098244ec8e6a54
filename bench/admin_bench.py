"""The admin side's costs on a busy hall: the status view the page is pushed, /metrics, and
the password check that every login pays.

A real Hall on SQLite in a temporary folder, 400 tickets over the example hall's three
services, six counters open and calling. Prints p50/p95 of:

- status view: computing `status_view` and serialising it (done once per change, shared by
  every open admin page);
- /metrics: rendering the Prometheus text;
- scrypt (n=2**15, r=8, p=1): hashing and checking a password (on a worker thread in the
  daemon, never on the event loop).

    python bench/admin_bench.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hall_daemon import commands as c
from hall_daemon.admin.auth import check_password, hash_password
from hall_daemon.admin.metrics import EventCounter, render_metrics
from hall_daemon.admin.status import AdminHandles, status_view
from hall_daemon.config import load_config
from hall_daemon.hall import Hall
from hall_daemon.store import Store

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def line(name: str, xs: list[float]) -> str:
    ms = [1000 * x for x in xs]
    return f"{name:<34} p50 {pct(ms, 0.5):8.2f} ms   p95 {pct(ms, 0.95):8.2f} ms   n={len(ms)}"


async def main() -> None:
    config = load_config(REPO / "config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        hall = Hall(
            config.to_spec(), Store(Store.sqlite_url(Path(tmp) / "hall.db")), clock=lambda: T0
        )
        await hall.start()
        services = list(hall.state.services)
        for i in range(400):
            at = T0 + timedelta(seconds=i)
            await hall.submit(c.TakeTicket(at, services[i % len(services)], f"bench-token-{i:06d}"))
        for counter in hall.state.counters:
            await hall.submit(c.CallNext(T0 + timedelta(minutes=11), counter))
        handles = AdminHandles()
        disk = {"path": tmp, "free_bytes": 1}
        views, metrics = [], []
        for _ in range(200):
            t = time.perf_counter()
            json.dumps(status_view(hall, handles, notice_default="", disk=disk, loop_lag_s=0.0))
            views.append(time.perf_counter() - t)
            t = time.perf_counter()
            render_metrics(
                hall,
                handles,
                EventCounter(),
                loop_lag_s=0.0,
                loop_lag_max_s=0.0,
                disk=disk,
                login_failures=0,
            )
            metrics.append(time.perf_counter() - t)
        waiting = sum(hall.state.waiting(s) for s in services)
        await hall.stop()
    hashes, checks = [], []
    stored = hash_password("correct horse battery staple")
    for _ in range(10):
        t = time.perf_counter()
        hash_password("correct horse battery staple")
        hashes.append(time.perf_counter() - t)
        t = time.perf_counter()
        check_password(stored, "correct horse battery staple")
        checks.append(time.perf_counter() - t)
    print(f"busy hall: {waiting} tickets waiting, {len(config.counters)} counters calling")
    print(line("status view (compute + JSON)", views))
    print(line("/metrics render", metrics))
    print(line("scrypt hash (n=2^15, r=8, p=1)", hashes))
    print(line("scrypt check", checks))
    print(f"(median check {1000 * statistics.median(checks):.1f} ms)")


if __name__ == "__main__":
    asyncio.run(main())

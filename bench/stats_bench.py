"""Statistics over 30 days of the 50-counter hall: how long the admin page's report takes.

Builds (or reuses, with --db) the same history as recovery_bench.py: 30 simulated busy
days (bench/hallgen.py, ~2,500-3,000 tickets a day) stored through `Store.append`. Then a
real `Hall` on that file and the statistics service of the admin page (no HTTP) report:

- cold: the whole 30 days (every day read from the store a batch at a time on the hall's
  store thread, summarised on a worker thread), then the report with its regression;
- warm: the same again (closed days from the cache; today unchanged, so not re-read);
- after one new event: only that event is read (today's events are kept);
- one day cold (a fresh service), and the ticket-level CSV of the 30 days;
- while the cold report runs, a command is submitted every 20 ms: the worst time a
  command waited for its commit shows what the report costs the hall's writer;
- the resident memory the cache of 30+ day summaries adds.

On a shared machine the wall times depend on the load (printed); the CPU seconds of the
process (all threads) are what the work costs.

    python bench/stats_bench.py                 # 30 days (builds ~400k events, a few minutes)
    python bench/stats_bench.py --db /tmp/s.db  # keep (or reuse) the built history
    python bench/stats_bench.py --quick         # CI smoke: 3 days
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def history(db: Path, days: int) -> str:
    """Build the history unless the file exists; return the clock to use afterwards."""
    from recovery_bench import build

    from hall_daemon.store import Store

    url = Store.sqlite_url(db)
    if db.exists():
        store = Store(url)
        store.open()
        last = store.events_after(store.last_seq() - 1)[-1].at
        store.close()
        return (last + timedelta(minutes=1)).isoformat()
    t0 = time.perf_counter()
    clock = build(url, days, 50, 10, seed=1, batch=500)
    print(f"built {days} days of history in {time.perf_counter() - t0:.1f} s")
    return clock


async def run(db: Path, clock: str, days: int) -> dict[str, Any]:
    import hallgen

    from hall_daemon import commands as c
    from hall_daemon.admin.stats_routes import StatsService, tickets_csv
    from hall_daemon.hall import Hall
    from hall_daemon.store import Store

    now = datetime.fromisoformat(clock)
    # warm_days=0: the forecaster's warm-up would share the CPU with what is measured here.
    hall = Hall(
        hallgen.make_spec(50, 10), Store(Store.sqlite_url(db)), clock=lambda: now, warm_days=0
    )
    await hall.start()
    out: dict[str, Any] = {"events": hall.store.last_seq()}
    try:
        svc = StatsService(hall)
        last = svc.today()
        first = last - timedelta(days=days - 1)

        latencies: list[float] = []
        stop = asyncio.Event()

        async def keypad() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                state: Literal["fault", "online"] = "fault" if n % 2 else "online"
                t0 = time.perf_counter()
                await hall.submit(c.ReportDevice(now, "printer-9", "ttyS9", "printer", state))
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)

        rss0 = hallgen.rss_kib()
        presser = asyncio.get_running_loop().create_task(keypad())
        t0, cpu0 = time.perf_counter(), time.process_time()
        rep = await svc.report(first, last)
        out["cold_s"] = time.perf_counter() - t0
        out["cold_cpu_s"] = time.process_time() - cpu0
        stop.set()
        await presser
        out["days_read"] = svc.loaded_days
        out["tickets"] = rep["hall"]["issued"]
        out["served"] = rep["hall"]["served"]
        out["flagged_tickets"] = rep["outliers"]["tickets_flagged"]
        out["flagged_counters"] = len(rep["outliers"]["counters"])
        out["commit_wait_max_ms"] = max(latencies) * 1000
        out["commit_wait_median_ms"] = sorted(latencies)[len(latencies) // 2] * 1000
        out["commands_during_cold"] = len(latencies)
        out["cache_rss_mib"] = (hallgen.rss_kib() - rss0) / 1024

        t0, cpu0 = time.perf_counter(), time.process_time()
        await svc.report(first, last)
        out["warm_s"] = time.perf_counter() - t0
        out["warm_cpu_s"] = time.process_time() - cpu0

        await hall.submit(c.ReportDevice(now, "printer-9", "ttyS9", "printer", "online", "x"))
        read = svc.loaded_days
        t0 = time.perf_counter()
        await svc.report(first, last)
        out["after_new_event_s"] = time.perf_counter() - t0
        out["days_reread"] = svc.loaded_days - read
        out["today_events_read"] = svc.today_events_read

        t0 = time.perf_counter()
        summaries = await svc.days(first, last)
        records = [r for d in summaries for r in d.tickets]
        body = await asyncio.to_thread(tickets_csv, records)
        out["ticket_csv_s"] = time.perf_counter() - t0
        out["ticket_csv_mib"] = len(body) / 2**20

        one = StatsService(hall)
        t0 = time.perf_counter()
        await one.report(last, last)
        out["one_day_cold_s"] = time.perf_counter() - t0
    finally:
        await hall.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--db", type=Path, help="history file to keep or reuse")
    ap.add_argument("--quick", action="store_true", help="3 days (CI smoke)")
    args = ap.parse_args()
    days = 3 if args.quick else args.days
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "hall.db"
        clock = history(db, days)
        load0 = os.getloadavg()[0]
        out = asyncio.run(run(db, clock, days))
        load1 = os.getloadavg()[0]
    print(f"statistics over {days} days: {out['events']:,} events, {out['tickets']:,} tickets")
    print(
        f"  (machine load average {load0:.1f} at start, {load1:.1f} at end; {os.cpu_count()} CPUs)"
    )
    print(
        f"  cold report   {out['cold_s']:.2f} s, CPU {out['cold_cpu_s']:.2f} s"
        f"  ({out['days_read']} days read from the store,"
        f" incl. 8 weeks of same-weekday history)"
    )
    print(
        f"  warm report   {out['warm_s'] * 1000:.0f} ms, CPU {out['warm_cpu_s'] * 1000:.0f} ms"
        "  (closed days cached, today unchanged)"
    )
    print(
        f"  after 1 event {out['after_new_event_s'] * 1000:.0f} ms  "
        f"({out['days_reread']} days re-read, {out['today_events_read']} new events read)"
    )
    print(f"  one day cold  {out['one_day_cold_s'] * 1000:.0f} ms")
    print(f"  ticket CSV    {out['ticket_csv_s']:.2f} s  ({out['ticket_csv_mib']:.1f} MiB)")
    print(
        f"  hall commits during the cold report: {out['commands_during_cold']} commands, "
        f"wait median {out['commit_wait_median_ms']:.1f} ms, max {out['commit_wait_max_ms']:.0f} ms"
    )
    print(f"  cache memory  +{out['cache_rss_mib']:.0f} MiB RSS")
    print(
        f"  outliers      {out['flagged_tickets']} of {out['served']:,} served tickets, "
        f"{out['flagged_counters']} counters"
    )


if __name__ == "__main__":
    main()

"""Memory of the whole hall daemon over repeated days in a 50-counter hall.

    nice -n 10 .venv/bin/python bench/rss_bench.py --days 5

The child is the daemon as `hall-daemon run -c config.yaml` builds it (hall_daemon.app.Daemon:
store, recovery, voice, printer, serial ports, MQTT sync, screens, admin, web server) on a
50-counter, 10-service version of the example config.yaml, started with the environment of
systemd/hall-daemon.service (its `Environment=` lines). A real Mosquitto takes the MQTT
traffic. Two things differ from a hall, and only so that days pass in minutes: the hall's
clock is the time of the command being played, and the commands of bench/hallgen.py's busy
day are handed to the single writer (`Hall.submit`, where every adapter's command ends up)
instead of arriving as serial bytes; the serial ports point at addresses nobody listens on
and keep reconnecting, as with unplugged devices.

The child prints its RSS at the end of each day's traffic ("close") and after the next
morning's day end ("day end": tickets cancelled, counters closed, state of the day
dropped). Target: ≤ 80 MB (80,000,000 bytes = 78,125 KiB) after a day, no growth from day
to day. --objects makes the child print, at each point, where the RSS is (anonymous and
file pages, malloc's bytes in use and free, SQLite's own allocations, the connection pool)
and which kinds of Python objects grew in number from one day end to the next (tracemalloc
slows the daemon too much on two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import pickle
import statistics
import struct
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

TARGET_KIB = 80_000_000 // 1024  # 80 MB
UNIT = REPO / "systemd" / "hall-daemon.service"


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The `Environment=` assignments of the systemd unit (what systemd gives the daemon)."""
    env: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for item in line.removeprefix("Environment=").split():
                key, _, value = item.strip('"').partition("=")
                env[key] = value
    return env


def hall_config(tmp: Path, counters: int, mqtt_port: int, web_port: int) -> Path:
    """config.yaml of the repository with bench/hallgen.py's services, counters and devices."""
    import yaml
    from hallgen import make_spec

    spec = make_spec(counters)
    cfg: dict[str, Any] = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    state = tmp / "state"
    cfg["state_dir"] = str(state)
    cfg["services"] = [
        {
            "code": s.code,
            "name": s.name,
            "name_en": s.name_en,
            "prefix": s.prefix,
            "daily_limit": s.daily_limit,
            "mean_service_minutes": s.mean_service_s / 60.0,
            "hours": [],
        }
        for s in spec.services
    ]
    cfg["counters"] = [
        {"id": k.id, "name": k.name, "name_en": k.name_en, "services": list(k.services)}
        for k in spec.counters
    ]
    # Devices as a hall has them: keypad, evaluator and window screen per counter. Nobody
    # listens on these ports (devices unplugged): the links keep reconnecting all day.
    bus = [{"address": k.id, "kind": "keypad", "counter": k.id} for k in spec.counters]
    bus += [{"address": 60 + k.id, "kind": "evaluator", "counter": k.id} for k in spec.counters]
    bus += [{"address": 120 + k.id, "kind": "screen", "counter": k.id} for k in spec.counters]
    for i, port in enumerate(cfg["ports"]):
        port["url"] = f"socket://127.0.0.1:{9 + i}"
        if port["protocol"] == "bus68":
            port["devices"] = bus
    cfg["printer"]["path"] = str(state / "receipts.bin")
    cfg["voice"]["folder"] = str(state / "voice")
    cfg["mqtt"]["port"] = mqtt_port
    cfg["web"]["port"] = web_port
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def detail() -> str:
    """Where the RSS is: anonymous vs file pages, malloc's in-use vs free, SQLite's own."""
    import ctypes

    with open("/proc/self/smaps_rollup") as f:
        roll = dict(line.split(":", 1) for line in f if ":" in line and "-" not in line[:12])
    kib = {k: int(v.split()[0]) for k, v in roll.items() if v.strip().endswith("kB")}

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    try:
        lite = ctypes.CDLL("libsqlite3.so.0")
        lite.sqlite3_memory_used.restype = ctypes.c_int64
        sqlite_kib = lite.sqlite3_memory_used() // 1024
    except OSError:
        sqlite_kib = -1
    return (
        f"anon {kib.get('Anonymous', 0)} file {kib.get('Rss', 0) - kib.get('Anonymous', 0)} "
        f"malloc-used {m.uordblks // 1024} malloc-free {m.fordblks // 1024} "
        f"mmapped {m.hblkhd // 1024} sqlite {sqlite_kib} KiB"
    )


async def child(config_path: Path, trace: bool) -> None:
    import logging
    from collections import Counter

    from hall_daemon.cli import _load, prepare_run

    # As hall_daemon.cli.main, cmd_run and app.run do for `hall-daemon run`.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = _load(str(config_path))
    prepare_run(config)
    from drivers.printer import check_profile
    from hall_daemon.app import Daemon
    from hall_daemon.model import DomainError

    check_profile(config)
    daemon = Daemon(config)
    at: datetime = datetime.fromtimestamp(0)
    daemon.hall._clock = lambda: at  # the time of the command being played
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    started = False
    previous: Any = None
    while True:
        try:
            (size,) = struct.unpack("!I", await reader.readexactly(4))
        except asyncio.IncompleteReadError:
            break
        kind, payload = pickle.loads(await reader.readexactly(size))
        if kind == "cmd":
            at = payload.at
            if not started:
                await daemon.start()
                await asyncio.sleep(1.0)
                print(f"START {rss_kib()} 0", flush=True)  # imports, store open, empty hall
                started = True
            with contextlib.suppress(DomainError):
                await daemon.hall.submit(payload)
        else:  # ("close" | "dayend", n): let the outputs catch up, then measure
            await asyncio.sleep(2.0)
            seq = daemon.hall.store.last_seq()
            print(f"{kind.upper()} {payload} {rss_kib()} {seq}", flush=True)
            if trace:
                pool = daemon.hall.store.engine.pool.status()
                print(f"DETAIL {kind} {payload}: {detail()}; {pool}", flush=True)
            if trace and kind == "dayend":  # what is left over from one day to the next
                import gc

                now = Counter(type(o).__name__ for o in gc.get_objects())
                if previous is not None:
                    grown = (now - previous).most_common(12)
                    print(f"OBJECTS day {payload}: {grown}", flush=True)
                previous = now
    await daemon.stop()


def parent(days: int, counters: int, trace: bool) -> int:
    from hallgen import HallSim, make_spec

    from hall_daemon import commands as c
    from tests.daemon_harness import free_port
    from tests.mqtt_broker import Broker

    spec = make_spec(counters)
    env = {**os.environ, **unit_environment()}
    shown = " ".join(f"{k}={v}" for k, v in unit_environment().items())
    print(f"child environment from {UNIT.relative_to(REPO)}: {shown}", flush=True)
    rows: list[tuple[str, int, int]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp, "broker").start()
        config = hall_config(tmp, counters, broker.port, free_port())
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(config)] + (["--objects"] if trace else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=False,
        )
        assert proc.stdin is not None and proc.stdout is not None

        def send(kind: str, payload: Any) -> None:
            assert proc.stdin is not None
            data = pickle.dumps((kind, payload))
            proc.stdin.write(struct.pack("!I", len(data)) + data)

        day = None
        n = 0

        def end_of_day(last: datetime) -> None:
            nonlocal n
            n += 1
            send("close", n)
            # Next morning, one minute after the reset hour: the clock tick ends the day.
            morning = datetime.combine(
                last.date() + timedelta(days=1),
                datetime.min.time().replace(hour=spec.day_reset_hour, minute=1),
                last.tzinfo,
            )
            send("cmd", c.Tick(morning))
            send("dayend", n)

        last: datetime | None = None
        for step in HallSim(spec, seed=1).steps(days):
            d = step.command.at.date()
            if day is not None and d != day and last is not None:
                end_of_day(last)
            day = d
            last = step.command.at
            send("cmd", step.command)
        assert last is not None
        end_of_day(last)
        proc.stdin.close()
        for raw in proc.stdout:
            line = raw.decode().strip()
            print(line, flush=True)
            parts = line.split()
            if parts and parts[0] in ("START", "CLOSE", "DAYEND"):
                label = "start" if parts[0] == "START" else f"{parts[0].lower()} {parts[1]}"
                rows.append((label, int(parts[-2]), int(parts[-1])))
        proc.wait()
        broker.kill()
    print()
    print("| point | RSS | events in the log |")
    print("|---|---|---|")
    for label, kib, seq in rows:
        print(f"| {label} | {kib:,} KiB ({kib * 1024 / 1e6:.1f} MB) | {seq:,} |")
    ends = [kib for label, kib, _ in rows if label.startswith("dayend")]
    closes = [kib for label, kib, _ in rows if label.startswith("close")]
    worst = max(closes + ends, default=0)
    ok = worst <= TARGET_KIB
    print(
        f"\nhighest after a day: {worst:,} KiB = {worst * 1024 / 1e6:.1f} MB "
        f"(target ≤ 80 MB): {'met' if ok else 'MISSED'}"
    )
    for name, series in (("close", closes), ("day end", ends)):
        if len(series) >= 3:
            slope = statistics.linear_regression(range(len(series)), series).slope
            diffs = [b - a for a, b in itertools.pairwise(series)]
            print(f"{name}: day-to-day {diffs} KiB; least-squares slope {slope:+.0f} KiB/day")
        if len(series) >= 4:
            later = series[1:]
            slope = statistics.linear_regression(range(len(later)), later).slope
            print(f"{name}: slope from day 2 on {slope:+.0f} KiB/day")
    return 0 if ok and proc.returncode == 0 else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--counters", type=int, default=50)
    p.add_argument("--objects", action="store_true")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.objects))
    else:
        print(f"rss_bench: {args.counters} counters, {args.days} days; target ≤ 80 MB", flush=True)
        raise SystemExit(parent(args.days, args.counters, args.objects))


if __name__ == "__main__":
    main()

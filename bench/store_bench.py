"""Durable events committed per second (no target: a measurement).

SQLite in a temp file with the store's own settings (WAL, synchronous=FULL), three ways:

  append      one `Store.append` per command with that command's events (the engine's real
              0-50 events per command, mostly 1-2) and a snapshot every 1,000 events as the
              runtime takes them: one transaction, one fsync per command.
  submit x1   the real runtime, `await Hall.submit(cmd)` one at a time: engine + commit.
  submit x50  50 concurrent submitters: the runtime's group commit puts what arrived during
              one fsync into the next transaction.

The same three on PostgreSQL when the local server answers (a temp database
`hall_bench_<random>`, dropped afterwards); the output says which backends ran.
Each way stops after --commands commands or --seconds seconds, whichever comes first.

    python bench/store_bench.py            # SQLite, and PostgreSQL if reachable
    python bench/store_bench.py --quick    # CI smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hallgen

from hall_daemon import commands as c
from hall_daemon.engine import DAY_STARTED
from hall_daemon.events import Event
from hall_daemon.hall import Hall
from hall_daemon.model import DomainError, HallSpec
from hall_daemon.store import Store

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
SNAPSHOT_EVERY = 1000


@dataclass
class Workload:
    commands: list[c.Command]
    # Per command that has events: its events, and the snapshot the runtime would take then.
    appends: list[tuple[list[Event], dict[str, Any] | None]]


@dataclass
class Result:
    how: str
    seconds: float
    commands: int
    events: int
    commits: int
    latencies_ms: list[float]
    refused: int = 0

    def row(self) -> str:
        lat = sorted(self.latencies_ms) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        secs = self.seconds
        return (
            f"{self.how:<14}{self.commands / secs:>10,.0f}{self.events / secs:>10,.0f}"
            f"{self.commits / secs:>10,.0f}{self.events / max(self.commits, 1):>9.1f}"
            f"{statistics.median(lat):>9.2f}{p99:>9.2f}{self.commands:>9,}{self.seconds:>7.1f}"
        )


HEADER = (
    f"{'':<14}{'cmds/s':>10}{'events/s':>10}{'commits/s':>10}{'ev/comm':>9}"
    f"{'p50 ms':>9}{'p99 ms':>9}{'cmds':>9}{'secs':>7}"
)


def workload(spec: HallSpec, n: int, seed: int, snapshot_every: int = SNAPSHOT_EVERY) -> Workload:
    cmds: list[c.Command] = []
    appends: list[tuple[list[Event], dict[str, Any] | None]] = []
    sim = hallgen.HallSim(spec, seed=seed)
    since = 0
    for step in sim.steps():
        cmds.append(step.command)
        if step.events:
            since += len(step.events)
            snap = None
            if since >= snapshot_every or any(e.type == DAY_STARTED for e in step.events):
                snap, since = sim.engine.state.to_dict(), 0
            appends.append((step.events, snap))
        if len(cmds) >= n:
            break
    return Workload(cmds, appends)


# -- the three ways ---------------------------------------------------------------------------


def bench_append(url: str, w: Workload, seconds: float) -> Result:
    store = Store(url)
    store.open()
    lat: list[float] = []
    events = commits = 0
    clock = time.perf_counter
    started = clock()
    deadline = started + seconds
    try:
        for evs, snap in w.appends:
            t0 = clock()
            store.append(evs, (lambda _seq, s=snap: s) if snap is not None else None)
            t1 = clock()
            lat.append((t1 - t0) * 1000)
            events += len(evs)
            commits += 1
            if t1 > deadline:
                break
        elapsed = clock() - started
    finally:
        store.close()
    return Result("append", elapsed, commits, events, commits, lat)


async def bench_submit(
    url: str, spec: HallSpec, w: Workload, seconds: float, conc: int, snapshot_every: int
) -> Result:
    t_first = w.commands[0].at
    hall = Hall(spec, Store(url), clock=lambda: t_first, snapshot_every=snapshot_every)
    await hall.start()
    base_commits, base_events = hall.stats.commits, hall.stats.events
    lat: list[float] = []
    done = refused = 0
    todo: Iterator[c.Command] = iter(w.commands)
    clock = time.perf_counter
    started = clock()
    deadline = started + seconds

    async def submitter() -> None:
        nonlocal done, refused
        for cmd in todo:  # shared: each takes the next command, so their order is kept
            t0 = clock()
            try:
                await hall.submit(cmd)
            except DomainError:
                refused += 1
            t1 = clock()
            lat.append((t1 - t0) * 1000)
            done += 1
            if t1 > deadline:
                return

    await asyncio.gather(*(submitter() for _ in range(conc)))
    elapsed = clock() - started
    commits = hall.stats.commits - base_commits
    events = hall.stats.events - base_events
    await hall.stop()
    return Result(f"submit x{conc}", elapsed, done, events, commits, lat, refused)


def run_backend(
    fresh_url: Callable[[], Any], spec: HallSpec, w: Workload, args: argparse.Namespace
) -> list[Result]:
    """The three ways, each on a fresh database; prints each row as it is measured."""
    every = args.snapshot_every
    ways: list[Callable[[str], Result]] = [
        lambda url: bench_append(url, w, args.seconds),
        lambda url: asyncio.run(bench_submit(url, spec, w, args.seconds, 1, every)),
        lambda url: asyncio.run(bench_submit(url, spec, w, args.seconds, args.concurrency, every)),
    ]
    results = []
    for way in ways:
        with fresh_url() as url:
            results.append(way(url))
        print(results[-1].row(), flush=True)
    return results


# -- backends ---------------------------------------------------------------------------------


def sqlite_backend(parent: str | None) -> Callable[[], Any]:
    @contextmanager
    def fresh() -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="hall_bench_", dir=parent) as d:
            url = Store.sqlite_url(Path(d) / "hall.db")
            yield url
            check = Store(url)
            check.open()
            with check.engine.connect() as conn:
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            check.close()
            if (mode, sync) != ("wal", 2):
                sys.exit(f"SQLite ran with journal_mode={mode} synchronous={sync}, not WAL/FULL")

    return fresh


def pg_reachable(dsn: str) -> str | None:
    try:
        import psycopg
    except ImportError as exc:
        return str(exc)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def pg_backend(dsn: str) -> Callable[[], Any]:
    import psycopg
    from psycopg import sql

    @contextmanager
    def fresh() -> Iterator[str]:
        name = f"hall_bench_{secrets.token_hex(6)}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield PG_URL.format(name=name)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    return fresh


def pg_settings(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        got = []
        for key in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
            row = conn.execute(f"SHOW {key}").fetchone()
            got.append(f"{key}={row[0] if row else '?'}")
    return " ".join(got)


def raw_fsyncs_per_s(parent: str | None, seconds: float = 1.0) -> float:
    """The disk's own pace: write 4 KiB and fsync, in a loop (the ceiling for commits/s)."""
    with tempfile.TemporaryDirectory(prefix="hall_bench_", dir=parent) as d:
        fd = os.open(Path(d) / "probe", os.O_WRONLY | os.O_CREAT)
        block = b"x" * 4096
        n = 0
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < seconds:
                os.write(fd, block)
                os.fsync(fd)
                n += 1
        finally:
            os.close(fd)
        return n / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--commands", type=int, default=100_000, help="at most this many per way")
    p.add_argument("--seconds", type=float, default=8.0, help="at most this long per way")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=SNAPSHOT_EVERY,
        help="events between snapshots (config.yaml storage.snapshot_every; default 1000)",
    )
    p.add_argument("--dir", default=None, help="parent of the temp SQLite files (default: TMPDIR)")
    p.add_argument("--pg-dsn", default=PG_ADMIN_DSN, help="libpq DSN of the admin database")
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run")
    args = p.parse_args()
    if args.quick:
        args.commands, args.seconds = min(args.commands, 2000), min(args.seconds, 1.0)

    spec = hallgen.make_spec()
    t0 = time.perf_counter()
    w = workload(spec, args.commands, args.seed, args.snapshot_every)
    n_events = sum(len(e) for e, _ in w.appends)
    print(
        f"store_bench: up to {len(w.commands):,} commands ({n_events:,} events, "
        f"{len(w.appends):,} commands with events) or {args.seconds:g} s per way, "
        f"a snapshot every {args.snapshot_every:,} events; "
        f"generated in {time.perf_counter() - t0:.1f} s, not measured"
    )
    where = args.dir or tempfile.gettempdir()
    print(
        f"raw disk: {raw_fsyncs_per_s(args.dir):,.0f} write+fsync/s in {where} "
        f"(the ceiling for one-commit-at-a-time)"
    )

    print(f"\nSQLite {sqlite3.sqlite_version}, temp file in {where}, WAL, synchronous=FULL")
    print(HEADER)
    run_backend(sqlite_backend(args.dir), spec, w, args)

    if args.no_pg:
        print("\nPostgreSQL: not run (--no-pg)")
        return
    why = pg_reachable(args.pg_dsn)
    if why is not None:
        print(f"\nPostgreSQL: not run, server not reachable ({why})")
        return
    print(f"\nPostgreSQL ({pg_settings(args.pg_dsn)}), temp database hall_bench_<random>")
    print(HEADER)
    run_backend(pg_backend(args.pg_dsn), spec, w, args)


if __name__ == "__main__":
    main()

"""Memory of the hall runtime over repeated days in a 50-counter hall.

    nice -n 10 .venv/bin/python bench/rss_bench.py --days 5

The parent plays bench/hallgen.py's busy 50-counter hall day by day and pipes each command
to a child process holding only what the daemon holds: a Hall (engine, state, bus, writer
with group commit, forecaster) on a SQLite store. The child prints its RSS after each day;
the target is ≤ 80 MB after a day and no growth from day to day. --tracemalloc makes the
child print its top allocation sites at the end (to find a cause, if any).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

TARGET_MB = 80.0


async def child(db: Path, counters: int, trace: bool) -> None:
    import tracemalloc

    from hallgen import make_spec, rss_kib

    from hall_daemon.hall import Hall
    from hall_daemon.model import DomainError
    from hall_daemon.store import Store

    if trace:
        tracemalloc.start(10)
    spec = make_spec(counters)
    at = None
    hall = Hall(spec, Store(Store.sqlite_url(db)), clock=lambda: at)  # type: ignore[arg-type,return-value]
    inp = sys.stdin.buffer
    started = False
    while True:
        try:
            msg = pickle.load(inp)
        except EOFError:
            break
        if msg[0] == "day":
            print(f"DAY {msg[1]} {rss_kib()} {hall.store.last_seq()}", flush=True)
            continue
        command = msg[1]
        at = command.at
        if not started:
            await hall.start()
            started = True
            print(f"START {rss_kib()}", flush=True)  # imports, store open, empty hall
        with contextlib.suppress(DomainError):
            await hall.submit(command)
    if trace:
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
            print(f"TRACE {stat}", flush=True)
    await hall.stop()


def parent(days: int, counters: int, trace: bool) -> None:
    from hallgen import HallSim, make_spec

    spec = make_spec(counters)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(Path(tmp) / "hall.db")]
            + ["--counters", str(counters)]
            + (["--tracemalloc"] if trace else []),
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        day = None
        n = 0
        for step in HallSim(spec, seed=1).steps(days):
            d = step.command.at.date()
            if day is not None and d != day:
                n += 1
                pickle.dump(("day", n), proc.stdin)
            day = d
            pickle.dump(("cmd", step.command), proc.stdin)
        n += 1
        pickle.dump(("day", n), proc.stdin)
        proc.stdin.close()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--counters", type=int, default=50)
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.counters, args.tracemalloc))
    else:
        print(f"rss_bench: {args.counters} counters, {args.days} days; target ≤ {TARGET_MB} MB")
        parent(args.days, args.counters, args.tracemalloc)


if __name__ == "__main__":
    main()

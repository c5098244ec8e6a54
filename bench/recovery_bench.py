"""Cold start and recovery with 30 days of history for the 50-counter hall (target: <= 1 s).

Builds the history in a temp SQLite file the way the runtime would have left it: the
engine plays 30 simulated hall days (bench/hallgen.py); their events go through
`Store.append` in batches of ~500 with a snapshot whenever 1,000 events have passed since
the last or a hall day began. Every simulated hour the daemon's housekeeping is mimicked:
the outbox rows so far are marked sent (the sync acknowledges within seconds), and
acknowledged rows older than 7 days and all but the newest 3 snapshots are pruned.
History ends after the last day's counters closed, so the latest snapshot holds a full
day's tickets: the largest a snapshot gets.

Then, several times, a fresh Python process does `await Hall(spec, Store(url)).start()`
and reports the time from just before the process was spawned to recovered, and the time
of start() alone (open, snapshot + replay, boot counter). The hall's clock is set just
after the history so the start-up Tick has nothing to close. A second series imports the
whole daemon first (hall_daemon.app: aiohttp, pydantic config), as `hall-daemon run` does.
The file is in the OS page cache (just written or read): these are warm-cache figures.

    python bench/recovery_bench.py                  # 30 days, 5 starts per series
    python bench/recovery_bench.py --quick          # CI smoke: 2 days, 2 starts
    python bench/recovery_bench.py --db /tmp/h.db   # keep (or reuse) the built history
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_S = 1.0


# -- the child: a fresh process that starts the hall and says how long it took ---------------


def child(args: argparse.Namespace) -> None:
    import asyncio
    from datetime import datetime

    if args.daemon_imports:
        import hall_daemon.app
        import hall_daemon.config  # noqa: F401

    import hallgen

    from hall_daemon.hall import Hall
    from hall_daemon.store import Store

    imported = time.monotonic() - args.t0
    spec = hallgen.make_spec(args.counters, args.services)
    at = datetime.fromisoformat(args.clock)

    async def go() -> dict[str, float]:
        hall = Hall(spec, Store(args.child), clock=lambda: at)
        t0 = time.perf_counter()
        await hall.start()
        start_s = time.perf_counter() - t0
        to_recovered = time.monotonic() - args.t0
        out = {
            "to_recovered_s": to_recovered,
            "start_s": start_s,
            "imports_s": imported,
            "seq": hall.store.last_seq(),
            "tickets": len(hall.state.tickets),
        }
        await hall.stop()
        return out

    print(json.dumps(asyncio.run(go())), flush=True)


# -- the parent ---------------------------------------------------------------------------------


def build(url: str, days: int, counters: int, services: int, seed: int, batch: int) -> str:
    """Write `days` of history; return the time the hall's clock should show afterwards."""
    from datetime import datetime, timedelta

    import hallgen

    from hall_daemon.engine import DAY_STARTED
    from hall_daemon.events import Event
    from hall_daemon.store import Store

    spec = hallgen.make_spec(counters, services)
    sim = hallgen.HallSim(spec, seed=seed)
    store = Store(url)
    store.open()
    buf: list[Event] = []
    since = 0
    acked_to = 0
    mark_hour: datetime | None = None
    last_at: datetime | None = None

    def flush() -> None:
        nonlocal since
        if not buf:
            return
        since += len(buf)
        snap = since >= 1000 or any(e.type == DAY_STARTED for e in buf)
        state = sim.engine.state.to_dict() if snap else None  # the state after this batch
        store.append(buf, (lambda _seq: state) if state is not None else None)
        if snap:
            since = 0
        buf.clear()

    for step in sim.steps(days):
        at = step.command.at
        hour = at.replace(minute=0, second=0, microsecond=0)
        if hour != mark_hour:
            flush()
            # Hourly housekeeping: the backend has acknowledged what was sent so far (the
            # sync acks within seconds), and the daemon prunes as it does every hour.
            last = store.last_seq()
            store.outbox_mark_sent(list(range(acked_to + 1, last + 1)), at)
            store.prune(sent_before=at - timedelta(days=7), keep_snapshots=3)
            acked_to, mark_hour = last, hour
        buf.extend(step.events)
        last_at = at
        if len(buf) >= batch:
            flush()
    flush()
    store.close()
    assert last_at is not None
    return (last_at + timedelta(minutes=1)).isoformat()


def db_facts(path: Path) -> dict[str, Any]:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]
        last = con.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        snaps = con.execute("SELECT count(*) FROM snapshots").fetchone()[0]
        snap = con.execute(
            "SELECT seq, length(CAST(state AS BLOB)) FROM snapshots ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        outbox = con.execute("SELECT count(*) FROM outbox").fetchone()[0]
        first, final = con.execute("SELECT min(at), max(at) FROM events").fetchone()
    finally:
        con.close()
    size = sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )
    return {
        "events": events,
        "last_seq": last,
        "snapshots": snaps,
        "snapshot_seq": snap[0] if snap else 0,
        "snapshot_bytes": snap[1] if snap else 0,
        "replay": last - (snap[0] if snap else 0),
        "outbox": outbox,
        "size_mib": size / 2**20,
        "first": first,
        "final": final,
    }


def replay_check(url: str, counters: int, services: int) -> dict[str, float]:
    """In this process: recovery by snapshot + tail (as Hall.start) against a replay of the
    whole log from seq 1 (what a start without any snapshot would cost); same state?"""
    import hallgen

    from hall_daemon.engine import Engine
    from hall_daemon.state import HallState
    from hall_daemon.store import Store

    spec = hallgen.make_spec(counters, services)
    store = Store(url)
    store.open()
    try:

        def replay(engine: Engine, after: int) -> int:
            n = 0
            while batch := store.events_after(after, limit=5000):
                for e in batch:
                    engine.apply(e.event)
                after, n = batch[-1].seq, n + len(batch)
            return n

        t0 = time.perf_counter()
        snap = store.latest_snapshot()
        assert snap is not None
        by_snapshot = Engine(spec, state=HallState.from_dict(spec, snap[1]))
        tail = replay(by_snapshot, snap[0])
        snap_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = Engine(spec)
        n = replay(full, 0)
        full_s = time.perf_counter() - t0
    finally:
        store.close()
    same = json.dumps(full.state.to_dict(), sort_keys=True) == json.dumps(
        by_snapshot.state.to_dict(), sort_keys=True
    )
    return {"snap_s": snap_s, "tail": tail, "full_s": full_s, "events": n, "same": same}


def cold_start(args: argparse.Namespace, url: str, clock: str, daemon: bool) -> dict[str, float]:
    import subprocess

    cmd = [
        sys.executable,
        __file__,
        "--child",
        url,
        "--clock",
        clock,
        "--counters",
        str(args.counters),
        "--services",
        str(args.services),
    ]
    if daemon:
        cmd.append("--daemon-imports")
    t0 = time.monotonic()
    done = subprocess.run([*cmd, "--t0", repr(t0)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the child failed ({done.returncode}):\n{done.stderr}")
    out: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    out["exited_s"] = time.monotonic() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--counters", type=int, default=50)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=500, help="events per append while building")
    p.add_argument("--runs", type=int, default=5, help="cold starts per series")
    p.add_argument("--db", type=Path, default=None, help="keep the history here (reused if there)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--clock", help=argparse.SUPPRESS)
    p.add_argument("--daemon-imports", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.days, args.runs = min(args.days, 2), min(args.runs, 2)

    import statistics
    import tempfile

    from hall_daemon.store import Store

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="hall_bench_")
        path = Path(tmp.name) / "hall.db"
    else:
        path = args.db.expanduser().absolute()
    url = Store.sqlite_url(path)
    meta = path.with_suffix(".clock")
    try:
        if path.exists() and meta.exists():
            clock = meta.read_text().strip()
            print(f"recovery_bench: reusing the history in {path}")
        else:
            if path.exists():
                sys.exit(f"{path} exists but was not built by this script; remove it first")
            t0 = time.perf_counter()
            clock = build(url, args.days, args.counters, args.services, args.seed, args.batch)
            meta.write_text(clock + "\n")
            print(
                f"recovery_bench: built {args.days} days of history for a "
                f"{args.counters}-counter hall in {time.perf_counter() - t0:.1f} s (not measured)"
            )
        f = db_facts(path)
        print(
            f"  events {f['events']:,} (seq 1..{f['last_seq']:,}, {f['first'][:10]} to "
            f"{f['final'][:10]}), db size {f['size_mib']:.1f} MiB, outbox rows {f['outbox']:,}, "
            f"snapshots kept {f['snapshots']}"
        )
        print(
            f"  latest snapshot at seq {f['snapshot_seq']:,}: {f['snapshot_bytes'] / 1024:.0f} KiB "
            f"of JSON; events to replay after it: {f['replay']:,}"
        )

        print(f"\ncold starts: the hall's clock at {clock}, {args.runs} runs per series")
        print(f"{'seconds':<50}{'median':>8}{'max':>8}   runs")
        worst = 0.0
        for daemon, label in ((False, "Hall+Store"), (True, "+ daemon imports")):
            runs = [cold_start(args, url, clock, daemon) for _ in range(args.runs)]
            if any(r["seq"] != f["last_seq"] for r in runs):
                sys.exit(f"recovered to the wrong seq: {runs}")
            for key, what in (
                ("to_recovered_s", "process spawn -> recovered"),
                ("imports_s", "  of which interpreter + imports"),
                ("start_s", "  of which Hall.start() alone"),
            ):
                v = [r[key] for r in runs]
                print(
                    f"{label + ': ' + what:<50}{statistics.median(v):>8.3f}{max(v):>8.3f}   "
                    + " ".join(f"{x:.3f}" for x in v)
                )
            worst = max(worst, statistics.median(r["to_recovered_s"] for r in runs))
        r = replay_check(url, args.counters, args.services)
        print(
            f"\nin-process recovery, snapshot + {r['tail']:,} events: {r['snap_s']:.3f} s; "
            f"full replay of all {r['events']:,} events without a snapshot: {r['full_s']:.2f} s "
            f"({r['events'] / r['full_s']:,.0f} events/s)"
        )
        print(
            "state after snapshot + tail equals state after full replay: "
            + ("yes" if r["same"] else "NO (a recovery bug: snapshot and log disagree)")
        )
        verdict = "MET" if worst <= TARGET_S else "NOT MET"
        print(
            f"\ntarget cold start + recovery <= {TARGET_S:g} s ({args.days} days, "
            f"{args.counters} counters): {verdict} (worst median {worst:.3f} s)"
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()

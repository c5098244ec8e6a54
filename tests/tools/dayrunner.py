"""A scripted hall day through the real runtime (Hall + Store), for the crash-recovery test.

Prints `RECOVERED <seq> <digest>` once the state is rebuilt, then `ACK <i> <first> <last>`
or `REFUSED <i> <slug>` for each command of the script from --start on, each line flushed
only after the command's events are committed. The test kills this process with SIGKILL at
random moments and restarts it where the acknowledgements stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hall_daemon import commands as c
from hall_daemon.config import load_config
from hall_daemon.hall import Hall
from hall_daemon.model import DomainError, HallSpec
from hall_daemon.state import HallState
from hall_daemon.store import Store

REPO = Path(__file__).resolve().parents[2]


def spec() -> HallSpec:
    return load_config(REPO / "config.yaml").to_spec()


def digest(state: HallState) -> str:
    blob = json.dumps(state.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def script(seed: int, n: int, hall: HallSpec) -> list[c.Command]:
    """A busy day and the start of the next: the same list for the same seed, every run."""
    rnd = random.Random(seed)
    tz = ZoneInfo(hall.timezone)
    t = datetime(2026, 11, 27, 8, 0, tzinfo=tz)
    services = [s.code for s in hall.services]
    counters = [k.id for k in hall.counters]
    out: list[c.Command] = []
    for i in range(n):
        t += timedelta(seconds=rnd.randint(1, 90))
        k = rnd.choice(counters)
        r = rnd.random()
        cmd: c.Command
        if r < 0.42:
            cmd = c.TakeTicket(
                t, rnd.choice(services), f"tok-{seed}-{i}", priority=rnd.random() < 0.1
            )
        elif r < 0.67:
            cmd = c.CallNext(t, k)
        elif r < 0.72:
            cmd = c.Serving(t, k)
        elif r < 0.77:
            cmd = c.Done(t, k)
        elif r < 0.81:
            cmd = c.Recall(t, k)
        elif r < 0.84:
            cmd = c.NoShow(t, k)
        elif r < 0.86:
            cmd = c.Suspend(t, k)
        elif r < 0.88:
            cmd = c.Resume(t, k)
        elif r < 0.91:
            cmd = c.Transfer(t, k, rnd.choice(services))
        elif r < 0.93:
            cmd = c.TogglePause(t, k)
        elif r < 0.97:
            cmd = c.Rate(t, k, rnd.randint(1, 5))
        else:
            cmd = c.CallNumber(t, k, str(rnd.randint(1, 40)))
        out.append(cmd)
    return out


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--commands", type=int, default=6000)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--snapshot-every", type=int, default=200)
    args = p.parse_args()
    hall_spec = spec()
    cmds = script(args.seed, args.commands, hall_spec)
    first_at = cmds[min(args.start, len(cmds) - 1)].at
    hall = Hall(
        hall_spec, Store(args.db), snapshot_every=args.snapshot_every, clock=lambda: first_at
    )
    await hall.start()
    print(f"RECOVERED {hall.store.last_seq()} {digest(hall.state)}", flush=True)
    for i in range(args.start, len(cmds)):
        try:
            stored = await hall.submit(cmds[i])
        except DomainError as exc:
            print(f"REFUSED {i} {exc.slug}", flush=True)
            continue
        first, last = (stored[0].seq, stored[-1].seq) if stored else (0, 0)
        print(f"ACK {i} {first} {last}", flush=True)
    await hall.stop()
    print("FINISHED", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())

"""Kill -9 a real hall process at random moments of a scripted day; nothing is lost or doubled.

Each restart must recover exactly the state that replaying its own event log implies, every
acknowledged command must be in the log, and no ticket may be issued twice even though the
command that was in flight at the kill is sent again after the restart.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hall_daemon.engine import Engine
from hall_daemon.events import TICKET_ISSUED
from hall_daemon.store import Store

sys.path.insert(0, str(Path(__file__).parent / "tools"))
import dayrunner

pytestmark = pytest.mark.service

COMMANDS = 6000
KILLS = 12
TERMINAL = {"ticket.done", "ticket.no_show", "ticket.cancelled"}


def start_runner(db: str, start: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(dayrunner.__file__)),
            *("--db", db, "--commands", str(COMMANDS), "--start", str(start)),
            *("--snapshot-every", "150"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(dayrunner.REPO)},
    )


def replay_digest(db: str, upto: int) -> str:
    store = Store(db)
    store.open()
    try:
        engine = Engine(dayrunner.spec())
        for e in store.events_after(0):
            if e.seq > upto:
                break
            engine.apply(e.event)
        return dayrunner.digest(engine.state)
    finally:
        store.close()


def test_kill_minus_nine_during_a_day_loses_and_doubles_nothing(tmp_path: Path) -> None:
    db = Store.sqlite_url(tmp_path / "hall.db")
    rnd = random.Random(7)
    acked: dict[int, tuple[int, int]] = {}  # command index -> (first seq, last seq)
    recoveries: list[tuple[int, str]] = []
    start, kills, finished = 0, 0, False
    while not finished:
        proc = start_runner(db, start)
        assert proc.stdout is not None
        kill_after = rnd.uniform(0.05, 0.6) if kills < KILLS else None
        t0 = time.monotonic()
        for line in proc.stdout:
            word, *rest = line.split()
            if word == "RECOVERED":
                recoveries.append((int(rest[0]), rest[1]))
            elif word == "ACK":
                acked[int(rest[0])] = (int(rest[1]), int(rest[2]))
                start = int(rest[0]) + 1
            elif word == "REFUSED":
                start = int(rest[0]) + 1
            elif word == "FINISHED":
                finished = True
            if kill_after is not None and time.monotonic() - t0 > kill_after:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
        proc.wait(timeout=30)
        # The command in flight at the kill is sent again: its retry must not double anything.
        assert finished or proc.returncode == -signal.SIGKILL

    assert kills == KILLS
    store = Store(db)
    store.open()
    log = store.events_after(0)
    store.close()

    # seq grows by exactly one, ids are unique.
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert len({e.id for e in log}) == len(log)
    by_seq = {e.seq: e for e in log}
    # Every acknowledged command's events are in the log.
    for first, last in acked.values():
        if first:
            assert all(s in by_seq for s in range(first, last + 1))
    # No ticket was issued twice, although retried takes reused their token after each kill.
    tokens = Counter(e.data["token"] for e in log if e.type == TICKET_ISSUED)
    assert tokens and max(tokens.values()) == 1
    # Every ticket ends exactly once (the next day's first command cancels what was left).
    token_of: dict[str, str] = {}
    ends: Counter[str] = Counter()
    for e in log:
        if e.type == "hall.day_started":
            token_of = {}
        elif e.type == TICKET_ISSUED:
            token_of[e.data["number"]] = e.data["token"]
        elif e.type in TERMINAL:
            ends[token_of[e.data["number"]]] += 1
    issued_before_last_day = {t for t in tokens if t not in token_of.values()}
    assert ends and max(ends.values()) == 1
    assert issued_before_last_day <= set(ends)
    # Each restart recovered exactly the state its log implied at that moment.
    assert len(recoveries) == KILLS + 1
    for seq, recovered in recoveries:
        assert recovered == replay_digest(db, seq), f"recovery at seq {seq} differs from the log"
    # The day went on past the kills: most commands were acknowledged.
    assert len(acked) > COMMANDS // 2

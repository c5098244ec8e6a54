"""systemd's watchdog, fed only while the hall is healthy.

Each round checks three things before sending WATCHDOG=1: the event loop is not lagging,
the store takes a write on its I/O worker within a timeout, and the hall's writer task is
alive with its last commit good and its engine not failing command after command. If any
check fails we log why and skip the pet, so systemd restarts us after WatchdogSec instead
of keeping a hall that silently takes no tickets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

from .hall import Hall
from .systemd import notify

log = logging.getLogger(__name__)

LOOP_LAG_LIMIT_S = 5.0
STORE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WatchdogPlan:
    interval_s: float  # how often to pet: half of systemd's WatchdogSec


def watchdog_plan(environ: dict[str, str] | None = None) -> WatchdogPlan | None:
    """Read $WATCHDOG_USEC / $WATCHDOG_PID as sd_watchdog_enabled() does; None if off."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent)
    return WatchdogPlan(interval_s=int(usec) / 2_000_000)


def verdict(lag_s: float, writer_problem: str | None) -> str | None:
    """What the loop and the writer say, before the store is asked: why not to pet, or None."""
    if lag_s > LOOP_LAG_LIMIT_S:
        return f"event loop lagged {lag_s:.1f} s"
    return writer_problem


async def health_problem(hall: Hall, lag_s: float) -> str | None:
    """Why the hall is not healthy right now, or None."""
    problem = verdict(lag_s, hall.problem())
    if problem is not None:
        return problem
    try:
        # A real write, on the store's own thread: a locked or read-only database shows here.
        stamp = str(int(time.time()))
        async with asyncio.timeout(STORE_TIMEOUT_S):
            await hall.io(hall.store.set_meta, "watchdog_at", stamp)
    except TimeoutError:
        return f"the store did not answer within {STORE_TIMEOUT_S:.0f} s"
    except Exception as exc:  # any store failure means: do not pet
        return f"the store refused a write: {exc.__class__.__name__}: {exc}"
    return None


async def run_watchdog(hall: Hall, plan: WatchdogPlan) -> None:
    """Pet systemd every plan.interval_s while healthy; log each change of health once."""
    loop = asyncio.get_running_loop()
    last_problem: str | None = None
    log.info("watchdog: petting systemd every %.1f s while healthy", plan.interval_s)
    while True:
        expected = loop.time() + plan.interval_s
        await asyncio.sleep(plan.interval_s)
        lag = max(0.0, loop.time() - expected)
        problem = await health_problem(hall, lag)
        if problem is None:
            notify("WATCHDOG=1")
            if last_problem is not None:
                log.warning("watchdog: healthy again, petting resumed")
        elif problem != last_problem:
            log.error("watchdog: not petting systemd: %s", problem)
        last_problem = problem

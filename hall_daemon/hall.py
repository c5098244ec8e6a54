"""The hall at run time: the single writer between adapters, the engine, the store and the bus.

Adapters `submit` commands. One task takes them in order, runs them through the engine,
commits their events (and now and then a snapshot) in one transaction on the store's own
thread, and only then hands the committed events to the bus and answers the adapters.
Commands that arrive while a commit is in flight are committed together in the next one
(group commit): each still gets its answer only once its events are durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from . import commands as c
from .bus import Bus
from .engine import DAY_STARTED, Engine
from .events import Event, StoredEvent
from .forecast import Forecaster, HallForecaster, make_forecaster
from .model import DomainError, HallSpec
from .state import HallState
from .store import Store, StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 256
# Internal errors in a row after which the hall says it is broken: one odd command is a bug
# to log, but a run of them means no command gets through (and systemd should restart us).
ENGINE_FAILURE_LIMIT = 3
WARM_ROW_DAYS = 7  # days of history the forecaster's trees are trained on at start


class HallUnavailable(DomainError):
    """The command could not be made durable; nothing was issued and the caller may retry."""

    code = 500
    slug = "store-unavailable"


@dataclass
class _Pending:
    command: c.Command
    future: asyncio.Future[list[StoredEvent]]


@dataclass
class WriterStats:
    commands: int = 0
    refused: int = 0
    events: int = 0
    commits: int = 0
    commit_failures: int = 0
    last_commit_s: float = 0.0
    last_commit_ok: bool = True
    last_commit_error: str = ""
    engine_failures: int = 0
    engine_failures_in_a_row: int = 0
    last_engine_error: str = ""
    recovery_error: str = ""  # set while the state could not be rebuilt from the store

    def engine_ran(self) -> None:
        self.engine_failures_in_a_row = 0

    def engine_failed(self, exc: BaseException) -> None:
        self.engine_failures += 1
        self.engine_failures_in_a_row += 1
        self.last_engine_error = _describe(exc)

    def commit_failed(self, exc: BaseException) -> None:
        self.commit_failures += 1
        self.last_commit_ok = False
        self.last_commit_error = _describe(exc)

    def problem(self) -> str | None:
        """Why the writer cannot take commands now, judged by what it saw; None if it can."""
        if self.recovery_error:
            return f"could not rebuild the hall from the store: {self.recovery_error}"
        if not self.last_commit_ok:
            return f"the last commit failed: {self.last_commit_error}"
        if self.engine_failures_in_a_row >= ENGINE_FAILURE_LIMIT:
            return (
                f"the engine failed on the last {self.engine_failures_in_a_row} commands: "
                f"{self.last_engine_error}"
            )
        return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class Hall:
    def __init__(
        self,
        spec: HallSpec,
        store: Store,
        *,
        snapshot_every: int = 1000,
        forecaster: Forecaster | None = None,
        clock: Callable[[], datetime] | None = None,
        warm_days: int = 28,
    ) -> None:
        self.spec = spec
        self.store = store
        self.bus = Bus()
        self.snapshot_every = snapshot_every
        # The learned forecaster unless a test or a simulation brings its own.
        self.forecaster: Forecaster = forecaster or make_forecaster(spec, fit_in_background=True)
        self.engine = Engine(spec, forecaster=self.forecaster)
        self.warm_days = warm_days
        self._warm_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.boot = 0
        self.stats = WriterStats()
        self._tz = spec.tz()
        self._clock = clock or (lambda: datetime.now(self._tz))
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._since_snapshot = 0
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store and rebuild the hall's state from it; then take commands."""
        started = time.perf_counter()
        await self.io(self.store.open)
        self.engine = await self.io(self._recover)
        self.boot = await self.io(self.store.next_boot)
        self._task = asyncio.get_running_loop().create_task(self._write_loop(), name="hall-writer")
        self._accepting = True
        log.info(
            "hall recovered to seq %d in %.3f s (boot %d)",
            self.store.last_seq(),
            time.perf_counter() - started,
            self.boot,
        )
        self._start_warm()
        await self.submit(c.Tick(self.now()))  # close yesterday if the daemon slept through it

    async def stop(self) -> None:
        """Stop taking commands, finish those already taken, then close the store."""
        self._accepting = False
        self._stopping = True
        if self._warm_task is not None:
            await asyncio.gather(self._warm_task, return_exceptions=True)
        if self._task is not None:
            while self._queue:
                await asyncio.sleep(0.01)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.bus.drain(timeout=2.0)
        await self.bus.close()
        await self.io(self.store.close)
        self._writer_thread.shutdown(wait=True)

    def now(self) -> datetime:
        """The hall's local time; simulations and tests give the hall a clock of their own."""
        return self._clock()

    @property
    def state(self) -> HallState:
        """Read-only view for outputs; only the writer task changes it."""
        return self.engine.state

    @property
    def healthy(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """Why the hall cannot take commands now (for /healthz, the watchdog, the status
        page), or None."""
        task = self._task
        if task is None:
            return "the hall writer is not running (starting or stopped)"
        if task.done():
            error = None if task.cancelled() else task.exception()
            return "the hall writer stopped" + (f": {_describe(error)}" if error else "")
        return self.stats.problem()

    # -- commands --------------------------------------------------------------------------
    async def submit(self, command: c.Command) -> list[StoredEvent]:
        """Run a command; return its committed events. Raises DomainError if it cannot apply."""
        if not self._accepting:
            raise HallUnavailable("the hall is not taking commands (starting or stopping)")
        if self._task is not None and self._task.done():
            raise HallUnavailable("the hall writer stopped; see the log")
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(command, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                try:
                    await self._run_batch()
                except Exception as exc:
                    # Outside the engine (the bus, a snapshot): the writer must live on, or
                    # every later command would wait for ever.
                    log.exception("the hall writer failed on a batch; rebuilding the hall")
                    self.stats.engine_failed(exc)
                    await self._rebuild()

    async def _run_batch(self) -> None:
        if self.stats.recovery_error and not await self._rebuild():
            self._refuse_queued()
            return
        batch: list[tuple[_Pending, int, int, DomainError | None]] = []
        events: list[Event] = []
        broken = False
        while self._queue and len(batch) < MAX_BATCH:
            p = self._queue.popleft()
            start = len(events)
            try:
                events.extend(self.engine.execute(p.command))
                batch.append((p, start, len(events), None))
                self.stats.engine_ran()
            except DomainError as exc:
                events.extend(exc.events)
                batch.append((p, start, start, exc))
                self.stats.engine_ran()
            except Exception as exc:
                # An engine bug: its state may hold half a command. Commit what came before,
                # refuse this one, and rebuild the state from the store.
                log.exception("engine failed on %r", p.command)
                self.stats.engine_failed(exc)
                batch.append((p, start, start, HallUnavailable("internal error, see the log")))
                broken = True
                break
        self.stats.commands += len(batch)
        try:
            stored = await self._commit(events)
        except BaseException:
            for p, *_ in batch:  # nobody may wait for ever, whatever the commit did
                if not p.future.done():
                    p.future.set_exception(HallUnavailable("internal error, see the log"))
            raise
        if stored is None or broken:
            await self._rebuild()
        self._answer(batch, stored)

    def _answer(
        self,
        batch: list[tuple[_Pending, int, int, DomainError | None]],
        stored: list[StoredEvent] | None,
    ) -> None:
        for p, start, end, error in batch:
            if p.future.done():  # the submitter went away (cancelled); its events still stand
                continue
            if stored is None:
                p.future.set_exception(HallUnavailable("could not store the command; try again"))
            elif error is not None:
                self.stats.refused += 1
                p.future.set_exception(error)
            else:
                p.future.set_result(stored[start:end])

    async def _rebuild(self) -> bool:
        """The state from the store again; while that fails, the hall refuses every command
        (and says why) rather than run on a state that may hold half a command."""
        try:
            self.engine = await self.io(self._recover)
        except Exception as exc:
            log.exception("could not rebuild the hall from the store")
            self.stats.recovery_error = _describe(exc)
            return False
        self.stats.recovery_error = ""
        return True

    def _refuse_queued(self) -> None:
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(HallUnavailable("the hall is rebuilding; try again"))

    async def _commit(self, events: list[Event]) -> list[StoredEvent] | None:
        if not events:
            return []
        snapshot: dict[str, Any] | None = None
        self._since_snapshot += len(events)
        if self._since_snapshot >= self.snapshot_every or any(
            e.type == DAY_STARTED for e in events
        ):
            snapshot = self.engine.state.to_dict()  # taken here: the state is still this batch's
        started = time.perf_counter()
        try:
            stored = await self.io(
                self.store.append, events, (lambda _seq: snapshot) if snapshot else None
            )
        except StoreError as exc:
            self.stats.commit_failed(exc)
            log.exception(
                "could not commit %d events; rebuilding the hall from the store", len(events)
            )
            return None
        if snapshot is not None:
            self._since_snapshot = 0
        self.stats.commits += 1
        self.stats.events += len(stored)
        self.stats.last_commit_s = time.perf_counter() - started
        self.stats.last_commit_ok = True
        self._learn(stored)
        self.bus.publish(stored)
        return stored

    # -- the forecaster's learning ---------------------------------------------------------
    def _learn(self, stored: list[StoredEvent]) -> None:
        """Teach the forecaster what was committed (state after the batch: it only looks
        up tickets and counters the events name, which the batch leaves as they were)."""
        learn = getattr(self.forecaster, "learn", None)
        if learn is None:
            return
        try:
            for e in stored:
                learn(e, self.engine.state)
        except Exception:
            log.exception("the forecaster failed to learn; forecasts may be less accurate")

    def _start_warm(self) -> None:
        """Teach the forecaster the last weeks of history on a thread of its own, so the
        daemon is ready (and forecasting from its priors) at once; swap in when done."""
        f = self.forecaster
        if not isinstance(f, HallForecaster) or self.warm_days <= 0:
            return
        f.begin_warm()
        self._warm_task = asyncio.get_running_loop().create_task(self._warm(f), name="warm")

    async def _warm(self, live: HallForecaster) -> None:
        now = self.now()
        since = now - timedelta(days=self.warm_days)
        fresh = make_forecaster(self.spec)
        started = time.perf_counter()

        def run() -> int:
            events = self.store.iter_events(since=since)
            # The figures from every day; training rows for the trees (a simulation per
            # ticket, the costly part) from the last week: thousands of waits, minutes of CPU
            # at most for a busy hall, not the quarter hour 28 days would take.
            rows_since = now - timedelta(days=min(self.warm_days, WARM_ROW_DAYS))
            return fresh.warm(events, lambda: self._stopping, rows_since)

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="forecast-warm") as pool:
                last = await asyncio.get_running_loop().run_in_executor(pool, run)
        except Exception:
            log.exception("could not learn from history; forecasting from the priors")
            return
        if self._stopping:
            return
        live.absorb(fresh, self.engine.state, last)
        log.info(
            "forecaster learned %d days of history in %.1f s",
            self.warm_days,
            time.perf_counter() - started,
        )

    # -- recovery --------------------------------------------------------------------------
    def _recover(self) -> Engine:
        """Latest snapshot, then every event after it: the state the log implies."""
        snap = self.store.latest_snapshot()
        state = HallState.from_dict(self.spec, snap[1]) if snap else None
        engine = Engine(self.spec, forecaster=self.forecaster, state=state)
        after = snap[0] if snap else 0
        while batch := self.store.events_after(after, limit=5000):
            for e in batch:
                engine.apply(e.event)
            after = batch[-1].seq
        self._since_snapshot = after - (snap[0] if snap else 0)
        return engine

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Store calls block (fsync): they run on the store's one thread, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

"""What both device protocols share: the link's write, one job runner, health reporting.

A protocol's callbacks (`data_received`, the bus's events) run on the event loop and must
not wait. Work that waits for the hall (a key press becoming a command, a ReportDevice) is
queued as a job; one task runs a port's jobs in arrival order, so a dispenser's replies
come back in the order of its requests and a keypad's presses reach the engine in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from drivers.devices.coalesce import Coalescer
from drivers.devices.health import UNKNOWN, DeviceHealth
from drivers.link import Write
from hall_daemon import commands as c
from hall_daemon.events import StoredEvent
from hall_daemon.model import DomainError
from hall_daemon.quietlog import OncePer

if TYPE_CHECKING:
    from hall_daemon.config import PortConfig
    from hall_daemon.hall import Hall

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
JOB_QUEUE = 1000
REPORT_INTERVAL_S = 1.0
# Work queued for one device at a time: a clerk presses a key every few seconds, so more is a
# stuck or hostile device, and the others on its bus must not wait behind it.
DEVICE_JOBS = 8


class DevicePort:
    def __init__(self, hall: Hall, config: PortConfig) -> None:
        self.hall = hall
        self.config = config
        self.name = config.name
        self.jobs_dropped = 0
        # For what a device can make happen once per frame.
        self.quiet = OncePer(logging.getLogger(type(self).__module__))
        self._write: Write | None = None
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(JOB_QUEUE)
        self._queued: dict[str, int] = {}  # device id -> its jobs waiting
        self._reported: dict[str, DeviceHealth] = {}
        self._reports = Coalescer[str, tuple[c.DeviceState, str]](
            self._queue_report, REPORT_INTERVAL_S
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._spawn(self._run_jobs, "jobs")
        self.hall.bus.subscribe(f"port:{self.name}", self._on_event, resync=self._on_resync)

    async def stop(self) -> None:
        # The bus has no unsubscribe; the hall's own stop ends the subscription task.
        self._stopped = True
        self._reports.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, run: Callable[[], Awaitable[None]], what: str) -> None:
        """Run a long-lived task; an unexpected exception restarts it after a pause."""

        async def supervised() -> None:
            while True:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("port %s: %s task failed; restarting it", self.name, what)
                    await asyncio.sleep(1.0)

        self._tasks.append(
            asyncio.get_running_loop().create_task(supervised(), name=f"port:{self.name}:{what}")
        )

    # -- LinkProtocol ------------------------------------------------------------------------
    def connection_made(self, write: Write) -> None:
        self._write = write
        self.link_up()

    def connection_lost(self, exc: Exception | None) -> None:
        self._write = None
        self.link_down(exc)

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError

    def link_up(self) -> None:
        """The port (re)opened."""

    def link_down(self, exc: Exception | None) -> None:
        """The port closed; `exc` says why (None: stopped)."""

    @property
    def connected(self) -> bool:
        return self._write is not None

    def send(self, data: bytes) -> bool:
        if self._write is None:
            return False
        self._write(data)
        return True

    # -- jobs --------------------------------------------------------------------------------
    def later(self, job: Job, device: DeviceHealth | None = None) -> bool:
        """Queue `job`; with `device`, only while that device has fewer than DEVICE_JOBS.

        False: dropped (counted and logged), so the caller may refuse at once instead.
        """
        if self._stopped:
            return False
        queued = job if device is None else self._counted(job, device)
        if queued is None:
            return False
        try:
            self._jobs.put_nowait(queued)
        except asyncio.QueueFull:
            if device is not None:
                self._queued[device.id] -= 1
            self._drop("port %s: job queue full; dropping work", self.name)
            return False
        return True

    def _counted(self, job: Job, device: DeviceHealth) -> Job | None:
        queued = self._queued.get(device.id, 0)
        if queued >= DEVICE_JOBS:
            self._drop(
                "port %s: %s %s has %d commands waiting; dropping its next ones",
                self.name,
                device.kind,
                device.id,
                queued,
                kind=("device-jobs", device.id),
            )
            return None
        self._queued[device.id] = queued + 1

        async def counted() -> None:
            self._queued[device.id] -= 1
            await job()

        return counted

    def _drop(self, msg: str, *args: object, kind: Hashable = "jobs-full") -> None:
        self.jobs_dropped += 1
        self.quiet.warning(kind, msg, *args)

    async def _run_jobs(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.quiet.exception("job-failed", "port %s: job failed; going on", self.name)

    async def submit(self, command: c.Command, device: DeviceHealth) -> list[StoredEvent] | None:
        """Run a device's command; a refusal is logged at info and counted, nothing else."""
        try:
            return await self.hall.submit(command)
        except DomainError as exc:
            device.refused += 1
            self.quiet.info(
                ("refused", device.id, exc.slug),
                "port %s: %s %s: %s refused: %s (%s)",
                self.name,
                device.kind,
                device.id,
                type(command).__name__,
                exc,
                exc.slug,
            )
            return None

    # -- health ------------------------------------------------------------------------------
    def report(self, device: DeviceHealth, state: c.DeviceState, detail: str = "") -> None:
        """Tell the hall about a change of a device's state; nothing if it is unchanged.

        At most one report per device per REPORT_INTERVAL_S reaches the log, the latest state
        always last: a device flapping between fault and online, frame after frame, must not
        write an event per frame.
        """
        if (device.state, device.detail) == (state, detail):
            return
        # Set now, not after the commit, so that a burst of frames queues one report, not many.
        device.state, device.detail = state, detail
        self.quiet.info(
            ("state", device.id, state),
            "port %s: %s %s is %s %s",
            self.name,
            device.kind,
            device.id,
            state,
            detail,
        )
        self._reported[device.id] = device
        self._reports.offer(device.id, (state, detail))

    def _queue_report(self, device_id: str, value: tuple[c.DeviceState, str]) -> None:
        device = self._reported[device_id]
        state, detail = value

        async def job() -> None:
            command = c.ReportDevice(
                self.hall.now(), device.id, self.name, device.kind, state, detail
            )
            try:
                await self.hall.submit(command)
            except DomainError as exc:
                self.quiet.info(
                    "report-refused", "port %s: device report refused: %s", self.name, exc
                )
                if (device.state, device.detail) == (state, detail):
                    self._unsure(device)

        if not self.later(job):
            self._unsure(device)

    def _unsure(self, device: DeviceHealth) -> None:
        """The hall may not hold what `device.state` says: its next report gets through."""
        device.state, device.detail = UNKNOWN, ""
        self._reports.forget()

    def initial_state(self, device: DeviceHealth) -> None:
        """Start from what the hall last logged, so a restart does not report it again."""
        known = self.hall.state.devices.get(device.id)
        if known is not None:
            device.state, device.detail = known

    # -- bus -----------------------------------------------------------------------------------
    async def _on_event(self, event: StoredEvent) -> None:
        if not self._stopped:
            self.hall_changed(event)

    async def _on_resync(self) -> None:
        if not self._stopped:
            self.hall_changed(None)

    def hall_changed(self, event: StoredEvent | None) -> None:
        """A committed event (None: resynchronise from the hall's current state)."""

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.name,
            "protocol": self.config.protocol,
            "jobs_dropped": self.jobs_dropped,
        }

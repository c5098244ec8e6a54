"""The composition root: builds the hall from config.yaml and wires every part to it.

Start-up follows the one path backwards: store and recovery first, then the outputs
(subscribers of the bus), then the inputs (web, ports, MQTT commands). Shutdown is the
reverse. Only this module imports from drivers/, display/, broadcast/ and sync/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from broadcast import VoiceHandle, start_voice
from display import DisplayHandle, setup_display
from drivers.devices.dispenser import DispenserPort
from drivers.ports import PortManager, start_ports
from sync import SyncHandle, start_sync

from . import commands as c
from .admin import AdminHandle, AdminHandles, setup_admin
from .checkin_brake import CheckInBrake
from .config import ConfigError, HallConfig
from .connections import FrontDoor, front_door, start_web
from .filemodes import ensure_state_dir
from .hall import Hall
from .model import DomainError
from .reload import apply_reload, read_config
from .store import Store
from .systemd import notify
from .watchdog import run_watchdog, watchdog_plan
from .web import make_app

if TYPE_CHECKING:
    # python-escpos, Pillow and qrcode come with it: imported only for a hall with a printer.
    from drivers.printer import PrinterHandle

log = logging.getLogger(__name__)

TICK_S = 15.0  # how often the clock is offered to the engine (day end, timeouts)
HOUSEKEEPING_S = 3600.0
CLOCK_ENV = "HALL_DAEMON_CLOCK"
_CLOCK = re.compile(r"^(\d+(?:\.\d*)?)=(\S+)x(\d+(?:\.\d*)?)$")


def warped_clock(value: str, tz: tzinfo) -> Callable[[], datetime]:
    """`HALL_DAEMON_CLOCK=<unix time>=<ISO time>x<speed>`: the hall's clock read <ISO time>
    at <unix time> and runs <speed> times as fast as real time since. For simulations and
    soak tests (a compressed day that includes the day end), never for a real hall. Every
    daemon process given the same value shares one continuous clock, across kill -9."""
    m = _CLOCK.match(value.strip())
    if m is None:
        raise ValueError(f"{CLOCK_ENV}={value!r}: expected <unix time>=<ISO time>x<speed>")
    anchor, speed = float(m[1]), float(m[3])
    start = datetime.fromisoformat(m[2])
    if start.tzinfo is None:
        start = start.replace(tzinfo=tz)
    return lambda: (start + timedelta(seconds=(time.time() - anchor) * speed)).astimezone(tz)


async def _every(period: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
    """Run `job` periodically; a failure is logged and retried next period, never fatal."""
    while True:
        await asyncio.sleep(period)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except DomainError as exc:
            log.warning("%s refused: %s", name, exc)
        except Exception:
            log.exception("%s failed; will try again", name)


class Daemon:
    def __init__(self, config: HallConfig) -> None:
        self.config = config
        ensure_state_dir(config.state_dir)
        spec = config.to_spec()
        warp = os.environ.get(CLOCK_ENV)
        self.hall = Hall(
            spec,
            Store(config.database_url()),
            snapshot_every=config.storage.snapshot_every,
            clock=warped_clock(warp, spec.tz()) if warp else None,
        )
        if warp:
            log.warning("%s=%s: the hall runs on a simulated clock", CLOCK_ENV, warp)
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.front_door: FrontDoor | None = None
        self.ports: PortManager | None = None
        self.voice: VoiceHandle | None = None
        self.printer: PrinterHandle | None = None
        self.display: DisplayHandle | None = None
        self.sync: SyncHandle | None = None
        self.admin: AdminHandle | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        await self.hall.start()
        # Outputs first, so they hear every event the inputs cause.
        self.voice = await start_voice(self.hall, self.config)
        if self.config.printer is not None:
            # Only here: a hall without a printer pays no memory for python-escpos and Pillow.
            from drivers.printer import start_printer

            self.printer = await start_printer(self.hall, self.config)
        if self.printer is not None and self.voice is not None:
            self.printer.on_failed = self.voice.say_number  # no receipt: hear the number
        checkin_brake = CheckInBrake(self.config.kiosk_limits)  # kiosks and dispensers alike
        self.ports = await start_ports(self.hall, self.config, checkin_brake=checkin_brake)
        for port in self.ports.ports.values():
            if isinstance(port.device, DispenserPort):
                port.device.receipts = self.printer  # before its first reply can be committed
                port.device.say_number = self.voice.say_number if self.voice else None
        # The outbox pump and retained state never wait for the broker: start returns at once.
        self.sync = await start_sync(self.hall, self.config)
        app = make_app(self.hall)
        self.display = setup_display(
            app, self.hall, self.config, receipts=self.printer, checkin_brake=checkin_brake
        )
        if self.printer is not None:
            from drivers.printer import add_receipt_routes

            add_receipt_routes(app, self.printer)
        door = front_door(self.config.web.limits)
        # Last of the routes: from here on everything but the public pages needs a login.
        handles = AdminHandles(
            ports=self.ports,
            sync=self.sync,
            voice=self.voice,
            display=self.display,
            printer=self.printer,
            web=door,
        )
        self.admin = setup_admin(app, self.hall, self.config, handles)
        self._runner, self.front_door = await start_web(app, self.config.web, door)
        log.info("web server on http://%s:%d/", self.config.web.host, self.config.web.port)
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(_every(TICK_S, "clock tick", self._tick), name="tick"),
            loop.create_task(_every(HOUSEKEEPING_S, "housekeeping", self._housekeeping)),
        ]
        plan = watchdog_plan()
        if plan is not None:
            self._tasks.append(loop.create_task(run_watchdog(self.hall, plan), name="watchdog"))
        notify("READY=1")

    def reload(self) -> None:
        """SIGHUP: swap in screens, notice and voice wording; log what needs a restart."""
        source = self.config.source
        if source is None:
            log.warning("reload: the config was not read from a file; nothing to re-read")
            return
        # Reading a file takes up to a few seconds (a big or hostile one): on a thread, so
        # the keypads, dispensers and screens are answered meanwhile; one reload at a time.
        task = asyncio.get_running_loop().create_task(self._reload(source), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, source: Path) -> None:
        async with self._reload_lock:
            new = await asyncio.to_thread(read_config, source)
            if new is not None:
                self.config = apply_reload(self.config, new, [self.display, self.voice])

    async def _tick(self) -> None:
        await self.hall.submit(c.Tick(self.hall.now()))

    async def _housekeeping(self) -> None:
        cutoff = self.hall.now() - timedelta(days=self.config.storage.outbox_retention_days)
        pruned = await self.hall.io(self.hall.store.prune, cutoff)
        if pruned:
            log.info("housekeeping: pruned %d acknowledged outbox rows", pruned)

    async def stop(self) -> None:
        notify("STOPPING=1")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.ports is not None:
            await self.ports.stop()
        if self.sync is not None:
            await self.sync.stop()  # publishes `stopped`; needs the store, so before hall.stop()
        if self.printer is not None:
            await self.printer.stop()
        if self.voice is not None:
            await self.voice.stop()
        await self.hall.stop()
        log.info("stopped cleanly")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.start()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()


def run(config: HallConfig) -> None:
    if config.printer is not None:
        from drivers.printer import check_profile

        try:
            check_profile(config)  # the printer profile lives in python-escpos, not in config.py
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            raise SystemExit(2) from None
    asyncio.run(Daemon(config).run_until_signalled())

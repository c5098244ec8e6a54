"""The receipt printer: a bounded print queue, one worker thread, faults reported to the hall.

The event loop only decides what to print and builds the `Receipt` from the hall's state;
every python-escpos call (laying out the bytes, writing, DLE EOT) happens on the printer's
own thread, one job at a time, so a slow or absent printer never delays a dispenser's
`TICKET` reply or the kiosk's answer. A job that cannot print fails at once: the ticket
stays issued, and the voice says its number so the applicant hears it anyway.

Between jobs the thread polls the printer's status every `poll_s` (reconnecting when it
was gone) and before and after each job, and reports changes as `ReportDevice`:
device.fault (offline, cover-open, paper-out, printer-error) and device.online (with
`paper-low` while the roll is nearly out).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hall_daemon import commands as c
from hall_daemon.config import ConfigError, HallConfig, PrinterConfig
from hall_daemon.events import REPRINT_REQUESTED, StoredEvent
from hall_daemon.model import DomainError
from hall_daemon.receipts import Receipt
from hall_daemon.state import WAITING, Ticket

from .connection import Connection, PrinterFault, Status
from .escpos_out import UnknownProfile, load_profile, receipt_bytes
from .layout import build_layout
from .preview import png

if TYPE_CHECKING:
    from hall_daemon.hall import Hall

log = logging.getLogger(__name__)

DEVICE = "printer"  # the device name of device.* events and the status page
QUEUE_SIZE = 20  # receipts waiting; more means the printer is stuck: fail fast instead
POLL_S = 5.0


@dataclass
class _Job:
    receipt: Receipt
    why: str  # dispenser, kiosk, reprint
    done: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class PrinterHandle:
    """The running printer. Create it with `start_printer`; it is the kiosk's ReceiptPrinter."""

    def __init__(
        self,
        hall: Hall,
        config: HallConfig,
        *,
        poll_s: float = POLL_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if config.printer is None:
            raise ValueError("config.yaml has no printer section")
        self.hall = hall
        self.config = config
        self.printer: PrinterConfig = config.printer
        check_profile(config)
        self.connection = Connection(self.printer)
        self.poll_s = poll_s
        self.on_failed: Callable[[str], object] | None = None  # the voice says the number
        self._jobs: queue.Queue[_Job] = queue.Queue(queue_size)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._pending: set[concurrent.futures.Future[None]] = set()
        self.state, self.detail = hall.state.devices.get(DEVICE, ("unknown", ""))
        self.printed = 0
        self.failed = 0
        self.dropped = 0
        self.last_fault = ""
        self.printing: str | None = None

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.hall.bus.subscribe("printer", self._on_event)
        self._thread = threading.Thread(target=self._run, name="printer", daemon=True)
        self._thread.start()
        log.info("printer: %s, profile %s", self.connection.name, self.printer.profile)

    async def stop(self) -> None:
        self._stopping.set()
        await self.hall.bus.unsubscribe("printer")
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)
        while True:  # whatever was still queued will not print now
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            job.done.set_exception(PrinterFault("stopped"))
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=2.0)

    # -- what others call ------------------------------------------------------------------
    async def print_receipt(self, receipt: Receipt) -> None:
        """The kiosk's hook: print and wait; raises PrinterFault if it did not print."""
        await asyncio.wrap_future(self._submit(receipt, "kiosk"))

    def print_ticket(self, ref: str, why: str = "dispenser") -> bool:
        """Queue the receipt of today's ticket `ref` (number or token); never waits.
        False if there is no such ticket."""
        ticket = self.hall.state.tickets.get(ref) or self.hall.state.by_token.get(ref)
        if ticket is None:
            return False
        self._submit(self.receipt_for(ticket), why)
        return True

    def receipt_for(self, ticket: Ticket, kiosk: str = "") -> Receipt:
        state, now = self.hall.state, self.hall.now()
        spec = state.services[ticket.service]
        ahead, forecast = 0, {"wait_s": 0, "p10_s": 0, "p90_s": 0}
        if ticket.state == WAITING:
            ahead = state.ahead_of(ticket)
            forecast = self.hall.forecaster(state, ticket.service, ahead, now)
        return Receipt(
            number=ticket.number,
            service=ticket.service,
            service_name=spec.name,
            service_name_en=spec.name_en,
            priority=ticket.priority,
            appointment=ticket.appointment,
            ahead=ahead,
            wait_s=int(forecast["wait_s"]),
            p10_s=int(forecast["p10_s"]),
            p90_s=int(forecast["p90_s"]),
            issued_at=ticket.issued_at,
            qr_url=self.config.receipt_qr_url().replace("{token}", ticket.token),
            hall_name=self.config.hall.name,
            hall_name_en=self.config.hall.name_en,
            kiosk=kiosk,
        )

    def sample_receipt(self) -> Receipt:
        s = self.config.services[0]
        return Receipt(
            number=f"{s.prefix}001",
            service=s.code,
            service_name=s.name,
            service_name_en=s.name_en,
            priority=False,
            appointment=None,
            ahead=5,
            wait_s=900,
            p10_s=480,
            p90_s=1500,
            issued_at=self.hall.now(),
            qr_url=self.config.receipt_qr_url().replace("{token}", "SAMPLE-not-a-ticket"),
            hall_name=self.config.hall.name,
            hall_name_en=self.config.hall.name_en,
            kiosk="sample",
        )

    def render_png(self, receipt: Receipt) -> bytes:
        """The receipt as the PNG preview (blocking: call it off the event loop)."""
        layout = build_layout(receipt, paper_mm=self.printer.paper_mm, notice=self.printer.notice)
        return png(layout)

    def preview_png(self, number: str) -> bytes:
        """Today's ticket `number` as the PNG preview; KeyError if there is none."""
        return self.render_png(self.receipt_for(self.hall.state.tickets[number]))

    def stats(self) -> dict[str, Any]:
        return {
            "device": DEVICE,
            "connection": self.connection.name,
            "profile": self.printer.profile,
            "paper_mm": self.printer.paper_mm,
            "chinese": self.printer.chinese,
            "ok": self.state == "online",
            "state": self.state,
            "detail": self.detail,
            "last_fault": self.last_fault,
            "printed": self.printed,
            "failed": self.failed,
            "dropped": self.dropped,
            "queue": self._jobs.qsize(),
            "printing": self.printing,
        }

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued receipt printed or failed (tests, shutdown)."""
        pending = [asyncio.wrap_future(f) for f in list(self._pending)]
        if not pending:
            return True
        done, still = await asyncio.wait(pending, timeout=timeout)
        for f in done:
            if not f.cancelled():
                f.exception()  # a failed print is reported elsewhere; here it is only waited for
        return not still

    # -- the loop side -----------------------------------------------------------------------
    async def _on_event(self, event: StoredEvent) -> None:
        if event.type == REPRINT_REQUESTED and not self._stopping.is_set():
            number = str(event.data.get("number", ""))
            if not self.print_ticket(number, "reprint"):
                log.info("printer: cannot reprint %s: no such ticket today", number)

    def _submit(self, receipt: Receipt, why: str) -> concurrent.futures.Future[None]:
        job = _Job(receipt, why)
        if self._stopping.is_set():
            job.done.set_exception(PrinterFault("stopped"))
        else:
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                job.done.set_exception(PrinterFault("queue-full"))
        self._pending.add(job.done)
        job.done.add_done_callback(lambda f: self._finished(job, f))
        return job.done

    def _finished(self, job: _Job, future: concurrent.futures.Future[None]) -> None:
        # Runs on the printer thread (or here); the loop does the rest.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: shutting down
                loop.call_soon_threadsafe(self._after, job, future)

    def _after(self, job: _Job, future: concurrent.futures.Future[None]) -> None:
        self._pending.discard(future)
        exc = PrinterFault("timed-out") if future.cancelled() else future.exception()
        if exc is None:
            return
        self.failed += 1
        detail = exc.detail if isinstance(exc, PrinterFault) else type(exc).__name__
        log.warning(
            "printer: receipt %s (%s) did not print: %s", job.receipt.number, job.why, detail
        )
        if self.on_failed is not None:
            try:
                self.on_failed(job.receipt.number)
            except Exception:
                log.exception("printer: could not have %s announced", job.receipt.number)

    def _report(self, state: c.DeviceState, detail: str) -> None:
        """On the loop: tell the hall about a change of the printer's state."""
        if (self.state, self.detail) == (state, detail):
            return
        before = (self.state, self.detail)
        self.state, self.detail = state, detail
        if state != "online":
            self.last_fault = detail
        log.info("printer: %s %s", state, detail)
        command = c.ReportDevice(
            self.hall.now(),
            DEVICE,
            self.connection.name,
            "printer",
            state,
            detail,
        )

        async def submit() -> None:
            try:
                await self.hall.submit(command)
            except DomainError as exc:
                log.info("printer: device report refused: %s", exc)
                if (self.state, self.detail) == (state, detail):
                    self.state, self.detail = before

        task = asyncio.get_running_loop().create_task(submit())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    # -- the printer thread ------------------------------------------------------------------
    def _tell(self, state: c.DeviceState, detail: str = "") -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._report, state, detail)

    def _run(self) -> None:
        self._poll()
        while not self._stopping.is_set():
            try:
                job = self._jobs.get(timeout=self.poll_s)
            except queue.Empty:
                self._poll()
                continue
            if not job.done.set_running_or_notify_cancel():
                continue
            self.printing = job.receipt.number
            try:
                self._print(job)
            except PrinterFault as fault:
                job.done.set_exception(fault)
            except Exception as exc:  # a bug in the layout: log it, keep the thread
                log.exception("printer: job %s failed", job.receipt.number)
                job.done.set_exception(exc)
            else:
                self.printed += 1
                job.done.set_result(None)
            finally:
                self.printing = None
        self.connection.close()

    def _status(self) -> Status | None:
        """Connect if needed and read the status. A connection the printer closed while idle
        (many close idle port-9100 sessions) gets one fresh try before it counts as offline."""
        was_open = self.connection.is_open
        self.connection.open()
        try:
            return self.connection.status()
        except PrinterFault as fault:
            if not was_open or fault.detail != "offline":
                raise
        self.connection.open()
        return self.connection.status()

    def _poll(self) -> None:
        try:
            self._check(self._status())
        except PrinterFault as fault:
            self._tell("fault", fault.detail)
        except Exception:
            log.exception("printer: status poll failed")

    def _check(self, status: Status | None) -> None:
        """Report what the status says; raise PrinterFault if it cannot print."""
        if status is not None:
            fault = status.fault()
            if fault is not None:
                raise PrinterFault(fault)
            self._tell("online", "paper-low" if status.paper_low else "")
        else:
            self._tell("online", "")

    def _print(self, job: _Job) -> None:
        layout = build_layout(
            job.receipt, paper_mm=self.printer.paper_mm, notice=self.printer.notice
        )
        data = receipt_bytes(layout, self.printer.profile, self.printer.chinese)
        try:
            self._check(self._status())
            self.connection.write(data)
            self._check(self.connection.status())
        except PrinterFault as fault:
            self._tell("fault", fault.detail)
            raise


def check_profile(config: HallConfig) -> None:
    """The configured profile must be in python-escpos's capabilities database."""
    if config.printer is None:
        return
    try:
        load_profile(config.printer.profile)
    except UnknownProfile as exc:
        raise ConfigError([f"{config.where('printer', 'profile')}: {exc}"]) from None


async def start_printer(hall: Hall, config: HallConfig) -> PrinterHandle | None:
    """Start the receipt printer if config.yaml has one; None otherwise."""
    if config.printer is None:
        return None
    handle = PrinterHandle(hall, config)
    await handle.start()
    return handle

"""A line-protocol port (serial-protocols.md §2): a ticket dispenser and its requests.

Lines are answered one at a time in arrival order. A request id seen within 60 s gets the
first reply again without acting (a dispenser retrying after a lost reply must not print two
tickets); `ERR 500` is not remembered, so its retry is tried afresh. Lines that fail their
checksum, are too long or are not UTF-8 are counted and dropped without a reply. A request
that finds the port's job queue full is answered `ERR 500 busy` at once (nothing issued).

Unsolicited `STATUS` lines tell the dispenser each service's queue and forecast, at most
once a second per service, the latest value always last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from drivers import lineproto as lp
from drivers.devices.base import DevicePort, Job
from drivers.devices.coalesce import Coalescer
from drivers.devices.health import UNKNOWN, DeviceHealth
from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.checkin_brake import NO_APPOINTMENT_NOW, NOT_CHECKABLE_NOW, CheckInBrake
from hall_daemon.config import KioskLimits
from hall_daemon.events import StoredEvent
from hall_daemon.model import DomainError
from hall_daemon.state import WAITING
from hall_daemon.tokens import new_token

if TYPE_CHECKING:
    from hall_daemon.config import PortConfig
    from hall_daemon.hall import Hall

log = logging.getLogger(__name__)

OFFLINE_AFTER_S = 60.0  # silence after HELLO that makes the device offline
STATUS_INTERVAL_S = 1.0
PAPER_DETAIL = {
    lp.PaperState.OK: "",
    lp.PaperState.LOW: "paper-low",
    lp.PaperState.OUT: "paper-out",
}


class TicketPrinter(Protocol):
    """The hall's receipt printer (drivers/printer): queues a receipt and returns at once."""

    def print_ticket(self, ref: str, why: str = "dispenser") -> bool: ...


def wait_minutes(wait_s: float) -> int:
    return max(round(wait_s / 60), 0)


class DispenserPort(DevicePort):
    def __init__(
        self,
        hall: Hall,
        config: PortConfig,
        *,
        offline_after: float = OFFLINE_AFTER_S,
        status_interval: float = STATUS_INTERVAL_S,
        checkin_brake: CheckInBrake | None = None,
    ) -> None:
        super().__init__(hall, config)
        self.decoder = lp.LineDecoder()
        self.replies = lp.ReplyCache()
        self.offline_after = offline_after
        configured = next((d for d in config.devices if d.kind == "dispenser"), None)
        first = configured or (config.devices[0] if config.devices else None)
        self.device = DeviceHealth(
            id=(first.id if first is not None and first.id else self.name),
            kind=first.kind if first is not None else "dispenser",
            port=self.name,
        )
        self.hello: lp.Hello | None = None
        self.pushes_status = configured is not None or not config.devices
        self._checksums = False  # the device's last line had one: so do our pushes
        self._paper_detail = ""  # the detail an online report carries: paper-low or nothing
        self._status = Coalescer[str, tuple[int, int]](self._push_status, status_interval)
        # The hall's one brake on wrong check-in codes, shared with the kiosks (this port's
        # own when none is given).
        self.checkin_brake = checkin_brake or CheckInBrake(KioskLimits())
        # Set by the composition root when the hall prints receipts for this dispenser: its
        # TAKE and CHECKIN tickets are printed (never ISSUED ones: the device printed those).
        self.receipts: TicketPrinter | None = None
        # Set to the voice's say_number: a dispenser out of paper (and no hall printer) still
        # gives the ticket; the applicant hears its number.
        self.say_number: Callable[[str], object] | None = None

    async def start(self) -> None:
        self.initial_state(self.device)
        await super().start()
        self._spawn(self._watch, "watchdog")

    async def stop(self) -> None:
        self._status.close()
        await super().stop()

    # -- link ----------------------------------------------------------------------------------
    def link_up(self) -> None:
        self.hello = None  # a new connection may be a new device; it says HELLO again
        self._status.forget()
        self.hall_changed(None)

    def link_down(self, exc: Exception | None) -> None:
        # A partial line from before the gap would glue onto the first line after it.
        stats = self.decoder.stats
        self.decoder = lp.LineDecoder()
        self.decoder.stats = stats

    # -- in ------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        busy = bytearray()  # one write for the whole read, not one write-queue entry per line
        for item in self.decoder.feed(data):
            if isinstance(item, lp.LineError):
                self.device.frames_bad += 1
                self.quiet.info(item.reason, "port %s: dropped a line: %s", self.name, item.reason)
                continue
            self.device.heard(now)
            self._checksums = item.checksummed
            if not self.later(self._job(item)):
                # Nothing was issued and 500 is not remembered: the retry is tried afresh.
                busy += self._encoded(lp.err(500, "busy"), item)
        if busy:
            self.send(bytes(busy))

    def _job(self, line: lp.Line) -> Job:
        async def job() -> None:
            await self._answer(line)

        return job

    async def _answer(self, line: lp.Line) -> None:
        device = self.device
        rid = line.request_id
        if rid is not None:
            cached = self.replies.get(self.name, rid, time.monotonic())
            if cached is not None:
                device.retransmissions += 1
                self._reply(cached, line)
                return
        try:
            request = lp.parse_request(line)
        except lp.ProtocolError as exc:
            device.frames_bad += 1
            reply = lp.err(400, exc.reason)
        else:
            device.frames_good += 1
            if device.state in (UNKNOWN, "offline") and not isinstance(
                request, lp.Hello | lp.Paper
            ):
                self.report(device, "online", self._paper_detail)
            reply = await self._reply_to(request)
        if rid is not None:
            self.replies.put(self.name, rid, reply, time.monotonic())
        self._reply(reply, line)

    def _reply(self, words: lp.Words, line: lp.Line) -> None:
        data = self._encoded(words, line)
        if data:
            self.send(data)

    def _encoded(self, words: lp.Words, line: lp.Line) -> bytes:
        try:
            return lp.encode_line(words, line.request_id, line.checksummed)
        except ValueError:
            self.quiet.exception("encode", "port %s: cannot encode reply %r", self.name, words)
            return b""

    async def _reply_to(self, request: lp.Request) -> lp.Words:
        try:
            match request:
                case lp.Take(service, priority):
                    return await self._take(service, priority)
                case lp.Issued(service, number):
                    await self._run(self._take_command(service, number=number))
                    return lp.ok()
                case lp.CheckIn(code):
                    return await self._check_in(code)
                case lp.Paper(state):
                    return self._paper(state)
                case lp.Ping():
                    return lp.pong()
                case lp.Hello():
                    return self._hello(request)
        except DomainError as exc:
            return lp.err(exc.code if exc.code in lp.ERROR_CODES else 500, exc.slug)
        except Exception:
            self.quiet.exception("failed", "port %s: failed on %r", self.name, request)
            return lp.err(500, "internal-error")

    async def _run(self, command: c.Command) -> list[StoredEvent]:
        try:
            return await self.hall.submit(command)
        except DomainError as exc:
            self.device.refused += 1
            self.quiet.info(
                ("refused", type(command).__name__, exc.slug),
                "port %s: %s refused: %s (%s)",
                self.name,
                type(command).__name__,
                exc,
                exc.slug,
            )
            raise

    def _take_command(
        self, service: str, *, priority: bool = False, number: str | None = None
    ) -> c.TakeTicket:
        return c.TakeTicket(
            self.hall.now(),
            service,
            new_token(),
            channel="dispenser",
            priority=priority,
            number=number,
        )

    async def _take(self, service: str, priority: bool) -> lp.Words:
        events = await self._run(self._take_command(service, priority=priority))
        return self._printed(_ticket_from(events))

    async def _check_in(self, code: str) -> lp.Words:
        brake, me = self.checkin_brake, f"dispenser:{self.name}"
        if brake.take(me) > 0:
            self.device.refused += 1
            self.quiet.info("guesses", "port %s: too many wrong check-in codes", self.name)
            return lp.err(429, "too-many-codes")
        state = self.hall.state
        ticket = state.by_token.get(code)
        if ticket is None:
            command = c.CheckIn(self.hall.now(), code, new_token())
            try:
                events = await self._run(command)
            except DomainError as exc:
                if exc.code >= 500:  # never looked up
                    brake.give_back(me)
                if exc.slug in NOT_CHECKABLE_NOW:  # one answer: a miss tells nothing
                    return lp.err(404, NO_APPOINTMENT_NOW)
                raise
            brake.give_back(me)
            return self._printed(_ticket_from(events))
        brake.give_back(me)
        # A remote ticket's code: print the ticket the applicant already has.
        if ticket.finished:
            return lp.err(409, "ticket-finished")
        ahead, wait = 0, 0
        if ticket.state == WAITING:
            ahead = state.ahead_of(ticket)
            forecast = self.hall.forecaster(state, ticket.service, ahead, self.hall.now())
            wait = wait_minutes(forecast["wait_s"])
        return self._printed(lp.ticket_reply(ticket.number, ticket.service, ahead, wait))

    def _printed(self, reply: lp.Words) -> lp.Words:
        """Queue the receipt of the ticket in a TICKET reply; the reply never waits for it."""
        if self.receipts is not None:
            self.receipts.print_ticket(str(reply[1]), "dispenser")
        elif self.device.detail == "paper-out" and self.say_number is not None:
            self.say_number(str(reply[1]))
        return reply

    def _paper(self, paper: lp.PaperState) -> lp.Words:
        detail = PAPER_DETAIL[paper]
        self._paper_detail = "" if paper is lp.PaperState.OUT else detail
        self.report(self.device, "fault" if paper is lp.PaperState.OUT else "online", detail)
        return lp.ok()

    def _hello(self, hello: lp.Hello) -> lp.Words:
        self.hello = hello
        if self.device.id != hello.device_id and self.device.id != self.name:
            self.quiet.warning(
                "not-expected",
                "port %s: device says it is %s; config.yaml expects %s",
                self.name,
                hello.device_id,
                self.device.id,
            )
        if self.device.id == self.name:
            self.device.id = hello.device_id
        self.device.kind = str(hello.kind)
        self.pushes_status = self.pushes_status or hello.kind is lp.DeviceKind.DISPENSER
        self.quiet.info(
            "hello",
            "port %s: %s %s (firmware %s) said hello",
            self.name,
            hello.kind,
            hello.device_id,
            hello.firmware,
        )
        self._paper_detail = ""  # it restarted: it tells its paper state again when it matters
        self.report(self.device, "online")
        self._status.forget()
        self.hall_changed(None)  # it may have missed every STATUS while it was starting
        return lp.ok()

    # -- health --------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(self.offline_after / 4, 5.0))
            device = self.device
            if self.hello is None or device.last_seen is None or device.state == "offline":
                continue  # without HELLO we do not know the device keeps in touch
            if time.monotonic() - device.last_seen > self.offline_after:
                self.report(device, "offline", "silent")

    # -- out -----------------------------------------------------------------------------------
    def hall_changed(self, event: StoredEvent | None) -> None:
        if not self.pushes_status or not self.connected:
            return
        if event is not None and event.type.startswith("device."):
            return
        state = self.hall.state
        now = self.hall.now()
        for service in state.services:
            waiting = state.waiting(service)
            forecast = self.hall.forecaster(
                state, service, state.ahead_if_issued(service, False), now
            )
            self._status.offer(service, (waiting, wait_minutes(forecast["wait_s"])))

    def _push_status(self, service: str, value: tuple[int, int]) -> None:
        waiting, wait = value
        self.send(lp.encode_line(lp.status(service, waiting, wait), checksum=self._checksums))

    # -- status page ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        d = self.decoder.stats
        return {
            **super().stats(),
            "lines_good": d.lines_good,
            "too_long": d.too_long,
            "bad_utf8": d.bad_utf8,
            "bad_checksum": d.bad_checksum,
            "hello": None
            if self.hello is None
            else {
                "id": self.hello.device_id,
                "kind": str(self.hello.kind),
                "firmware": self.hello.firmware,
            },
            "devices": [self.device.snapshot()],
        }


def _ticket_from(events: list[StoredEvent]) -> lp.Words:
    for e in events:
        if e.type == ev.TICKET_ISSUED:
            d = e.data
            return lp.ticket_reply(
                d["number"], d["service"], d["ahead"], wait_minutes(d["forecast"]["wait_s"])
            )
    raise RuntimeError("the hall issued no ticket and raised no error")

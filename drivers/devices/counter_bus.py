"""The counter bus (protocol "68"): keypads, evaluators and window screens on one RS-485 pair.

In: every valid device frame is echoed at once, before anything else happens (the keypad
wants its ack within 100 ms); a retransmission is acked again and not acted on; a key press
becomes an engine command through the key table.

Out: after each committed event the LCD of every keypad on the bus and the text of every
window screen are recomputed from the hall's state and sent when they changed. Host frames
go out one at a time, each waiting for its echo (200 ms, two retries); a device that never
echoes is unresponsive and skipped until it is heard from again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drivers import bus68
from drivers.bus68 import (
    DEVICE_FUNCTIONS,
    MAX_ADDRESS,
    Bus68Decoder,
    DeviceStatus,
    Frame,
    Function,
    KeyPress,
    ProtocolError,
    Rating,
    RetransmitFilter,
)
from drivers.devices import counter_view
from drivers.devices.base import DevicePort
from drivers.devices.health import UNKNOWN, DeviceHealth
from drivers.devices.keypad import PromptEvaluator, Unusable, key_action
from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.events import StoredEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from hall_daemon.config import PortConfig
    from hall_daemon.hall import Hall

log = logging.getLogger(__name__)

ECHO_TIMEOUT_S = 0.2
SEND_ATTEMPTS = 3  # the first send and the two retries the contract allows
# A window screen never speaks unless spoken to, so "tried again at its next message" would
# never come: unresponsive devices are offered their state again this often.
PROBE_S = 30.0

OutKey = tuple[int, int, int]  # address, function, text line: one pending frame per key


class CounterBus(DevicePort):
    def __init__(
        self,
        hall: Hall,
        config: PortConfig,
        *,
        find_evaluator: Callable[[int], bool] | None = None,
        echo_timeout: float = ECHO_TIMEOUT_S,
        probe_interval: float = PROBE_S,
    ) -> None:
        super().__init__(hall, config)
        self.decoder = Bus68Decoder()
        self.retransmits = RetransmitFilter()
        self.echo_timeout = echo_timeout
        self.probe_interval = probe_interval
        self.devices: dict[int, DeviceHealth] = {}
        self.keypads: dict[int, int] = {}  # counter -> address
        self.evaluators: dict[int, int] = {}
        self.screens: dict[int, int] = {}
        by_kind = {"keypad": self.keypads, "evaluator": self.evaluators, "screen": self.screens}
        for d in config.devices:
            if d.address is None:
                continue
            self.devices[d.address] = DeviceHealth(
                id=d.id or f"{self.name}:{d.address}",
                kind=d.kind,
                port=self.name,
                address=d.address,
                counter=d.counter,
            )
            if d.counter is not None and d.kind in by_kind:
                by_kind[d.kind].setdefault(d.counter, d.address)
        self.unknown_frames = 0  # from addresses config.yaml does not list
        self.stray_echoes = 0  # host frames on the wire that match nothing in flight
        self._find_evaluator = find_evaluator or self.prompt_evaluator
        self._counters = {spec.id: spec for spec in hall.spec.counters}
        self._service_by_number = {s.number: s.code for s in hall.spec.services}
        self._unknown_logged: set[int] = set()
        self._outbox: OrderedDict[OutKey, Frame] = OrderedDict()
        self._outbox_ready = asyncio.Event()
        self._link_is_up = asyncio.Event()
        self._shown: dict[OutKey, Frame] = {}  # last frame each device echoed
        self._inflight: tuple[Frame, asyncio.Future[None]] | None = None
        self._waiting: dict[int, int] = {}  # per keypad's counter, for the 0 -> >0 beep
        self._probing: set[int] = set()  # unresponsive addresses offered one more try

    async def start(self) -> None:
        for device in self.devices.values():
            self.initial_state(device)
        state = self.hall.state
        self._waiting = {n: state.waiting_for_counter(n) for n in self.keypads}
        await super().start()
        self._spawn(self._send_loop, "sender")
        self._spawn(self._probe_loop, "probe")

    # -- link ----------------------------------------------------------------------------------
    def link_up(self) -> None:
        # Whatever the devices showed before, they may have been power-cycled with the bus.
        for device in self.devices.values():
            device.responsive = True
        self._shown.clear()
        self._refresh(None)
        self._link_is_up.set()

    def link_down(self, exc: Exception | None) -> None:
        self._link_is_up.clear()
        self.decoder.reset()  # a partial frame from before the gap is no frame

    # -- in ------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        at = self.hall.now()
        # One write for the acks of a whole read: a burst of frames must not fill the link's
        # write queue with one entry each and push out the acks of the frames behind it.
        acks = bytearray()
        for frame in self.decoder.feed(data):
            if frame.function in DEVICE_FUNCTIONS:
                self._device_frame(frame, now, at, acks)
            else:
                self._echo(frame, now)
        if acks:
            self.send(bytes(acks))

    def _device_frame(self, frame: Frame, now: float, at: datetime, acks: bytearray) -> None:
        address = frame.address
        if not 1 <= address <= MAX_ADDRESS:
            self.unknown_frames += 1
            return
        acks += bus68.encode(frame)  # the ack comes first, whatever the frame asks
        device = self.devices.get(address)
        if device is None:
            self.unknown_frames += 1
            if address not in self._unknown_logged:
                self._unknown_logged.add(address)
                log.warning(
                    "port %s: frames from address %d, not in config.yaml", self.name, address
                )
            return
        device.heard(now)
        self._alive(device)
        try:
            message = bus68.parse(frame)
        except ProtocolError as exc:
            device.frames_bad += 1
            self.quiet.info(
                ("bad-frame", device.id),
                "port %s: %s %s sent a bad frame: %s",
                self.name,
                device.kind,
                device.id,
                exc,
            )
            return
        if not isinstance(message, KeyPress | Rating | DeviceStatus):
            device.frames_bad += 1
            return
        if self.retransmits.seen(address, frame.function, message.seq, now):
            device.retransmissions += 1
            return
        device.frames_good += 1
        if isinstance(message, KeyPress):
            self._key(device, message, at)
        elif isinstance(message, Rating):
            self._rating(device, message, at)
        else:
            self._status(device, message)

    def _alive(self, device: DeviceHealth) -> None:
        if not device.responsive:
            self._forget_shown(device)
            self._answers_again(device)
        if device.state in (UNKNOWN, "offline"):
            self.report(device, "online")

    def _answers_again(self, device: DeviceHealth) -> None:
        device.responsive = True
        if device.address is not None:
            self._probing.discard(device.address)
        self.quiet.info(
            ("answers", device.id),
            "port %s: %s %s answers again",
            self.name,
            device.kind,
            device.id,
        )
        self._refresh(None)

    def _forget_shown(self, device: DeviceHealth) -> None:
        for key in [k for k in self._shown if k[0] == device.address]:
            del self._shown[key]

    def _key(self, device: DeviceHealth, press: KeyPress, at: datetime) -> None:
        if device.kind != "keypad" or device.counter is None:
            device.frames_bad += 1
            self.quiet.info(
                ("not-a-keypad", device.id),
                "port %s: key press from %s %s ignored",
                self.name,
                device.kind,
                device.id,
            )
            return
        action = key_action(press, device.counter, at, self._service_by_number)
        if isinstance(action, Unusable):
            device.refused += 1
            self.quiet.info(
                ("unusable", device.id),
                "port %s: keypad %s: %s %r: %s",
                self.name,
                device.id,
                press.key.name,
                press.digits,
                action.reason,
            )
        elif isinstance(action, PromptEvaluator):
            if not self._find_evaluator(action.counter):
                self.quiet.info(
                    ("no-evaluator", device.id),
                    "port %s: RATE at counter %d, which has no evaluator",
                    self.name,
                    action.counter,
                )
        else:
            self._command(device, action)

    def _rating(self, device: DeviceHealth, rating: Rating, at: datetime) -> None:
        if device.kind != "evaluator" or device.counter is None:
            device.frames_bad += 1
            return
        self._command(device, c.Rate(at, device.counter, rating.score))

    def _status(self, device: DeviceHealth, status: DeviceStatus) -> None:
        problems = [name for name, on in (("fault", status.fault), ("tamper", status.tamper)) if on]
        if problems:
            self.report(device, "fault", ",".join(problems))
        else:
            self.report(device, "online")

    def _command(self, device: DeviceHealth, command: c.Command) -> None:
        async def job() -> None:
            await self.submit(command, device)

        self.later(job, device)

    def _echo(self, frame: Frame, now: float) -> None:
        inflight = self._inflight
        if inflight is None or inflight[0] != frame:
            self.stray_echoes += 1
            return
        if not inflight[1].done():
            inflight[1].set_result(None)
        device = self.devices.get(frame.address)
        if device is not None:
            device.heard(now)
            if device.state in (UNKNOWN, "offline"):
                self.report(device, "online")

    # -- out -----------------------------------------------------------------------------------
    def hall_changed(self, event: StoredEvent | None) -> None:
        announce = None
        if event is not None and event.type in (ev.TICKET_CALLED, ev.TICKET_RECALLED):
            announce = event.data.get("counter")
        self._refresh(announce)

    def _refresh(self, announce: int | None) -> None:
        """Offer every device on the bus what it should show now; unchanged ones send nothing."""
        state = self.hall.state
        for counter, address in self.keypads.items():
            waiting = state.waiting_for_counter(counter)
            if self._waiting.get(counter, 0) == 0 and waiting > 0:
                self._offer(bus68.beep(address), force=True)
            self._waiting[counter] = waiting
            self._offer(counter_view.lcd(address, state, counter))
        for counter, address in self.screens.items():
            spec = self._counters.get(counter)
            if spec is not None:
                # A recall shows the same text again: send it anyway, the screen flashes it.
                frame = counter_view.screen(address, spec, state)
                self._offer(frame, force=counter == announce)

    def prompt_evaluator(self, counter: int) -> bool:
        address = self.evaluators.get(counter)
        if address is None:
            return False
        self._offer(bus68.eval_prompt(address), force=True)
        return True

    def _offer(self, frame: Frame, *, force: bool = False) -> None:
        line = frame.data[0] if frame.function == Function.TEXT else 0
        key = (frame.address, frame.function, line)
        if not force and key not in self._outbox and self._shown.get(key) == frame:
            return
        # Replacing a pending frame keeps its place: a busy counter cannot starve the others.
        self._outbox[key] = frame
        self._outbox_ready.set()

    async def _send_loop(self) -> None:
        while True:
            await self._link_is_up.wait()
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            key, frame = self._outbox.popitem(last=False)
            device = self.devices.get(frame.address)
            if device is None:
                continue
            if not device.responsive and frame.address not in self._probing:
                continue  # its state is sent again when it is next heard from
            outcome = await self._deliver(frame)
            if outcome is None:
                if key not in self._outbox:  # the link went down: send it once it is back
                    self._outbox[key] = frame
                    self._outbox.move_to_end(key, last=False)
            elif outcome:
                self._shown[key] = frame
                if not device.responsive:
                    self._answers_again(device)
            elif device.responsive:
                self._unresponsive(device)
            else:
                self._probing.discard(frame.address)  # still silent: already counted

    async def _deliver(self, frame: Frame) -> bool | None:
        """True: echoed; False: no echo after the retries; None: the link went down."""
        loop = asyncio.get_running_loop()
        raw = bus68.encode(frame)
        for _ in range(SEND_ATTEMPTS):
            if not self.connected:
                return None
            echoed: asyncio.Future[None] = loop.create_future()
            self._inflight = (frame, echoed)
            try:
                self.send(raw)
                async with asyncio.timeout(self.echo_timeout):
                    await echoed
                return True
            except TimeoutError:
                continue
            finally:
                self._inflight = None
        return False if self.connected else None

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            self.probe()

    def probe(self) -> None:
        """Offer every unresponsive device its current state once more."""
        for device in self.devices.values():
            if not device.responsive and device.address is not None:
                self._probing.add(device.address)
                self._forget_shown(device)
        if self._probing:
            self._refresh(None)

    def _unresponsive(self, device: DeviceHealth) -> None:
        device.responsive = False
        device.unresponsive += 1
        self.quiet.warning(
            ("unresponsive", device.id),
            "port %s: %s %s does not answer; trying again when it is next heard",
            self.name,
            device.kind,
            device.id,
        )
        self.report(device, "offline", "no-echo")

    # -- status page ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        d = self.decoder.stats
        now = time.monotonic()
        return {
            **super().stats(),
            "frames_good": d.frames_good,
            "frames_bad": d.frames_bad,
            "bad": {str(reason): n for reason, n in d.bad.items()},
            "bytes_skipped": d.bytes_skipped,
            "unknown_frames": self.unknown_frames,
            "stray_echoes": self.stray_echoes,
            "pending_frames": len(self._outbox),
            "devices": [device.snapshot(now) for device in self.devices.values()],
        }

"""Every configured serial port, each a `SerialLink` with its device protocol.

The composition root calls `start_ports(hall, config)` after the hall has started and
`await manager.stop()` before it stops. A port that cannot be opened does not stop the
others or the daemon: its link keeps retrying with backoff and says so in `stats()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.devices.base import DevicePort
from drivers.devices.counter_bus import CounterBus
from drivers.devices.dispenser import DispenserPort
from drivers.link import SerialLink
from hall_daemon.backoff import Backoff

if TYPE_CHECKING:
    from hall_daemon.checkin_brake import CheckInBrake
    from hall_daemon.config import HallConfig
    from hall_daemon.hall import Hall

log = logging.getLogger(__name__)


@dataclass
class Port:
    link: SerialLink
    device: DevicePort


class PortManager:
    def __init__(
        self,
        hall: Hall,
        config: HallConfig,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        checkin_brake: CheckInBrake | None = None,
    ) -> None:
        self.hall = hall
        self.config = config
        self.checkin_brake = checkin_brake
        self.ports: dict[str, Port] = {}
        self._backoff = backoff

    async def start(self) -> None:
        for pc in self.config.ports:
            device: DevicePort
            if pc.protocol == "bus68":
                device = CounterBus(self.hall, pc, find_evaluator=self.prompt_evaluator)
            else:
                device = DispenserPort(self.hall, pc, checkin_brake=self.checkin_brake)
            await device.start()
            link = SerialLink(pc.name, pc.url, device, baudrate=pc.baud, backoff=self._backoff())
            self.ports[pc.name] = Port(link, device)
            link.start()
        if self.ports:
            log.info("serial ports: %s", ", ".join(self.ports))

    async def stop(self) -> None:
        for port in self.ports.values():
            await port.link.stop()
        for port in self.ports.values():
            await port.device.stop()

    def link(self, name: str) -> SerialLink:
        return self.ports[name].link

    def device(self, name: str) -> DevicePort:
        return self.ports[name].device

    def prompt_evaluator(self, counter: int) -> bool:
        """RATE at a keypad: the counter's evaluator may sit on another bus than the keypad."""
        return any(
            isinstance(p.device, CounterBus) and p.device.prompt_evaluator(counter)
            for p in self.ports.values()
        )

    def stats(self) -> list[dict[str, Any]]:
        """One dict per port: the link's state and counters, then the protocol's and devices'."""
        return [
            {**port.device.stats(), "link": port.link.snapshot()} for port in self.ports.values()
        ]


async def start_ports(
    hall: Hall,
    config: HallConfig,
    *,
    backoff: Callable[[], Backoff] = Backoff,
    checkin_brake: CheckInBrake | None = None,
) -> PortManager:
    """`checkin_brake`: the hall's one brake on wrong check-in codes, shared with the kiosks."""
    manager = PortManager(hall, config, backoff=backoff, checkin_brake=checkin_brake)
    await manager.start()
    return manager

"""Wrong check-in codes, at every kiosk and dispenser: limited per device and for the hall.

A check-in code is a secret of a few digits, so whoever can try codes fast enough finds one.
Every try is taken from two token buckets before the code is looked up, the device's own and
the one the whole hall shares (kiosks and dispensers alike, so no way in has its own, larger
budget), and given back when the code was right. A miss says no more than that: an unknown
code, one booked for another time and one already used get the same answer, so a guess can
only hit one of the codes open for check-in at that moment (README, Security).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .admin.ratelimit import TokenBuckets
from .config import KioskLimits

HALL = "hall"  # the one bucket of the hall-wide limit
# The engine's refusals of a code that a device answers as one.
NOT_CHECKABLE_NOW = frozenset({"unknown-code", "too-early", "expired", "already-checked-in"})
NO_APPOINTMENT_NOW = "no-appointment-now"


class CheckInBrake:
    def __init__(self, limits: KioskLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.devices = TokenBuckets(limits.wrong_codes.burst, limits.wrong_codes.every_s)
        self.hall = TokenBuckets(limits.wrong_codes_hall.burst, limits.wrong_codes_hall.every_s, 1)

    def take(self, device: str) -> float:
        """Count a try as wrong before its code is looked up: 0.0 to go ahead, else the
        seconds until `device` may try again."""
        now = self.clock()
        wait = self.devices.take(device, now)
        if wait > 0:
            return wait
        wait = self.hall.take(HALL, now)
        if wait > 0:
            self.devices.give_back(device, now)
        return wait

    def give_back(self, device: str) -> None:
        """The code was right (or the try never reached a lookup): it costs nothing."""
        now = self.clock()
        self.devices.give_back(device, now)
        self.hall.give_back(HALL, now)

    @property
    def refused(self) -> int:
        return self.devices.refused + self.hall.refused

"""The hall's one brake on wrong check-in codes: per device, and shared by every device."""

from __future__ import annotations

import pytest

from hall_daemon.checkin_brake import CheckInBrake
from hall_daemon.config import KioskLimits, RateLimit

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def brake(clock: Clock) -> CheckInBrake:
    limits = KioskLimits(
        wrong_codes=RateLimit(burst=3, every_s=60), wrong_codes_hall=RateLimit(burst=5, every_s=10)
    )
    return CheckInBrake(limits, clock)


def test_a_device_gets_a_few_tries_then_one_per_refill() -> None:
    clock = Clock()
    b = brake(clock)
    assert [b.take("kiosk:a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert b.take("kiosk:a") == pytest.approx(60.0)
    clock.now = 60.0
    assert b.take("kiosk:a") == 0.0
    assert b.take("kiosk:a") > 0


def test_the_hall_wide_budget_is_shared_by_kiosks_and_dispensers() -> None:
    clock = Clock()
    b = brake(clock)
    tried = [b.take(device) for device in ("kiosk:a",) * 3 + ("dispenser:d",) * 3]
    assert tried[:5] == [0.0] * 5 and tried[5] > 0  # the hall's 5, whoever used them
    # A device refused by the hall keeps its own try for later.
    clock.now = 10.0
    assert b.take("dispenser:d") == 0.0
    assert b.refused == 1


def test_a_right_code_costs_nothing() -> None:
    clock = Clock()
    b = brake(clock)
    for _ in range(20):
        assert b.take("kiosk:a") == 0.0
        b.give_back("kiosk:a")
    assert b.refused == 0

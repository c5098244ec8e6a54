"""HALL_DAEMON_CLOCK: the simulated clock that lets soak tests pass a day end in seconds."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from hall_daemon.app import warped_clock

pytestmark = pytest.mark.unit

TZ = ZoneInfo("Asia/Shanghai")


def test_the_clock_starts_at_the_given_time_and_runs_at_the_given_speed() -> None:
    anchor = time.time() - 10.0  # ten real seconds ago
    clock = warped_clock(f"{anchor:.3f}=2026-11-02T03:00:00x240", TZ)
    now = clock()
    assert now.tzinfo is not None and now.utcoffset() == ZoneInfo("Asia/Shanghai").utcoffset(now)
    expected = datetime(2026, 11, 2, 3, 40, tzinfo=TZ)  # 10 s x 240 = 40 min
    assert abs((now - expected).total_seconds()) < 60


def test_two_processes_with_the_same_value_share_one_clock() -> None:
    value = f"{time.time():.3f}=2026-11-02T03:00:00+08:00x60"
    a, b = warped_clock(value, TZ), warped_clock(value, TZ)
    assert abs((a() - b()).total_seconds()) < 5


def test_a_malformed_value_is_refused() -> None:
    with pytest.raises(ValueError, match="HALL_DAEMON_CLOCK"):
        warped_clock("tomorrow", TZ)

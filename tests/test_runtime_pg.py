"""The hall's runtime on PostgreSQL: the same durability and recovery as on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hall_daemon import commands as c
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from tests.test_runtime import SPEC, T0

pytestmark = pytest.mark.service


async def test_the_hall_runs_and_recovers_on_postgresql(pg_url: str) -> None:
    hall = Hall(SPEC, Store(pg_url), clock=lambda: T0, snapshot_every=5)
    await hall.start()
    for i in range(12):
        await hall.submit(c.TakeTicket(T0 + timedelta(seconds=i), "A", f"t{i}"))
    called = await hall.submit(c.CallNext(T0 + timedelta(seconds=20), 1))
    assert [e.type for e in called] == ["counter.opened", "ticket.called"]
    before = hall.state.to_dict()
    await hall.stop()
    again = Hall(SPEC, Store(pg_url), clock=lambda: T0 + timedelta(seconds=21))
    await again.start()
    assert again.state.to_dict() == before
    assert again.state.counters[1].current == "A001" and again.state.waiting("A") == 11
    await again.stop()

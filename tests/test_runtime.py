"""The hall at run time: commands are durable before anyone hears; outputs can't stall it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hall_daemon import commands as c
from hall_daemon.config import load_config
from hall_daemon.events import StoredEvent
from hall_daemon.hall import Hall, HallUnavailable
from hall_daemon.model import Conflict, NotFound
from hall_daemon.store import Store, StoreError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SPEC = load_config(REPO / "config.yaml").to_spec()
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def make_hall(tmp_path: Path, **kw: object) -> Hall:
    return Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=lambda: T0, **kw)  # type: ignore[arg-type]


async def test_events_are_committed_before_subscribers_hear_of_them(tmp_path: Path) -> None:
    hall = make_hall(tmp_path)
    await hall.start()
    seen: list[tuple[int, int]] = []  # (seq, last seq in the store when the subscriber heard)

    async def listener(e: StoredEvent) -> None:
        probe = Store(Store.sqlite_url(tmp_path / "hall.db"))
        probe.open()
        seen.append((e.seq, probe.last_seq()))
        probe.close()

    hall.bus.subscribe("probe", listener)
    stored = await hall.submit(c.TakeTicket(T0, "A", "tok-1"))
    await hall.bus.drain()
    assert [e.type for e in stored] == ["ticket.issued"]
    assert stored[0].data["number"] == "A001"
    assert seen == [(stored[0].seq, stored[0].seq)]
    await hall.stop()


async def test_a_refused_command_changes_nothing_and_says_why(tmp_path: Path) -> None:
    hall = make_hall(tmp_path)
    await hall.start()
    before = hall.store.last_seq()
    with pytest.raises(NotFound) as err:
        await hall.submit(c.TakeTicket(T0, "Z", "tok-z"))
    assert err.value.code == 404 and err.value.slug == "unknown-service"
    await hall.submit(c.TakeTicket(T0, "A", "tok-1"))
    with pytest.raises(Conflict):
        await hall.submit(c.TakeTicket(T0, "A", "tok-1"))  # a retried take: no second ticket
    assert hall.store.last_seq() == before + 1
    assert hall.state.waiting("A") == 1
    await hall.stop()


async def test_concurrent_commands_are_group_committed_in_order(tmp_path: Path) -> None:
    hall = make_hall(tmp_path)
    await hall.start()
    results = await asyncio.gather(
        *(hall.submit(c.TakeTicket(T0 + timedelta(seconds=i), "B", f"t{i}")) for i in range(100))
    )
    numbers = [r[0].data["number"] for r in results]
    assert numbers == [f"B{i:03d}" for i in range(1, 101)]
    seqs = [r[0].seq for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 100))
    assert hall.stats.commits < 100  # batched: fewer transactions than commands
    await hall.stop()


async def test_a_new_day_begun_by_a_refused_command_is_still_stored(tmp_path: Path) -> None:
    hall = make_hall(tmp_path)
    await hall.start()
    await hall.submit(c.TakeTicket(T0, "A", "tok-1"))
    with pytest.raises(NotFound):
        await hall.submit(c.TakeTicket(T0 + timedelta(days=1), "Z", "tok-2"))
    await hall.stop()
    hall2 = make_hall(tmp_path)
    await hall2.start()
    assert hall2.state.day == (T0 + timedelta(days=1)).date()
    assert hall2.state.tickets == {}  # yesterday's ticket was cancelled at day end
    await hall2.stop()


async def test_store_failure_refuses_the_command_and_keeps_the_state_true(tmp_path: Path) -> None:
    hall = make_hall(tmp_path)
    await hall.start()
    await hall.submit(c.TakeTicket(T0, "A", "tok-1"))
    real_append = hall.store.append

    def broken(*a: object, **k: object) -> list[StoredEvent]:
        raise StoreError("disk full")

    hall.store.append = broken  # type: ignore[method-assign]
    with pytest.raises(HallUnavailable) as err:
        await hall.submit(c.TakeTicket(T0, "A", "tok-2"))
    assert err.value.code == 500
    assert hall.state.waiting("A") == 1  # rebuilt from the store: the failed ticket is not there
    assert not hall.healthy
    hall.store.append = real_append  # type: ignore[method-assign]
    stored = await hall.submit(c.TakeTicket(T0, "A", "tok-2"))
    assert stored[0].data["number"] == "A002" and hall.healthy
    await hall.stop()


async def test_a_slow_or_failing_subscriber_never_stalls_the_hall(tmp_path: Path) -> None:
    hall = make_hall(tmp_path)
    await hall.start()
    release = asyncio.Event()
    got: list[int] = []
    resynced = asyncio.Event()

    async def slow(e: StoredEvent) -> None:
        await release.wait()

    async def failing(e: StoredEvent) -> None:
        got.append(e.seq)
        if len(got) == 1:
            raise RuntimeError("speaker unplugged")

    async def resync() -> None:
        resynced.set()

    slow_sub = hall.bus.subscribe("slow", slow, maxsize=5, resync=resync)
    failing_sub = hall.bus.subscribe("failing", failing)
    for i in range(20):
        await asyncio.wait_for(hall.submit(c.TakeTicket(T0, "C", f"t{i}")), timeout=2)
    assert slow_sub.stats.dropped > 0
    release.set()
    await asyncio.wait_for(resynced.wait(), timeout=2)
    await hall.bus.drain()
    assert len(got) == 20 and failing_sub.stats.failures == 1  # it went on after failing
    await hall.stop()

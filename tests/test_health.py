"""Health that tells the truth: the writer's verdict, the watchdog's decision, /healthz's body.

A hall whose engine fails on every command, or whose last commit failed, or whose writer
task died, is not healthy, and each says why in words an IT person can act on.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hall_daemon import commands as c
from hall_daemon.config import load_config
from hall_daemon.forecast import Forecast, queue_length_forecast
from hall_daemon.hall import ENGINE_FAILURE_LIMIT, Hall, HallUnavailable, WriterStats
from hall_daemon.state import HallState
from hall_daemon.store import Store, StoreError
from hall_daemon.watchdog import LOOP_LAG_LIMIT_S, health_problem, verdict
from hall_daemon.web import make_app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SPEC = load_config(REPO / "config.yaml").to_spec()
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


# -- the writer's own verdict -------------------------------------------------------------
def test_a_run_of_engine_failures_is_a_problem_until_a_command_gets_through() -> None:
    stats = WriterStats()
    for _ in range(ENGINE_FAILURE_LIMIT - 1):
        stats.engine_failed(OverflowError("date value out of range"))
    assert stats.problem() is None  # one odd command is a bug to log, not a broken hall
    stats.engine_failed(OverflowError("date value out of range"))
    problem = stats.problem()
    assert problem is not None
    assert f"the engine failed on the last {ENGINE_FAILURE_LIMIT} commands" in problem
    assert "OverflowError: date value out of range" in problem
    stats.engine_ran()
    assert stats.problem() is None and stats.engine_failures == ENGINE_FAILURE_LIMIT


def test_a_failed_commit_is_a_problem_until_one_succeeds() -> None:
    stats = WriterStats()
    stats.commit_failed(StoreError("database is locked"))
    assert stats.problem() == "the last commit failed: StoreError: database is locked"


# -- the watchdog's decision --------------------------------------------------------------
@pytest.mark.parametrize(
    ("lag_s", "writer", "expected"),
    [
        (0.0, None, None),
        (LOOP_LAG_LIMIT_S + 1, None, "event loop lagged 6.0 s"),
        (0.0, "the hall writer stopped", "the hall writer stopped"),
        (LOOP_LAG_LIMIT_S + 1, "the hall writer stopped", "event loop lagged 6.0 s"),
    ],
)
def test_the_watchdog_pets_only_when_the_loop_and_the_writer_are_fine(
    lag_s: float, writer: str | None, expected: str | None
) -> None:
    assert verdict(lag_s, writer) == expected


# -- a real hall (SQLite in a temporary folder) whose forecaster breaks -------------------
class BrokenForecaster:
    """A stand-in for an engine bug: the engine asks it for every ticket it issues."""

    def __init__(self) -> None:
        self.broken = True

    def __call__(self, state: HallState, service: str, ahead: int, now: datetime) -> Forecast:
        if self.broken:
            raise ZeroDivisionError("the forecaster divided by zero")
        return queue_length_forecast(state, service, ahead, now)


async def test_a_hall_whose_engine_fails_on_every_command_is_not_healthy(tmp_path: Path) -> None:
    forecaster = BrokenForecaster()
    hall = Hall(
        SPEC,
        Store(Store.sqlite_url(tmp_path / "hall.db")),
        clock=lambda: T0,
        forecaster=forecaster,
    )
    await hall.start()
    client = TestClient(TestServer(make_app(hall)))
    await client.start_server()
    try:
        assert (await client.get("/healthz")).status == 200
        for i in range(ENGINE_FAILURE_LIMIT):
            with pytest.raises(HallUnavailable):
                await hall.submit(c.TakeTicket(T0, "A", f"tok-{i}"))
        r = await client.get("/healthz")
        body: dict[str, Any] = await r.json()
        assert r.status == 503 and body["ok"] is False and body["writer"] is False
        assert "the engine failed on the last 3 commands" in body["reason"]
        assert "ZeroDivisionError" in body["reason"]
        problem = await health_problem(hall, 0.0)
        assert problem is not None and "engine failed" in problem

        forecaster.broken = False
        await hall.submit(c.TakeTicket(T0, "A", "tok-ok"))
        r = await client.get("/healthz")
        assert r.status == 200 and (await r.json())["reason"] is None
        assert await health_problem(hall, 0.0) is None
    finally:
        await client.close()
        await hall.stop()


async def test_a_hall_whose_writer_died_says_so_and_refuses_at_once(tmp_path: Path) -> None:
    hall = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=lambda: T0)
    await hall.start()
    try:
        task = hall._task
        assert task is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        problem = hall.problem()
        assert problem is not None and problem.startswith("the hall writer stopped")
        with pytest.raises(HallUnavailable):
            await hall.submit(c.TakeTicket(T0, "A", "tok-1"))
    finally:
        hall._task = None
        await hall.stop()


async def test_the_writer_lives_on_when_a_batch_fails_outside_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hall = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=lambda: T0)
    await hall.start()
    try:
        publish = hall.bus.publish

        def broken_once(events: Any) -> None:
            monkeypatch.setattr(hall.bus, "publish", publish)
            raise RuntimeError("a subscriber's queue broke")

        monkeypatch.setattr(hall.bus, "publish", broken_once)
        with pytest.raises(HallUnavailable):  # answered, not left waiting
            await asyncio.wait_for(hall.submit(c.TakeTicket(T0, "A", "tok-1")), 5)
        assert hall.problem() is None and hall.stats.engine_failures == 1
        stored = await asyncio.wait_for(hall.submit(c.TakeTicket(T0, "A", "tok-2")), 5)
        assert stored[0].data["number"] == "A002"  # A001 was committed before the bus broke
    finally:
        await hall.stop()

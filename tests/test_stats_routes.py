"""The statistics routes on a bare aiohttp app with a real Hall on SQLite: the JSON figures
of a scripted day and of its week-old twin, the CSV exports, the day cache and the 400s."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from hall_daemon import commands as c
from hall_daemon.admin.stats_routes import STATS_KEY, StatsService, add_stats_routes
from hall_daemon.hall import Hall
from hall_daemon.model import CounterSpec, HallSpec, ServiceSpec
from hall_daemon.stats import day_bounds, summarize_day
from hall_daemon.store import Store
from hall_daemon.web import make_app

pytestmark = pytest.mark.unit

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 27)  # a Friday
WEEK_AGO = DAY - timedelta(days=7)
SPEC = HallSpec(
    services=(
        ServiceSpec("A", "企业开办", "A", 1, name_en="Business registration"),
        ServiceSpec("B", "社保医保", "B", 2, name_en="Social insurance"),
    ),
    counters=tuple(CounterSpec(i, f"{i}号窗口", ("A", "B"), f"Counter {i}") for i in (1, 2, 3)),
)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def at(day: date, clock: str) -> datetime:
    h, m, *s = (int(x) for x in clock.split(":"))
    return datetime(day.year, day.month, day.day, h, m, s[0] if s else 0, tzinfo=TZ)


class Rig:
    def __init__(self, hall: Hall, client: TestClient[Any, Any], clock: Clock) -> None:
        self.hall, self.client, self.clock = hall, client, clock
        self.n = 0

    @property
    def stats(self) -> StatsService:
        app = self.client.app
        assert app is not None
        service: StatsService = app[STATS_KEY]
        return service

    async def do(self, *commands: c.Command) -> None:
        for cmd in commands:
            self.clock.at = cmd.at
            await self.hall.submit(cmd)

    async def take(self, when: datetime, service: str) -> None:
        self.n += 1
        await self.do(c.TakeTicket(when, service, f"token-{self.n:04d}-xxxxxxxxxxxx"))


async def play_week_ago(rig: Rig) -> None:
    """Two tickets served in the 9 o'clock hour, waits 30 s and 60 s (mean 45 s)."""
    d = WEEK_AGO
    await rig.take(at(d, "09:00"), "A")
    await rig.take(at(d, "09:00"), "A")
    await rig.do(
        c.CallNext(at(d, "09:00:30"), 1),
        c.CallNext(at(d, "09:01:00"), 2),
        c.Done(at(d, "09:05"), 1),
        c.Done(at(d, "09:06"), 2),
    )


async def play_the_day(rig: Rig) -> None:
    """A001 waits 120 s, served 300 s, rated 4; A002 waits 240 s, no-show; B001 cancelled;
    A003 still waiting at noon."""
    d = DAY
    await rig.take(at(d, "09:00"), "A")
    await rig.take(at(d, "09:00"), "A")
    await rig.take(at(d, "09:05"), "B")
    await rig.do(
        c.CallNext(at(d, "09:02"), 1),
        c.Serving(at(d, "09:03"), 1),
        c.CallNext(at(d, "09:04"), 2),
        c.NoShow(at(d, "09:06"), 2),
        c.Done(at(d, "09:08"), 1),
        c.Rate(at(d, "09:08:10"), 1, 4),
        c.Cancel(at(d, "09:20"), "B001", reason="app"),
    )
    await rig.take(at(d, "09:30"), "A")


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = Clock(at(WEEK_AGO, "08:00"))
    hall = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=clock)
    await hall.start()
    app = make_app(hall)
    add_stats_routes(app, hall)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    r = Rig(hall, client, clock)
    try:
        await play_week_ago(r)
        await play_the_day(r)
        clock.at = at(DAY, "12:00")
        yield r
    finally:
        await client.close()
        await hall.stop()


def by_key(rows: list[dict[str, Any]], key: object) -> dict[str, Any]:
    return next(r for r in rows if r["key"] == key)


async def test_json_has_the_days_figures_and_the_week_agos_best(rig: Rig) -> None:
    r = await rig.client.get("/admin/api/stats", params={"from": "2026-11-27", "to": "2026-11-27"})
    assert r.status == 200
    rep = await r.json()
    hall = rep["hall"]
    assert (rep["from"], rep["to"], rep["today"]) == ("2026-11-27", "2026-11-27", "2026-11-27")
    assert [hall[k] for k in ("issued", "called", "served", "no_show", "cancelled")] == [
        4,
        2,
        1,
        1,
        1,
    ]
    assert hall["unfinished"] == 1
    assert hall["wait"] == {"n": 2, "mean": 180.0, "median": 180.0, "p90": 228.0}
    assert hall["handle"] == {"n": 1, "mean": 300.0, "median": 300.0, "p90": 300.0}
    assert hall["ratings"] == {"n": 1, "mean": 4.0, "dist": [0, 0, 0, 1, 0]}
    assert hall["best"] == {"served": 2, "mean_wait": 45.0}
    assert by_key(rep["services"], "A")["issued"] == 3
    assert by_key(rep["services"], "B")["cancelled"] == 1
    assert by_key(rep["counters"], 2)["no_show"] == 1
    nine = next(h for h in hall["hourly"] if h["hour"] == 9)
    assert nine == {
        "hour": 9,
        "issued": 4,
        "served": 1,
        "mean_wait": 180.0,
        "best_served": 2,
        "best_mean_wait": 45.0,
    }

    # Without dates it is today; one date alone is that day; a range adds the days up.
    same = await (await rig.client.get("/admin/api/stats")).json()
    assert same["hall"] == hall
    week_ago = await (await rig.client.get("/admin/api/stats", params={"to": "2026-11-20"})).json()
    assert (week_ago["from"], week_ago["to"], week_ago["hall"]["served"]) == (
        "2026-11-20",
        "2026-11-20",
        2,
    )
    both = await (
        await rig.client.get("/admin/api/stats", params={"from": "2026-11-20", "to": "2026-11-27"})
    ).json()
    assert (both["days"], both["hall"]["issued"], both["hall"]["served"]) == (8, 6, 3)


async def test_closed_days_are_read_once_and_today_only_for_what_is_new(rig: Rig) -> None:
    q = {"from": "2026-11-27", "to": "2026-11-27"}
    await rig.client.get("/admin/api/stats", params=q)
    first = rig.stats.loaded_days
    assert first == 9  # today and the eight Fridays before it
    await rig.client.get("/admin/api/stats", params=q)
    assert rig.stats.loaded_days == first
    await rig.take(at(DAY, "12:00"), "B")
    rep = await (await rig.client.get("/admin/api/stats", params=q)).json()
    assert rig.stats.loaded_days == first
    assert rig.stats.today_events_read == 1  # just the new ticket.issued
    assert rep["hall"]["issued"] == 5


def parse_csv(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "UTF-8 with a BOM, for Excel"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


async def test_csv_exports_by_service_counter_and_ticket(rig: Rig) -> None:
    q = {"from": "2026-11-27", "to": "2026-11-27"}
    r = await rig.client.get("/admin/stats.csv", params={**q, "by": "service"})
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "hall-stats-service-2026-11-27_2026-11-27.csv" in r.headers["Content-Disposition"]
    rows = parse_csv(await r.read())
    head = rows[0]
    assert head[:4] == ["服务 service", "名称 name", "英文名 name_en", "取号 issued"]
    a = dict(zip(head, rows[1], strict=True))
    assert (a["服务 service"], a["名称 name"], a["取号 issued"], a["办结 served"]) == (
        "A",
        "企业开办",
        "3",
        "1",
    )
    assert (a["平均等候秒 wait_mean_s"], a["等候P90秒 wait_p90_s"]) == ("180.0", "228.0")
    assert (a["历史同期最多办结 best_served"], a["4分 rated_4"]) == ("2", "1")

    rows = parse_csv(
        await (await rig.client.get("/admin/stats.csv", params=q | {"by": "counter"})).read()
    )
    assert rows[0][0] == "窗口 counter" and rows[0][-1] == "异常 outlier"
    assert "取号 issued" not in rows[0]  # counters issue nothing
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]

    rows = parse_csv(
        await (await rig.client.get("/admin/stats.csv", params=q | {"by": "ticket"})).read()
    )
    head = rows[0]
    tickets = {r[1]: dict(zip(head, r, strict=True)) for r in rows[1:]}
    assert sorted(tickets) == ["A001", "A002", "A003", "B001"]
    a1 = tickets["A001"]
    assert (a1["等候秒 wait_s"], a1["办理秒 handle_s"], a1["结果 outcome"], a1["评分 rating"]) == (
        "120.0",
        "300.0",
        "served",
        "4",
    )
    assert tickets["A002"]["结果 outcome"] == "no_show"
    assert tickets["A003"]["结果 outcome"] == "unfinished"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"from": "2026-13-01"}, "not a calendar date"),
        ({"from": "27.11.2026"}, "YYYY-MM-DD"),
        ({"from": "2026-11-27", "to": "2026-11-20"}, "after"),
        ({"from": "2026-11-27", "to": "2026-11-28"}, "future"),
        ({"from": "2026-01-01", "to": "2026-11-27"}, "at most 92 days"),
    ],
)
async def test_bad_periods_get_a_clear_400(rig: Rig, query: dict[str, str], says: str) -> None:
    r = await rig.client.get("/admin/api/stats", params=query)
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "bad-period" and says in body["message"]
    r = await rig.client.get("/admin/stats.csv", params=query)
    assert r.status == 400 and says in await r.text()


async def test_csv_by_something_unknown_is_refused(rig: Rig) -> None:
    r = await rig.client.get("/admin/stats.csv", params={"by": "clerk"})
    assert r.status == 400 and "service, counter or ticket" in await r.text()


async def test_the_page_loads_its_own_script_and_styles_only(rig: Rig) -> None:
    r = await rig.client.get("/admin/stats")
    assert r.status == 200
    page = await r.text()
    assert 'data-today="2026-11-27"' in page and "效率统计" in page
    assert "/static/admin/stats.js?v=" in page and "/static/admin/stats.css?v=" in page
    assert "http://" not in page and "https://" not in page
    for name in ("stats.js", "stats.css"):
        assert (await rig.client.get(f"/static/admin/{name}")).status == 200


async def test_a_days_window_holds_exactly_the_events_of_its_time_range(rig: Rig) -> None:
    """The seq-window read finds what a time-range scan of the whole log finds."""
    # Stamped a minute earlier than the event before it (two adapters' clocks): still found.
    await rig.take(at(DAY, "09:29"), "B")
    store, spec = rig.hall.store, rig.hall.spec
    for day in (WEEK_AGO - timedelta(days=1), WEEK_AGO, DAY - timedelta(days=1), DAY):
        since, until = day_bounds(spec, day)
        expected = summarize_day(spec, day, list(store.iter_events(since, until)))
        got = await rig.stats._load(day)
        assert got.tickets == expected.tickets, day
        assert got.hourly == expected.hourly, day
    assert len((await rig.stats._load(DAY)).tickets) == 5


@pytest_asyncio.fixture
async def outlier_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A day played through the engine: 54 tickets one after another at counters 1-3,
    handling ±20% around the service's pace by a fixed pattern; counter 3 takes twice as
    long on everything, and one ticket at counter 1 takes six times as long."""
    clock = Clock(at(DAY, "08:00"))
    hall = Hall(SPEC, Store(Store.sqlite_url(tmp_path / "hall.db")), clock=clock)
    await hall.start()
    app = make_app(hall)
    add_stats_routes(app, hall)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    r = Rig(hall, client, clock)
    try:
        t = at(DAY, "09:00")
        for k in range(54):
            service, counter = "AB"[k % 2], 1 + (k // 2) % 3
            handle = {"A": 300.0, "B": 600.0}[service] * math.exp(0.2 * math.sin(k * 1.7))
            if counter == 3:
                handle *= 2.0
            if k == 12:  # A007 at counter 1
                handle *= 6.0
            await r.take(t, service)
            await r.do(c.CallNext(t + timedelta(seconds=10), counter))
            t += timedelta(seconds=10 + handle)
            await r.do(c.Done(t, counter))
            t += timedelta(seconds=5)
        clock.at = at(DAY, "23:00")
        yield r
    finally:
        await client.close()
        await hall.stop()


async def test_planted_slow_ticket_and_counter_are_flagged_in_json_and_csv(
    outlier_rig: Rig,
) -> None:
    rig = outlier_rig
    rep = await (await rig.client.get("/admin/api/stats")).json()
    out = rep["outliers"]
    assert out["model"]["fitted"] and out["model"]["tickets"] == 54
    assert [(t["number"], t["counter"]) for t in out["tickets"]] == [("A007", 1)]
    assert out["tickets"][0]["z"] > 3
    assert [c["counter"] for c in out["counters"]] == [3]
    flags = {r["key"]: r["outlier"]["flag"] for r in rep["counters"]}
    assert flags == {1: False, 2: False, 3: True}
    # About twice as long (the hour factor takes a little of it in so small a day).
    assert 1.5 < by_key(rep["counters"], 3)["outlier"]["ratio"] < 2.2

    rows = parse_csv(await (await rig.client.get("/admin/stats.csv?by=counter")).read())
    assert {r[0]: r[-1] for r in rows[1:]} == {"1": "", "2": "", "3": "yes"}
    rows = parse_csv(await (await rig.client.get("/admin/stats.csv?by=ticket")).read())
    flagged = [r[1] for r in rows[1:] if r[-1] == "yes"]
    assert flagged == ["A007"]

"""The display's HTTP and WebSocket side, in-process (no browser): headers, escaping, the
kiosk's commands, and one small message per change."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient, TestServer

from display import setup_display
from display.server import DisplayHandle
from hall_daemon import commands as c
from hall_daemon.config import HallConfig, OpeningHours, load_config
from hall_daemon.hall import Hall
from hall_daemon.receipts import Receipt
from hall_daemon.store import Store
from hall_daemon.web import make_app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(REPO / "config.yaml")
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


class Printer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.receipts: list[Receipt] = []

    async def print_receipt(self, receipt: Receipt) -> None:
        if self.fail:
            raise OSError("out of paper")
        self.receipts.append(receipt)


class Rig:
    def __init__(self, hall: Hall, client: TestClient[Any, Any], display: DisplayHandle) -> None:
        self.hall, self.client, self.display = hall, client, display

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        r = await self.client.post(path, json=body)
        return r.status, await r.json()


async def make_rig(
    tmp_path: Path, config: HallConfig = CONFIG, printer: Printer | None = None
) -> AsyncIterator[Rig]:
    hall = Hall(config.to_spec(), Store(Store.sqlite_url(tmp_path / "hall.db")), clock=lambda: T0)
    await hall.start()
    app = make_app(hall)
    display = setup_display(app, hall, config, receipts=printer)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Rig(hall, client, display)
    finally:
        await client.close()
        await hall.stop()


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in make_rig(tmp_path, printer=Printer()):
        yield r


async def test_pages_are_served_with_headers_that_keep_them_local(rig: Rig) -> None:
    for path in ("/screen/hall", "/screen/area-a", "/kiosk", "/screen/"):
        r = await rig.client.get(path)
        assert r.status == 200, path
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert r.headers["Referrer-Policy"] == "no-referrer"
        text = await r.text()
        assert "示范区政务服务中心" in text
        assert "http://" not in text and "https://" not in text
    r = await rig.client.get("/screen/nope")
    assert r.status == 404
    r = await rig.client.get("/static/display/screen.js")
    assert r.status == 200 and "HallFeed" in await r.text()


async def test_config_text_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    config = CONFIG.model_copy(
        update={
            "hall": CONFIG.hall.model_copy(update={"name": f'"><img src=x>{evil}'}),
            "screens": (CONFIG.screens[0].model_copy(update={"title": evil}),),
        }
    )
    async for rig in make_rig(tmp_path, config):
        text = await (await rig.client.get("/screen/hall")).text()
        assert evil not in text and "<img" not in text
        assert "&lt;script&gt;" in text


async def test_the_kiosk_issues_through_take_ticket_and_prints(tmp_path: Path) -> None:
    printer = Printer()
    async for rig in make_rig(tmp_path, printer=printer):
        status, body = await rig.post("/kiosk/ticket", {"service": "A", "kiosk": "k2"})
        assert status == 200
        t = body["ticket"]
        assert (t["number"], t["state"], t["ahead"], t["priority"]) == ("A001", "waiting", 0, False)
        assert body["receipt"] == "printing" and body["existing"] is False
        ticket = rig.hall.state.tickets["A001"]
        assert ticket.channel == "dispenser"
        assert ticket.token not in json.dumps(body)
        await asyncio.sleep(0.05)
        [receipt] = printer.receipts
        assert receipt.kiosk == "k2" and receipt.qr_url.endswith(f"/t/{ticket.token}")
        assert ticket.token not in repr(receipt)

        status, body = await rig.post("/kiosk/ticket", {"service": "B", "priority": True})
        assert status == 200 and body["ticket"]["priority"] is True
        assert rig.hall.state.tickets["B001"].priority is True

        # Refusals keep the engine's error slug, for the page's message.
        assert (await rig.post("/kiosk/ticket", {"service": "Z"}))[0] == 404
        status, body = await rig.post("/kiosk/code", {"code": "nope"})
        assert status == 404 and body["error"]["slug"] == "no-appointment-now"
        assert (await rig.post("/kiosk/ticket", {"service": 1}))[0] == 400
        assert (await rig.post("/kiosk/ticket", ["A"]))[0] == 400
        # A cross-site form post cannot send JSON: refused before anything happens.
        r = await rig.client.post("/kiosk/ticket", data={"service": "A"})
        assert r.status == 415
        assert len(rig.hall.state.tickets) == 2


async def test_a_closed_service_is_refused_at_the_kiosk(tmp_path: Path) -> None:
    services = list(CONFIG.services)
    services[1] = services[1].model_copy(
        update={"hours": (OpeningHours.model_validate({"open": "13:00", "close": "14:00"}),)}
    )
    config = CONFIG.model_copy(update={"services": tuple(services)})
    async for rig in make_rig(tmp_path, config):
        status, body = await rig.post("/kiosk/ticket", {"service": "B"})
        assert status == 409 and body["error"]["slug"] == "service-closed"


async def test_a_failed_print_is_told_to_the_kiosk_and_keeps_the_ticket(tmp_path: Path) -> None:
    async for rig in make_rig(tmp_path, printer=Printer(fail=True)):
        async with rig.client.ws_connect("/ws/kiosk") as ws:
            full = await ws.receive_json(timeout=5)
            assert full["t"] == "full" and full["services"]["A"]["available"] is True
            status, _ = await rig.post("/kiosk/ticket", {"service": "A", "kiosk": "k3"})
            assert status == 200
            seen = [await ws.receive_json(timeout=5) for _ in range(2)]
            printed = next(m for m in seen if m["t"] == "printed")
            assert printed == {"t": "printed", "number": "A001", "kiosk": "k3", "ok": False}
            assert rig.hall.state.tickets["A001"].state == "waiting"


async def test_a_screen_gets_its_full_state_then_one_small_patch_per_change(rig: Rig) -> None:
    hall = rig.hall
    tokens = [f"tok-{i:02d}-0123456789abcdef" for i in range(5)]
    for i, t in enumerate(tokens):
        await hall.submit(c.TakeTicket(T0 + timedelta(seconds=i), "A", t))
    async with rig.client.ws_connect("/ws/screen/hall") as ws:
        full = await ws.receive_json(timeout=5)
        assert full["t"] == "full" and full["screen"]["id"] == "hall"
        assert full["queues"]["A"]["waiting"] == 5
        assert full["notice"] == CONFIG.hall.notice
        assert full["now"] == round(T0.timestamp() * 1000) and full["utc_offset_min"] == 480

        await hall.submit(c.CallNext(T0, 1))
        # The call on its own first (no forecast to wait for), then the waiting figures.
        raw = await ws.receive_str(timeout=5)
        patch = json.loads(raw)
        assert patch["t"] == "patch"
        assert patch["flash"] == [{"number": "A001", "service": "A", "counter": 1, "recall": False}]
        assert patch["calls"][0]["number"] == "A001"
        assert set(patch["counters"]) == {"1"}
        assert "queues" not in patch
        assert len(raw.encode()) < 1024
        raw = await ws.receive_str(timeout=5)
        patch = json.loads(raw)
        assert patch["queues"] == {"A": patch["queues"]["A"]}  # only the queue that changed
        assert patch["queues"]["A"]["waiting"] == 4
        assert set(patch) == {"t", "seq", "queues"}
        assert len(raw.encode()) < 1024

        await hall.submit(c.Recall(T0, 1))
        patch = await ws.receive_json(timeout=5)
        assert patch["flash"][0]["recall"] is True
        assert "queues" not in patch

        # An event that changes nothing this screen shows sends nothing.
        await hall.submit(
            c.ReportDevice(T0, "kp-1", "counter-bus", "keypad", "offline", "no answer")
        )
        await hall.submit(c.CallNext(T0, 2))
        patch = await ws.receive_json(timeout=5)
        assert patch["flash"][0]["number"] == "A002"
        figures = await ws.receive_json(timeout=5)
        assert figures["queues"]["A"]["waiting"] == 3

        everything = json.dumps(full) + json.dumps(patch) + json.dumps(figures)
        assert not any(t in everything for t in tokens)

        rig.display.set_notice("新的公告")
        assert await ws.receive_json(timeout=5) == {"t": "notice", "text": "新的公告"}


async def test_a_ticket_feed_follows_one_ticket_or_says_gone(rig: Rig) -> None:
    hall = rig.hall
    await hall.submit(c.TakeTicket(T0, "C", "someone-elses-token-xyz"))
    await hall.submit(c.TakeTicket(T0 + timedelta(seconds=1), "C", "my-own-token-0123456789"))
    r = await rig.client.get("/t/my-own-token-0123456789")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    async with rig.client.ws_connect("/ws/t/my-own-token-0123456789") as ws:
        full = await ws.receive_json(timeout=5)
        assert full["ticket"]["number"] == "C002" and full["ticket"]["ahead"] == 1
        await hall.submit(c.CallNext(T0, 5))
        msg = await ws.receive_json(timeout=5)
        assert msg["t"] == "ticket" and msg["ticket"]["ahead"] == 0
        await hall.submit(c.CallNext(T0, 5))
        msg = await ws.receive_json(timeout=5)
        assert msg["ticket"]["state"] == "called" and msg["ticket"]["counter"] == 5
        assert "someone-elses" not in json.dumps(msg) and "C001" not in json.dumps(msg)
    r = await rig.client.get("/t/someone-elses-token-xyq")
    assert r.status == 404
    assert "C00" not in await r.text()
    async with rig.client.ws_connect("/ws/t/not-a-token-of-anyone-at-all") as ws:
        assert await ws.receive_json(timeout=5) == {"t": "gone"}


async def test_stopping_the_server_closes_the_pages_sockets_for_a_reconnect(
    tmp_path: Path,
) -> None:
    hall = Hall(CONFIG.to_spec(), Store(Store.sqlite_url(tmp_path / "h.db")), clock=lambda: T0)
    await hall.start()
    app = make_app(hall)
    setup_display(app, hall, CONFIG)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.make_url("/ws/screen/hall"))
        assert (await ws.receive_json(timeout=5))["t"] == "full"
        closing = asyncio.ensure_future(server.close())
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == WSCloseCode.SERVICE_RESTART
        await ws.close()
        await asyncio.wait_for(closing, 5)
    await hall.stop()


async def test_a_new_hall_day_ends_a_tickets_page(rig: Rig) -> None:
    hall = rig.hall
    await hall.submit(c.TakeTicket(T0, "A", "yesterdays-token-0123456"))
    async with rig.client.ws_connect("/ws/t/yesterdays-token-0123456") as ws:
        assert (await ws.receive_json(timeout=5))["ticket"]["number"] == "A001"
        await hall.submit(c.Tick(T0 + timedelta(days=1)))
        while (msg := await ws.receive_json(timeout=5))["t"] != "gone":
            assert msg["ticket"]["state"] == "cancelled"
    async with rig.client.ws_connect("/ws/screen/hall") as ws:
        full = await ws.receive_json(timeout=5)
        assert full["calls"] == [] and full["queues"]["A"]["waiting"] == 0


async def test_a_screen_that_missed_events_gets_the_full_state_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import display.feed

    monkeypatch.setattr(display.feed, "BUS_QUEUE", 1)  # the bus drops all but one of a burst
    async for rig in make_rig(tmp_path):
        async with rig.client.ws_connect("/ws/screen/hall") as ws:
            assert (await ws.receive_json(timeout=5))["t"] == "full"
            await asyncio.gather(
                *(
                    rig.hall.submit(c.TakeTicket(T0 + timedelta(seconds=i), "C", f"burst-{i:03d}"))
                    for i in range(40)
                )
            )
            while (msg := await ws.receive_json(timeout=5))["t"] != "full":
                pass
            assert msg["queues"]["C"]["waiting"] == 40
        assert rig.hall.bus.stats()["display"].dropped > 0


async def test_pages_are_capped_per_ticket_and_screens_per_address(rig: Rig) -> None:
    limits = rig.display.hub.config.web.limits
    await rig.hall.submit(c.TakeTicket(T0, "A", "a-phone-behind-the-gateway-1"))
    await rig.hall.submit(c.TakeTicket(T0, "A", "a-phone-behind-the-gateway-2"))
    async with contextlib.AsyncExitStack() as pages:
        for _ in range(limits.feeds_per_ticket):
            ws = await pages.enter_async_context(
                rig.client.ws_connect("/ws/t/a-phone-behind-the-gateway-1")
            )
            assert (await ws.receive_json(timeout=5))["t"] == "full"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await rig.client.ws_connect("/ws/t/a-phone-behind-the-gateway-1")
        assert refused.value.status == 429 and refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "30"
        # Another phone from the same address: its own ticket, its own share.
        ws = await pages.enter_async_context(
            rig.client.ws_connect("/ws/t/a-phone-behind-the-gateway-2")
        )
        assert (await ws.receive_json(timeout=5))["t"] == "full"

        for i in range(limits.feeds_per_client):
            path = "/ws/kiosk" if i % 2 else "/ws/screen/hall"
            ws = await pages.enter_async_context(rig.client.ws_connect(path))
            assert (await ws.receive_json(timeout=5))["t"] == "full"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await rig.client.ws_connect("/ws/screen/area-a")
        assert refused.value.status == 429
    for _ in range(100):  # the server's side of the closes
        if rig.display.stats()["connected"]["screens"]["hall"] == 0:
            break
        await asyncio.sleep(0.02)
    async with rig.client.ws_connect("/ws/screen/area-a") as ws:  # the share is back
        assert (await ws.receive_json(timeout=5))["t"] == "full"


async def test_the_kiosk_tells_a_guesser_nothing_about_codes_it_cannot_check_in_now(
    rig: Rig,
) -> None:
    tomorrow, later = T0 + timedelta(days=1), T0 + timedelta(hours=3)
    hour = timedelta(hours=1)
    await rig.hall.submit(c.UpsertAppointment(T0, "TOMORROW", "B", tomorrow, tomorrow + hour))
    await rig.hall.submit(c.UpsertAppointment(T0, "LATER", "B", later, later + hour))
    await rig.hall.submit(c.UpsertAppointment(T0, "NOW", "B", T0, T0 + timedelta(minutes=30)))
    assert (await rig.post("/kiosk/code", {"code": "NOW"}))[0] == 200
    answers = [
        (await rig.post("/kiosk/code", {"code": code}))
        for code in ("NO-SUCH-CODE", "TOMORROW", "LATER", "NOW")
    ]
    assert answers == [answers[0]] * 4, answers
    status, body = answers[0]
    assert status == 404 and body["error"]["slug"] == "no-appointment-now"
    assert "check-in opens 30 minutes before" in body["error"]["message"]
    assert len(rig.hall.state.tickets) == 1

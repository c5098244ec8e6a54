"""The admin gate, in-process on a real hall (SQLite in tmp) behind aiohttp's test server:
no session, no CSRF token or another site's Origin changes nothing; wrong passwords are
throttled; the password is generated once, left in a private file the log names, and stored
only as a hash."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiohttp import hdrs
from aiohttp.test_utils import TestClient, TestServer

from hall_daemon import cli
from hall_daemon import commands as c
from hall_daemon.admin import AdminHandle, setup_admin
from hall_daemon.admin.auth import FILE_NAME, INITIAL_NAME, PasswordFile
from hall_daemon.admin.ratelimit import FREE_FAILURES
from hall_daemon.config import HallConfig, load_config
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from hall_daemon.web import LOOP_KEY, make_app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

# What a visitor may reach without logging in (issue 9: /healthz and the display pages).
PUBLIC_ROUTES = {
    "/healthz",
    "/api/queues",
    "/screen/",
    "/screen/{id}",
    "/kiosk",
    "/kiosk/ticket",
    "/kiosk/code",
    "/t/{token}",
    "/ws/screen/{id}",
    "/ws/kiosk",
    "/ws/t/{token}",
    "/admin/login",
}


def hall_config(state_dir: Path) -> HallConfig:
    config = load_config(REPO / "config.yaml")
    return config.model_copy(update={"state_dir": state_dir})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(
        self, hall: Hall, client: TestClient[Any, Any], admin: AdminHandle, password: str | None
    ) -> None:
        self.hall, self.client, self.admin = hall, client, admin
        self.password = password
        self.clock = Clock()
        admin.guard.clock = self.clock

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def seq(self) -> int:
        return self.hall.store.last_seq()

    async def login(self, password: str | None = None) -> str:
        """Log in; return the session's CSRF token (from the page's meta tag)."""
        r = await self.client.post(
            "/admin/login",
            data={"password": password or self.password, "next": "/admin/"},
            headers={"Origin": self.origin},
            allow_redirects=False,
        )
        assert r.status == 303, await r.text()
        page = await (await self.client.get("/admin/", headers={"Accept": "text/html"})).text()
        m = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert m is not None
        return m.group(1)

    async def act(
        self, name: str, body: dict[str, Any], *, csrf: str | None, origin: str | None = "self"
    ) -> tuple[int, Any]:
        headers = {}
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        if origin is not None:
            headers["Origin"] = self.origin if origin == "self" else origin
        r = await self.client.post(f"/admin/api/actions/{name}", json=body, headers=headers)
        return r.status, await r.json()


async def make_rig(
    state_dir: Path, caplog: pytest.LogCaptureFixture | None = None, public_url: str | None = None
) -> AsyncIterator[Rig]:
    config = hall_config(state_dir)
    if public_url is not None:
        web_config = config.web.model_copy(update={"public_url": public_url})
        config = config.model_copy(update={"web": web_config})
    hall = Hall(config.to_spec(), Store(Store.sqlite_url(state_dir / "hall.db")), clock=lambda: T0)
    await hall.start()
    app = make_app(hall)
    # The display's pages are public; mount them as the daemon does, before the gate.
    from display import setup_display

    setup_display(app, hall, config)
    admin = setup_admin(app, hall, config)  # with the statistics pages it mounts
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    password = None
    initial = state_dir / INITIAL_NAME
    if caplog is not None and initial.exists():
        password = initial.read_text(encoding="utf-8").strip()
    try:
        yield Rig(hall, client, admin, password)
    finally:
        await client.close()
        await hall.stop()


@pytest_asyncio.fixture
async def rig(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Rig]:
    caplog.set_level(logging.INFO)
    async for r in make_rig(tmp_path, caplog):
        assert r.password is not None, "the first start must make a password"
        yield r


def concrete(pattern: str) -> str:
    samples = {"action": "counter.open", "id": "hall", "token": "x" * 22, "filename": "x"}
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: samples.get(m.group(1), "1"), pattern)


async def test_first_start_leaves_the_password_in_a_private_file_and_keeps_its_hash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async for r in make_rig(tmp_path, caplog):
        assert r.password is not None and len(r.password) >= 16
        assert not any(r.password in rec.getMessage() for rec in caplog.records)
        initial = tmp_path / INITIAL_NAME
        assert stat.S_IMODE(initial.stat().st_mode) == 0o600
        [note] = [rec.getMessage() for rec in caplog.records if str(initial) in rec.getMessage()]
        assert "set-password" in note
        path = tmp_path / FILE_NAME
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert r.password not in text and '"scheme": "scrypt"' in text
        assert '"n": 32768' in text
        await r.login()
        first = r.password
    caplog.clear()
    async for r in make_rig(tmp_path, caplog):  # a restart: no new password
        assert not any("password generated" in rec.getMessage() for rec in caplog.records)
        assert (tmp_path / INITIAL_NAME).read_text().strip() == first
        await r.login(first)


async def test_without_a_session_every_admin_route_refuses_and_changes_nothing(rig: Rig) -> None:
    await rig.hall.submit(c.TakeTicket(T0, "A", "t" * 22))
    before = rig.seq()
    protected = []
    for resource in rig.client.app.router.resources():
        pattern = resource.canonical
        if pattern in PUBLIC_ROUTES or pattern.startswith("/static/"):
            continue
        for route in resource:
            if route.method == "HEAD":
                continue
            protected.append((route.method, pattern))
    # The admin's own routes are among them (the enumeration is not vacuous).
    assert ("POST", "/admin/api/actions/{action}") in protected
    assert ("GET", "/metrics") in protected and ("GET", "/admin/ws") in protected
    assert ("GET", "/admin/stats.csv") in protected
    for method, pattern in protected:
        path = concrete(pattern)
        for accept in ("application/json", "text/html"):
            r = await rig.client.request(
                method,
                path,
                json={"counter": 1, "ticket": "A001", "text": "x", "service": "A"},
                headers={"Accept": accept, "Origin": rig.origin},
                allow_redirects=False,
            )
            if method == "GET" and accept == "text/html":
                assert r.status == 303, (method, path, r.status)
                assert r.headers["Location"].startswith("/admin/login?next=")
            else:
                assert r.status in (401, 403), (method, path, r.status)
    # A made-up path is protected too, and a path trick does not reach the admin side.
    for path in (
        "/admin/nothing",
        "/admin/receipts/sample.png",
        "/screen/../admin/api/status",
        "/static/../admin/",
        "/static/admin/../../admin/api/status",
        "/t/..%2F..%2Fadmin%2Fapi%2Fstatus",
    ):
        r = await rig.client.get(path, allow_redirects=False)
        assert r.status in (401, 403, 404) and r.status != 200, path
    r = await rig.client.post("/admin/api/actions/counter.open", json={"counter": 1})
    assert r.status == 401
    assert rig.seq() == before
    assert rig.hall.state.counters[1].state == "closed"


async def test_public_pages_need_no_login(rig: Rig) -> None:
    for path in ("/healthz", "/api/queues", "/screen/hall", "/kiosk", "/admin/login"):
        r = await rig.client.get(path)
        assert r.status == 200, path


async def test_forged_requests_without_csrf_token_or_from_another_site_are_refused(
    rig: Rig,
) -> None:
    csrf = await rig.login()
    before = rig.seq()
    status, body = await rig.act("counter.open", {"counter": 1}, csrf=None)
    assert status == 403 and body["error"]["code"] == "bad-csrf"
    status, body = await rig.act("counter.open", {"counter": 1}, csrf="x" * 43)
    assert status == 403 and body["error"]["code"] == "bad-csrf"
    status, body = await rig.act("counter.open", {"counter": 1}, csrf=csrf, origin="http://evil")
    assert status == 403 and body["error"]["code"] == "bad-origin"
    status, body = await rig.act("counter.open", {"counter": 1}, csrf=csrf, origin=None)
    assert status == 403 and body["error"]["code"] == "bad-origin"
    # A cross-site HTML form (no token field) cannot log out or act either.
    r = await rig.client.post(
        "/admin/logout", data={"x": "1"}, headers={"Origin": rig.origin}, allow_redirects=False
    )
    assert r.status == 403
    assert rig.seq() == before and rig.hall.state.counters[1].state == "closed"
    # The same request with the token from the page goes through and is logged as events.
    status, body = await rig.act("counter.open", {"counter": 1}, csrf=csrf)
    assert status == 200 and [e["type"] for e in body["events"]] == ["counter.opened"]
    assert rig.seq() == before + 1 and rig.hall.state.counters[1].state == "open"


async def test_status_websocket_needs_a_session_and_our_origin(rig: Rig) -> None:
    r = await rig.client.get("/admin/ws", headers={"Origin": rig.origin})
    assert r.status == 401
    await rig.login()
    r = await rig.client.get(
        "/admin/ws",
        headers={
            "Origin": "http://evil.example",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert r.status == 403
    ws = await rig.client.ws_connect("/admin/ws", headers={"Origin": rig.origin})
    msg = await ws.receive_json(timeout=5)
    assert msg["t"] == "status" and {c["counter"] for c in msg["counters"]} >= {1, 2}
    await ws.close()


async def test_twenty_wrong_passwords_are_throttled(rig: Rig) -> None:
    statuses = []
    for i in range(20):
        r = await rig.client.post(
            "/admin/login",
            data={"password": f"wrong-{i}-password"},
            headers={"Origin": rig.origin},
            allow_redirects=False,
        )
        statuses.append(r.status)
        if r.status == 429:
            assert int(r.headers[hdrs.RETRY_AFTER]) >= 1
    assert statuses[:FREE_FAILURES] == [401] * FREE_FAILURES
    assert statuses[FREE_FAILURES:] == [429] * (20 - FREE_FAILURES)
    # While throttled even the right password is not tried.
    r = await rig.client.post(
        "/admin/login",
        data={"password": rig.password},
        headers={"Origin": rig.origin},
        allow_redirects=False,
    )
    assert r.status == 429
    rig.clock.now += 3600  # an hour later the address starts afresh
    await rig.login()


async def test_login_from_another_site_is_refused(rig: Rig) -> None:
    r = await rig.client.post(
        "/admin/login",
        data={"password": rig.password},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert r.status == 403 and "Set-Cookie" not in r.headers


async def test_session_cookie_flags_idle_expiry_and_logout(rig: Rig) -> None:
    r = await rig.client.post(
        "/admin/login",
        data={"password": rig.password, "next": "https://evil.example/"},
        headers={"Origin": rig.origin},
        allow_redirects=False,
    )
    assert r.status == 303 and r.headers["Location"] == "/admin/"  # no open redirect
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    sid = re.search(r"hall_admin=([^;]+)", cookie)
    assert sid is not None and len(sid.group(1)) >= 43  # 256 bits, url-safe base64
    assert (await rig.client.get("/admin/api/status")).status == 200
    rig.clock.now += 31 * 60  # idle longer than 30 minutes
    assert (await rig.client.get("/admin/api/status")).status == 401
    csrf = await rig.login()
    r = await rig.client.post(
        "/admin/logout",
        data={"csrf_token": csrf},
        headers={"Origin": rig.origin},
        allow_redirects=False,
    )
    assert r.status == 303
    rig.client.session.cookie_jar.update_cookies({"hall_admin": sid.group(1)})
    assert (await rig.client.get("/admin/api/status")).status == 401


async def test_set_password_replaces_it_and_ends_old_sessions(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await rig.login()) and (await rig.client.get("/admin/api/status")).status == 200
    config_file = tmp_path / "config.yaml"
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    config_file.write_text(
        text.replace("state_dir: ./state", f"state_dir: {tmp_path}"), encoding="utf-8"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["set-password", "-c", str(config_file), "--stdin"]) == 2
    # Make sure the file's version (mtime) moves even on a coarse file system clock.
    os.utime(tmp_path / FILE_NAME, ns=(1, 1))
    monkeypatch.setattr("sys.stdin", io.StringIO("a new long admin password\n"))
    assert cli.main(["set-password", "-c", str(config_file), "--stdin"]) == 0
    assert "admin password set" in capsys.readouterr().err
    stored = (tmp_path / FILE_NAME).read_text()
    assert "a new long admin password" not in stored
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600
    assert PasswordFile(tmp_path).verify("a new long admin password")
    assert not (tmp_path / INITIAL_NAME).exists()  # the generated one's file went with it
    # The running daemon: the old session is over, the old password wrong, the new one right.
    assert (await rig.client.get("/admin/api/status")).status == 401
    r = await rig.client.post(
        "/admin/login",
        data={"password": rig.password},
        headers={"Origin": rig.origin},
        allow_redirects=False,
    )
    assert r.status == 401
    await rig.login("a new long admin password")


async def test_metrics_need_a_session_or_the_bearer_token(rig: Rig, tmp_path: Path) -> None:
    assert (await rig.client.get("/metrics")).status == 401
    token_file = tmp_path / "metrics-token"
    token_file.write_text("s3cret-scrape-token-0123456789\n")
    rig.admin.guard.metrics_token_file = token_file
    r = await rig.client.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong"})
    assert r.status == 401
    r = await rig.client.get(
        "/metrics", headers={"Authorization": "Bearer s3cret-scrape-token-0123456789"}
    )
    assert r.status == 200 and "hall_queue_waiting" in await r.text()
    # The token does not open anything else.
    r = await rig.client.get(
        "/admin/api/status", headers={"Authorization": "Bearer s3cret-scrape-token-0123456789"}
    )
    assert r.status == 401


async def test_healthz_says_not_ready_when_the_loop_lags(rig: Rig) -> None:
    monitor = rig.client.app[LOOP_KEY]
    assert monitor.probes > 0 or monitor.lag_s == 0  # the probe runs with the app
    await monitor.stop()  # hold the figure still (this machine is shared and busy)
    monitor.lag_s = 0.01
    r = await rig.client.get("/healthz")
    assert r.status == 200 and (await r.json())["ok"] is True
    monitor.lag_s = 2.0  # a stalled loop, as the probe last saw it
    r = await rig.client.get("/healthz")
    body = await r.json()
    assert r.status == 503 and body["loop"] is False and body["store"] is True


def test_throttle_counts_each_try_before_its_check_and_waits_grow() -> None:
    from hall_daemon.admin.ratelimit import (
        FIRST_WAIT_S,
        GLOBAL_FAILURES,
        LoginAttempt,
        LoginThrottle,
    )

    t = LoginThrottle()
    now = 0.0
    tries = [t.reserve("10.0.0.1", now) for _ in range(200)]  # all at once, none checked yet
    attempts = [a for a in tries if isinstance(a, LoginAttempt)]
    assert len(attempts) == FREE_FAILURES
    assert all(w == FIRST_WAIT_S for w in tries[FREE_FAILURES:])
    waits: list[float] = [FIRST_WAIT_S]
    for _ in range(4):
        now += waits[-1]  # tried again as soon as allowed: checked, then a longer wait
        assert isinstance(t.reserve("10.0.0.1", now), LoginAttempt)
        wait = t.reserve("10.0.0.1", now)
        assert isinstance(wait, float)
        waits.append(wait)
    waits = waits[1:]
    assert waits == [FIRST_WAIT_S * 2, FIRST_WAIT_S * 4, FIRST_WAIT_S * 8, FIRST_WAIT_S * 16]
    assert isinstance(t.reserve("10.0.0.2", now), LoginAttempt)  # another address: no wait
    right = t.reserve("10.0.0.3", now)
    assert isinstance(right, LoginAttempt)
    t.succeeded(right)
    assert t.failures("10.0.0.3") == 0
    # Wrong passwords from many addresses at once: everyone waits a minute, but this PC.
    for i in range(GLOBAL_FAILURES):
        t.reserve(f"10.1.{i // 250}.{i % 250}", now + 1)
    assert t.reserve("10.9.9.9", now + 2) == pytest.approx(59.0)
    assert isinstance(t.reserve("127.0.0.1", now + 2), LoginAttempt)
    assert isinstance(t.reserve("::1", now + 2), LoginAttempt)
    assert isinstance(t.reserve("10.9.9.9", now + 62), LoginAttempt)


def test_client_keys_group_an_ipv6_range_and_unwrap_mapped_ipv4() -> None:
    from hall_daemon.admin.ratelimit import client_key

    assert client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::1")
    assert client_key("2001:db8:1:2::5") != client_key("2001:db8:1:3::5")
    assert client_key("::ffff:192.168.1.21") == "192.168.1.21"
    assert client_key("::1") == "::1" and client_key(None) == "unknown"


def test_token_buckets_refill_refuse_with_the_wait_and_stay_bounded() -> None:
    from hall_daemon.admin.ratelimit import TokenBuckets

    b = TokenBuckets(burst=3, every_s=10.0, max_clients=100)
    assert [b.take("k", 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]
    assert b.take("k", 5.0) == pytest.approx(5.0)
    assert b.take("k", 10.0) == 0.0
    b.give_back("k", 10.0)
    assert b.take("k", 10.0) == 0.0
    for i in range(10_000):
        b.take(f"10.0.{i // 250}.{i % 250}", 20.0)
    assert len(b) == 100


async def test_the_notice_survives_a_restart_of_the_hall(tmp_path: Path) -> None:
    config = hall_config(tmp_path)
    db = Store.sqlite_url(tmp_path / "hall.db")
    hall = Hall(config.to_spec(), Store(db), clock=lambda: T0, snapshot_every=2)
    await hall.start()
    await hall.submit(c.SetNotice(T0, "窗口3暂停服务 Counter 3 closed today"))
    await hall.submit(c.TakeTicket(T0, "A", "r" * 22))  # past a snapshot, then more events
    await hall.submit(c.SetNotice(T0, "午休 12:00-13:00"))
    await hall.stop()
    again = Hall(config.to_spec(), Store(db), clock=lambda: T0)
    await again.start()
    try:
        assert again.state.notice == "午休 12:00-13:00"
    finally:
        await again.stop()


def test_set_password_prompts_twice_and_changes_nothing_when_they_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "config.yaml"
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    config_file.write_text(
        text.replace("state_dir: ./state", f"state_dir: {tmp_path}"), encoding="utf-8"
    )
    answers = iter(["first long password", "second long password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["set-password", "-c", str(config_file)]) == 1
    assert not (tmp_path / FILE_NAME).exists()
    answers = iter(["same long password", "same long password"])
    assert cli.main(["set-password", "-c", str(config_file)]) == 0
    assert PasswordFile(tmp_path).verify("same long password")
    assert not PasswordFile(tmp_path).verify("first long password")


async def test_an_open_status_page_is_cut_off_when_its_session_ends(rig: Rig) -> None:
    await rig.login()
    ws = await rig.client.ws_connect("/admin/ws", headers={"Origin": rig.origin})
    assert (await ws.receive_json(timeout=5))["t"] == "status"
    await rig.hall.submit(c.TakeTicket(T0, "A", "s" * 22))
    pushed = await ws.receive_json(timeout=5)  # pushed live: the new ticket is there
    assert [t["number"] for t in pushed["tickets"]] == ["A001"]
    rig.clock.now += 31 * 60  # the admin walked away; the open page does not count
    await rig.hall.submit(c.TakeTicket(T0, "A", "u" * 22))
    msg = await ws.receive(timeout=5)
    assert msg.type.name in ("CLOSE", "CLOSED") and ws.close_code == 4401


async def test_the_cookie_is_secure_when_the_hall_is_served_over_https(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async for r in make_rig(tmp_path, caplog, public_url="https://hall.example.gov.cn"):
        response = await r.client.post(
            "/admin/login",
            data={"password": r.password},
            headers={"Origin": "https://hall.example.gov.cn"},  # through the city's gateway
            allow_redirects=False,
        )
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie

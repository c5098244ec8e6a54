"""Issue 17's web items replayed against the real `hall-daemon run` process on loopback:
login bursts, kiosk floods, check-in code guessing, hostile JSON, the Server banner and the
first start's password. The attacker's "other machine" is another loopback source address
(127.0.0.2 and up): the daemon listens on 127.0.0.1 and counts only 127.0.0.1 as this PC."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.daemon_harness import (
    Daemon,
    admin_login,
    client_session,
    free_port,
    hall_daemon,
    quiet_config,
    seed_appointment,
)

pytestmark = pytest.mark.service

PASSWORD = "the hall admin's own password"
APPOINTMENT = "000777"  # a real code among the 2,000 an attacker tries in order
KIOSK_KEY = "lobby-kiosk-key-0123456789abcdef"


@dataclass
class Running:
    daemon: Daemon
    base: str
    state: Path


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One daemon with the shipped defaults (only this PC is a kiosk) and an appointment."""
    tmp = tmp_path_factory.mktemp("attack-web")
    port = free_port()
    config = quiet_config(tmp, port)
    seed_appointment(config, APPOINTMENT)
    daemon = Daemon(config, port)
    daemon.start()
    try:
        yield Running(daemon, f"http://127.0.0.1:{port}", tmp / "state")
    finally:
        assert daemon.stop() == 0


async def post_json(
    s: aiohttp.ClientSession, url: str, body: Any = None, *, data: str | None = None
) -> tuple[int, Any, Any]:
    kw: dict[str, Any] = {"headers": {"Content-Type": "application/json"}}
    kw["data"] = data if data is not None else json.dumps(body)
    async with s.post(url, **kw) as r:
        text = await r.text()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        return r.status, payload, r.headers


async def metric(s: aiohttp.ClientSession, base: str, name: str) -> float:
    async with s.get(base + "/metrics") as r:
        assert r.status == 200
        m = re.search(rf"(?m)^{name} (\S+)$", await r.text())
        assert m is not None, name
        return float(m.group(1))


# -- login ---------------------------------------------------------------------------------


async def burst_logins(base: str, source: str, n: int) -> list[tuple[int, str | None]]:
    async with client_session(source) as s:

        async def one(i: int) -> tuple[int, str | None]:
            async with s.post(
                base + "/admin/login",
                data={"password": f"wrong password {i}"},
                headers={"Origin": base},
                allow_redirects=False,
            ) as r:
                await r.read()
                return r.status, r.headers.get("Retry-After")

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_a_login_burst_checks_a_handful_and_never_locks_out_this_pc(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = quiet_config(tmp_path, port)
    done = hall_daemon("set-password", "-c", str(config), "--stdin", input=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    daemon = Daemon(config, port)
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with client_session() as admin:
            assert (await admin_login(admin, base, PASSWORD))[0] == 303
            before = await metric(admin, base, "hall_admin_login_checks_total")
            answers = await burst_logins(base, "127.0.0.2", 200)
            checks = await metric(admin, base, "hall_admin_login_checks_total") - before
            assert checks <= 5, f"{checks:.0f} of 200 concurrent wrong passwords were checked"
            refused = [retry for status, retry in answers if status == 429]
            assert len(refused) >= 195 and all(r and int(r) >= 1 for r in refused)
            # Wrong passwords from many other addresses set off the hall-wide brake ...
            for last in range(3, 30):
                await burst_logins(base, f"127.0.0.{last}", 3)
            [(status, retry)] = await burst_logins(base, "127.0.0.31", 1)
            assert status == 429 and retry is not None
        # ... which does not apply to the hall PC itself: its admin logs in at once.
        async with client_session() as again:
            assert (await admin_login(again, base, PASSWORD))[0] == 303
    finally:
        assert daemon.stop() == 0


# -- kiosk ---------------------------------------------------------------------------------


async def test_a_kiosk_flood_is_limited_and_leaves_the_daily_limit(hall: Running) -> None:
    async with client_session() as s:
        answers = await asyncio.gather(
            *(post_json(s, hall.base + "/kiosk/ticket", {"service": "A"}) for _ in range(200))
        )
    issued = [a for a in answers if a[0] == 200]
    limited = [a for a in answers if a[0] == 429]
    assert len(issued) <= 10 and len(issued) + len(limited) == 200
    assert all(int(h["Retry-After"]) >= 1 for _s, _b, h in limited)
    assert all(b["error"]["slug"] == "too-many-tickets" for _s, b, _h in limited)
    _, queues = hall.daemon.get("/api/queues")
    waiting = {q["service"]: q["waiting"] for q in queues["services"]}
    assert waiting["A"] == len(issued) < 200


async def test_a_client_that_is_not_a_kiosk_gets_403(hall: Running) -> None:
    async with client_session("127.0.0.2") as s:
        for path, body in (("/kiosk/ticket", {"service": "C"}), ("/kiosk/code", {"code": "1"})):
            status, answer, _ = await post_json(s, hall.base + path, body)
            assert status == 403 and answer["error"]["slug"] == "not-a-kiosk", answer
        async with s.get(hall.base + "/kiosk") as r:  # the page itself is public
            assert r.status == 200
    _, queues = hall.daemon.get("/api/queues")
    assert {q["service"]: q["waiting"] for q in queues["services"]}["C"] == 0


async def test_guessing_two_thousand_codes_finds_nothing(hall: Running) -> None:
    guesses = [f"{i:06d}" for i in range(2000)]
    # Over 100 connections, within the front door's cap per client: every guess meets the
    # kiosk's own limits.
    async with client_session(connections=100) as s:
        answers = await asyncio.gather(
            *(post_json(s, hall.base + "/kiosk/code", {"code": g}) for g in guesses)
        )
    statuses = [a[0] for a in answers]
    assert 200 not in statuses, f"code {guesses[statuses.index(200)]} was checked in"
    limited = [a for a in answers if a[0] == 429]
    assert len(limited) >= 1990
    assert all(int(h["Retry-After"]) >= 1 for _s, _b, h in limited)
    _, queues = hall.daemon.get("/api/queues")
    assert {q["service"]: q["waiting"] for q in queues["services"]}["B"] == 0


async def test_a_kiosk_elsewhere_is_known_by_its_key(tmp_path: Path) -> None:
    key_file = tmp_path / "lobby.key"
    key_file.write_text(KIOSK_KEY + "\n")
    key_file.chmod(0o600)
    port = free_port()
    extra = f"\nkiosks:\n  - {{id: lobby, key_file: {key_file}}}\n"
    daemon = Daemon(quiet_config(tmp_path, port, extra), port)
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with client_session("127.0.0.2") as s:
            ticket = {"service": "C", "kiosk": "lobby"}
            for key, expected in (("wrong-key-0123456789abcdef", 403), (KIOSK_KEY, 200)):
                async with s.post(
                    base + "/kiosk/ticket", json=ticket, headers={"X-Kiosk-Key": key}
                ) as r:
                    assert r.status == expected, await r.text()
        async with client_session() as s:  # kiosks listed: this PC is no longer one by default
            status, answer, _ = await post_json(s, base + "/kiosk/ticket", ticket)
            assert status == 403 and answer["error"]["slug"] == "not-a-kiosk"
    finally:
        assert daemon.stop() == 0
    key_file.chmod(0o644)
    done = hall_daemon("check-config", str(daemon.config))
    assert done.returncode != 0 and str(key_file) in done.stderr


# -- hostile JSON ----------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_deep_or_huge_json_is_refused_with_a_clear_error(hall: Running) -> None:
    async with client_session() as s:
        for path in ("/kiosk/ticket", "/kiosk/code"):
            status, answer, _ = await post_json(s, hall.base + path, data=nested(1500))
            assert status == 400 and answer["error"]["slug"] == "bad-json", (path, answer)
            big = '{"code": "' + "1" * 100_000 + '"}'
            status, answer, _ = await post_json(s, hall.base + path, data=big)
            assert status == 413 and answer["error"]["slug"] == "too-large", (path, answer)
        password = (hall.state / "admin-password.initial").read_text().strip()
        assert (await admin_login(s, hall.base, password))[0] == 303
        async with s.get(hall.base + "/admin/", headers={"Accept": "text/html"}) as r:
            m = re.search(r'<meta name="csrf-token" content="([^"]+)"', await r.text())
            assert m is not None
        headers = {"X-CSRF-Token": m.group(1), "Origin": hall.base}
        headers["Content-Type"] = "application/json"
        async with s.post(
            hall.base + "/admin/api/actions/notice.set", data=nested(1500), headers=headers
        ) as r:
            answer = await r.json()
            assert r.status == 400 and answer["error"]["code"] == "bad-json", answer
    assert "Traceback" not in hall.daemon.log_text()


# -- banner and first password -------------------------------------------------------------


def raw_response(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


async def test_no_response_names_the_server_software(hall: Running) -> None:
    seen: list[str | None] = []
    async with client_session() as s:
        for path in ("/healthz", "/kiosk", "/static/display/base.css", "/nothing", "/admin/"):
            async with s.get(hall.base + path, allow_redirects=False) as r:
                seen.append(r.headers.get("Server"))
    handshake = (
        b"GET /ws/kiosk HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for request, status in (
        (handshake, b"101"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),  # the parser's own
        (b"BREW / HTCPCP/1.0\r\n\r\n", b"400"),
    ):
        head = raw_response(hall.base, request).decode("latin-1")
        assert head.split(" ")[1] == status.decode(), head
        found = re.search(r"(?im)^server: *(.*)$", head)
        seen.append(found.group(1).strip() if found else None)
    for server in seen:
        assert server is None or not re.search(r"python|aiohttp|\d+\.\d+", server, re.I), seen


def test_the_first_password_is_in_a_private_file_not_in_the_log(hall: Running) -> None:
    path = hall.state / "admin-password.initial"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 16
    log = hall.daemon.log_text()
    assert password not in log
    assert str(path) in log and "set-password" in log

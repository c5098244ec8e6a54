"""Issue 17's web attacks at full size on a real daemon (loopback only): login bursts, a kiosk
ticket flood, check-in code guessing, deeply nested JSON.

    .venv/bin/python bench/attack.py web
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.daemon_harness import (
    Daemon,
    admin_login,
    client_session,
    free_port,
    hall_daemon,
    quiet_config,
    seed_appointment,
)

PASSWORD = "the hall admin's own password"
APPOINTMENT = "000777"
LOGIN_BURST = 200
KIOSK_FLOOD = 200
CODE_GUESSES = 2000
STRANGERS = 60  # other addresses (127.0.0.2 ...) sending wrong passwords


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _burst(base: str, source: str, n: int) -> list[int]:
    async with client_session(source) as s:
        answers = await asyncio.gather(*(admin_login(s, base, f"wrong {i}") for i in range(n)))
    return [status for status, _ in answers]


async def _checks(s: aiohttp.ClientSession, base: str) -> float:
    async with s.get(base + "/metrics") as r:
        m = re.search(r"(?m)^hall_admin_login_checks_total (\S+)$", await r.text())
        return float(m.group(1)) if m else float("nan")


async def _until_admin_gets_in(base: str) -> float:
    started = time.monotonic()
    async with client_session() as s:
        while True:
            status, retry = await admin_login(s, base, PASSWORD)
            if status == 303:
                return time.monotonic() - started
            await asyncio.sleep(max(retry, 0.1))


async def _logins(daemon: Daemon, base: str) -> dict[str, object]:
    assert daemon.proc is not None
    async with client_session() as admin:
        assert (await admin_login(admin, base, PASSWORD))[0] == 303
        before, cpu = await _checks(admin, base), _cpu_s(daemon.proc.pid)
        statuses = await _burst(base, "127.0.0.1", LOGIN_BURST)
        checks = await _checks(admin, base) - before
        cpu = _cpu_s(daemon.proc.pid) - cpu
    same_pc_wait = await _until_admin_gets_in(base)
    for i in range(STRANGERS):
        await _burst(base, f"127.0.0.{i + 2}", 3)
    braked = (await _burst(base, f"127.0.0.{STRANGERS + 2}", 1))[0]
    after_brake = await _until_admin_gets_in(base)
    return {
        "login_checks_per_200_burst": int(checks),
        "login_burst_429": statuses.count(429),
        "login_burst_daemon_cpu_s": round(cpu, 2),
        "admin_in_after_own_burst_s": round(same_pc_wait, 1),
        "stranger_status_under_hall_brake": braked,
        "admin_in_under_hall_brake_s": round(after_brake, 2),
    }


async def _post(s: aiohttp.ClientSession, url: str, data: str) -> int:
    async with s.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status


async def _kiosk(daemon: Daemon, base: str) -> dict[str, object]:
    ticket = json.dumps({"service": "A"})
    async with client_session() as s:
        flood = await asyncio.gather(
            *(_post(s, base + "/kiosk/ticket", ticket) for _ in range(KIOSK_FLOOD))
        )
    # Over 100 connections, within the front door's cap per client, so that every guess
    # meets the kiosk's own limits.
    async with client_session(connections=100) as s:
        guesses = await asyncio.gather(
            *(
                _post(s, base + "/kiosk/code", json.dumps({"code": f"{i:06d}"}))
                for i in range(CODE_GUESSES)
            )
        )
    async with client_session() as s:
        deep = "[" * 1500 + "]" * 1500
        deep_status = await _post(s, base + "/kiosk/ticket", deep)
    async with client_session("127.0.0.2") as stranger:
        not_kiosk = await _post(stranger, base + "/kiosk/ticket", ticket)
    _, queues = daemon.get("/api/queues")
    waiting = {q["service"]: q["waiting"] for q in queues["services"]}
    return {
        "kiosk_tickets_issued_per_200": flood.count(200),
        "kiosk_flood_429": flood.count(429),
        "service_A_waiting_of_daily_limit_200": waiting["A"],
        "checkins_accepted_per_2000_guesses": guesses.count(200),
        "checkin_guesses_looked_up": guesses.count(404),
        "checkin_guesses_429": guesses.count(429),
        "non_kiosk_status": not_kiosk,
        "deep_json_status": deep_status,
    }


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="attack-web-") as tmp:
        port = free_port()
        config = quiet_config(Path(tmp), port)
        done = hall_daemon("set-password", "-c", str(config), "--stdin", input=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        seed_appointment(config, APPOINTMENT)
        daemon = Daemon(config, port)
        daemon.start()
        base = f"http://127.0.0.1:{port}"
        try:
            figures = asyncio.run(_logins(daemon, base))
            figures |= asyncio.run(_kiosk(daemon, base))
            server = daemon.get("/healthz")
            figures["healthz_after"] = server[0]
        finally:
            daemon.stop()
        return figures

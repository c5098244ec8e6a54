"""The admin side of the real `hall-daemon run` process: the first start makes a password
(a restart does not) and says where it is, it logs in, and /metrics parses with the real
outputs' figures (ports, MQTT, voice) while /healthz stays public."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from tests.daemon_harness import Daemon, admin_login, free_port, write_config

from .test_admin_metrics import parse_exposition

pytestmark = pytest.mark.service

PASSWORD_NOTE = re.compile(r"admin password generated: it is in (\S+) ", re.M)


ADMIN_PAGES = ("/metrics", "/admin/api/status", "/admin/stats.csv", "/admin/receipts/sample.png")


async def scrape(port: int, password: str) -> tuple[int, str, int]:
    base = f"http://127.0.0.1:{port}"
    # unsafe=True: keep cookies from an IP address (127.0.0.1), as a browser does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        statuses = set()
        for path in ADMIN_PAGES:  # the daemon's own admin pages, the other helpers' too
            async with s.get(base + path) as r:
                statuses.add(r.status)
        anonymous = statuses.pop() if len(statuses) == 1 else 0
        assert (await admin_login(s, base, password))[0] == 303
        for path in ADMIN_PAGES[1:]:
            async with s.get(base + path) as r:
                assert r.status == 200, path
        async with s.get(base + "/metrics") as r:
            return anonymous, await r.text(), r.status


def test_first_start_password_login_and_metrics_of_the_real_daemon(tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(write_config(tmp_path, web_port=port), port)
    d.start()
    try:
        initial = tmp_path / "state" / "admin-password.initial"
        assert PASSWORD_NOTE.findall(d.log_text()) == [str(initial)]
        password = initial.read_text().strip()
        assert password not in d.log_text()
        anonymous, text, status = asyncio.run(scrape(port, password))
        assert anonymous == 401 and status == 200
        series = parse_exposition(text)
        names = {name for name, _labels in series}
        for wanted in (
            "hall_queue_waiting",
            "hall_forecast_wait_seconds",
            "hall_counter_state",
            "hall_device_online",  # the config's dispenser and RS-485 ports (nobody there)
            "hall_port_link_up",
            "hall_mqtt_connected",  # no broker in this test: 0
            "hall_outbox_depth",
            "hall_voice_queue_length",
            "hall_loop_lag_seconds",
            "hall_writer_healthy",
        ):
            assert wanted in names, wanted
        assert d.get("/healthz")[0] == 200
    finally:
        assert d.stop() == 0
    d.start()
    try:
        assert len(PASSWORD_NOTE.findall(d.log_text())) == 1  # not again on a restart
        stored = (tmp_path / "state" / "admin-password.json").read_text()
        assert password not in stored
    finally:
        assert d.stop() == 0

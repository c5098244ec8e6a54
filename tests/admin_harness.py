"""A hall with its screens and admin pages served on a free loopback port, for the admin
browser tests: it yields the hall, the port and the admin password the first start made."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web

from display import setup_display
from hall_daemon.admin import setup_admin
from hall_daemon.admin.auth import INITIAL_NAME
from hall_daemon.config import load_config
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from hall_daemon.web import make_app
from tests.daemon_harness import free_port

REPO = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def admin_hall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: Callable[[], datetime]
) -> AsyncIterator[tuple[Hall, int, str]]:
    caplog.set_level(logging.INFO)
    config = load_config(REPO / "config.yaml").model_copy(update={"state_dir": tmp_path})
    hall = Hall(config.to_spec(), Store(Store.sqlite_url(tmp_path / "hall.db")), clock=clock)
    await hall.start()
    app = make_app(hall)
    setup_display(app, hall, config)
    setup_admin(app, hall, config)  # with the statistics and outlook routes behind the login
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    password = (tmp_path / INITIAL_NAME).read_text(encoding="utf-8").strip()
    assert not any(password in r.getMessage() for r in caplog.records), "never logged"
    try:
        yield hall, port, password
    finally:
        await runner.cleanup()
        await hall.stop()

"""Issue 17, the core's items, replayed against a real daemon process and a real Mosquitto.

- One backend message must not brick the hall: appointment.upsert with a year 9999 window
  is refused with `bad-time`; the next day reset, the kiosk's and the app's tickets and a
  restart all still work.
- Health tells the truth: when the writer cannot commit, /healthz says 503 and why.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hall_daemon.app import CLOCK_ENV
from tests.daemon_harness import Daemon, free_port, write_config
from tests.mqtt_broker import Broker, Recorder, broker, broker_factory, publish, recording

__all__ = ["broker", "broker_factory"]  # fixtures

pytestmark = pytest.mark.service

BASE = "hall/demo-hall"
SPEED = 30  # the hall's clock runs this many times as fast as real time
# Two minutes before the day reset (04:00 in the example hall): four real seconds.
BEFORE_RESET = "2026-12-08T03:58:00+08:00"
# What a backend sent (item 1 of the issue), and two more windows the contract refuses.
HOSTILE_WINDOWS = [
    ("9999-12-31T20:00-14:00", "9999-12-31T23:00-14:00"),
    ("2026-12-08T09:00+08:00", "9999-12-31T23:59:59Z"),
    ("2026-12-08T09:00+08:00", "2026-12-08T21:30+08:00"),  # over 12 hours
]


def post(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """POST `body` as JSON, or GET without one; patient: with the store locked, a command
    may wait out the busy timeout (5 s) of the batch before its own as well as its own."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def command(rec: Recorder, name: str, body: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send one backend command and wait for its reply."""
    publish(rec, f"{BASE}/cmd/{name}", {"v": 1, **body})
    topic = f"{BASE}/cmd/{name}/reply"

    def reply() -> Any:
        return next((m.json() for m in rec.on(topic) if m.json().get("id") == body["id"]), None)

    rec.wait_for(lambda _r: reply() is not None, timeout)
    return reply()


@pytest.fixture
def hall(tmp_path: Path, broker: Broker) -> Iterator[tuple[Daemon, Recorder]]:
    """The example hall on a clock two minutes before its day reset, and a backend."""
    web = free_port()
    mqtt_port = {r"(?m)^  port: 1883": f"  port: {broker.port}"}
    config = write_config(tmp_path, web_port=web, **mqtt_port)
    daemon = Daemon(config, web, env={CLOCK_ENV: f"{time.time():.3f}={BEFORE_RESET}x{SPEED}"})
    daemon.reset_at = time.time() + 120 / SPEED  # type: ignore[attr-defined]
    with recording(broker.port, [f"{BASE}/cmd/+/reply", f"{BASE}/status"]) as rec:
        daemon.start()
        try:
            rec.wait_for(lambda r: r.status() == "online")
            yield daemon, rec
        finally:
            daemon.stop()


def test_a_year_9999_appointment_is_refused_and_the_next_day_and_a_restart_work(
    hall: tuple[Daemon, Recorder],
) -> None:
    daemon, rec = hall
    for i, (start, end) in enumerate(HOSTILE_WINDOWS):
        reply = command(
            rec,
            "appointment.upsert",
            {"id": f"bad-{i}", "code": f"AP{i}", "service": "A", "start": start, "end": end},
        )
        assert reply["ok"] is False, reply
        assert (reply["error"]["code"], reply["error"]["reason"]) == (400, "bad-time"), reply
    fine = {"id": "fine", "code": "AP9", "service": "A"}
    fine |= {"start": "2026-12-08T09:00+08:00", "end": "2026-12-08T09:30+08:00"}
    assert command(rec, "appointment.upsert", fine)["ok"] is True

    # Past 04:00 on the hall's clock, the first command begins the new day.
    _, before = daemon.get("/api/queues")
    time.sleep(max(0.0, daemon.reset_at + 0.5 - time.time()))  # type: ignore[attr-defined]
    status, body = post(daemon.web_port, "/kiosk/ticket", {"service": "A"})
    assert status == 200 and body["ticket"]["number"] == "A001", body
    assert daemon.get("/api/queues")[1]["day"] == "2026-12-08" != before["day"]
    remote = command(rec, "ticket.remote", {"id": "app-1", "service": "A"})
    assert remote["ok"] is True and remote["data"]["number"] == "A002", remote
    status, health = daemon.get("/healthz")
    assert status == 200 and health["ok"] is True, health

    assert daemon.stop() == 0
    daemon.start()
    remote = command(rec, "ticket.remote", {"id": "app-2", "service": "A"})
    assert remote["ok"] is True and remote["data"]["number"] == "A003", remote
    assert daemon.get("/healthz")[0] == 200


def test_healthz_says_503_and_why_while_the_writer_cannot_commit(
    hall: tuple[Daemon, Recorder],
) -> None:
    daemon, _ = hall
    assert daemon.get("/healthz")[0] == 200
    db = next((daemon.config.parent / "state").glob("*.db"))
    locker = sqlite3.connect(db, timeout=1, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        status, body = post(daemon.web_port, "/kiosk/ticket", {"service": "B"})
        assert status == 503, body  # after the store's busy timeout: nothing was issued
        status, health = post(daemon.web_port, "/healthz")
        assert status == 503 and health["ok"] is False and health["writer"] is False
        assert health["reason"].startswith("the last commit failed"), health
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    status, body = post(daemon.web_port, "/kiosk/ticket", {"service": "B"})
    assert status == 200, body
    status, health = daemon.get("/healthz")
    assert status == 200 and health["reason"] is None, health

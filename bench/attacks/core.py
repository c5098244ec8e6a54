"""Issue 17, item 1, at full size: hostile appointment windows from the backend, the day reset
after them, a restart, and a log that already holds a year 9999 appointment.

    .venv/bin/python bench/attack.py core

One daemon on the example hall, its clock warped to two minutes before the day reset, and
its own Mosquitto on loopback. Figures: how many hostile upserts were refused (and with
which reason), the slowest reply, whether the day reset, the tickets after it and two
restarts worked, and every /healthz status seen throughout.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from hall_daemon.app import CLOCK_ENV
from hall_daemon.config import load_config
from hall_daemon.events import APPOINTMENT_UPSERTED, Event
from hall_daemon.store import Store
from tests.daemon_harness import Daemon, free_port, write_config
from tests.mqtt_broker import Broker, Recorder, publish, recording

BASE = "hall/demo-hall"
SPEED = 30
BEFORE_RESET = "2026-12-08T03:58:00+08:00"
FAR = ("9999-12-31T20:00-14:00", "9999-12-31T23:00-14:00")
HOSTILE_WINDOWS = [
    FAR,
    ("2026-12-08T09:00+08:00", "9999-12-31T23:59:59Z"),  # the common "no end"
    ("9999-12-31T23:59:59.999999+23:59", "9999-12-31T23:59:59.999999+23:58"),
    ("0001-01-01T00:00-23:59", "0001-01-01T01:00-23:59"),
    ("2026-12-08T09:00+08:00", "2026-12-08T21:01+08:00"),  # over 12 hours
    ("2028-01-20T09:00+08:00", "2028-01-20T10:00+08:00"),  # beyond 400 days
    ("2026-12-08T10:00+08:00", "2026-12-08T09:00+08:00"),  # ends before it starts
    ("2026-12-08T09:00", "2026-12-08T10:00"),  # no UTC offset
    ("tomorrow", "2026-12-08T10:00+08:00"),
]
ROUNDS = 20  # each window this many times, under its own id


class HealthWatch:
    """Polls /healthz every 100 ms on a thread of its own; counts the statuses it saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self.seen[_healthz(self.port)] += 1


def _healthz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return str(r.status)
    except urllib.error.HTTPError as err:
        return str(err.code)
    except OSError:
        return "down"  # between the stop and the start of a restart


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _command(rec: Recorder, name: str, body: dict[str, Any]) -> tuple[Any, float]:
    """Send one backend command; its reply and how long it took."""
    topic = f"{BASE}/cmd/{name}/reply"
    started = time.perf_counter()
    publish(rec, f"{BASE}/cmd/{name}", {"v": 1, **body})

    def reply() -> Any:
        return next((m.json() for m in rec.on(topic) if m.json().get("id") == body["id"]), None)

    rec.wait_for(lambda _r: reply() is not None, 15)
    return reply(), time.perf_counter() - started


def _poison_log(config: Path) -> None:
    """Append, as a build before the limits could, an accepted year 9999 appointment."""
    store = Store(load_config(config).database_url())
    store.open()
    try:
        start, end = FAR
        data = {"code": "OLD9999", "service": "A", "start": start, "end": end}
        store.append([Event(APPOINTMENT_UPSERTED, datetime.now().astimezone(), data)])
    finally:
        store.close()


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="attack-core-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp).start()
        try:
            return _attack(tmp, broker)
        finally:
            broker.kill()


def _attack(tmp: Path, broker: Broker) -> dict[str, object]:
    web = free_port()
    config = write_config(tmp, web_port=web, **{r"(?m)^  port: 1883": f"  port: {broker.port}"})
    reset_at = time.time() + 120 / SPEED
    daemon = Daemon(config, web, env={CLOCK_ENV: f"{time.time():.3f}={BEFORE_RESET}x{SPEED}"})
    figures: dict[str, object] = {}
    with recording(broker.port, [f"{BASE}/cmd/+/reply", f"{BASE}/status"]) as rec:
        daemon.start()
        try:
            rec.wait_for(lambda r: r.status() == "online")
            healthz: dict[str, str] = {}
            with HealthWatch(web) as health:
                figures |= _hostile_upserts(rec)
                healthz["after_upserts"] = _healthz(web)
                time.sleep(max(0.0, reset_at + 0.5 - time.time()))
                figures |= _after_the_reset(daemon, rec, "day_reset")
                healthz["after_reset"] = _healthz(web)
                daemon.stop()
                figures["restart_ok"] = _restarted(daemon, rec, "restart")
                healthz["after_restart"] = _healthz(web)
                daemon.stop()
                _poison_log(config)
                figures["old_log_restart_ok"] = _restarted(daemon, rec, "old-log")
                healthz["after_old_log_restart"] = _healthz(web)
            figures["healthz"] = healthz
            # Polled every 100 ms throughout; "down" is the gap of a restart.
            figures["healthz_polled"] = dict(health.seen)
        finally:
            daemon.stop()
    return figures


def _hostile_upserts(rec: Recorder) -> dict[str, object]:
    reasons: Counter[str] = Counter()
    slowest = 0.0
    accepted = 0
    for n in range(ROUNDS):
        for i, (start, end) in enumerate(HOSTILE_WINDOWS):
            body = {"id": f"bad-{n}-{i}", "code": f"X{i}", "service": "A"}
            reply, took = _command(rec, "appointment.upsert", body | {"start": start, "end": end})
            slowest = max(slowest, took)
            if reply["ok"]:
                accepted += 1
            else:
                reasons[reply["error"]["reason"]] += 1
    sent = ROUNDS * len(HOSTILE_WINDOWS)
    return {
        "hostile_upserts_sent": sent,
        "refused": sent - accepted,
        "refusal_reasons": dict(reasons),
        "slowest_reply_ms": round(1000 * slowest, 1),
    }


def _after_the_reset(daemon: Daemon, rec: Recorder, tag: str) -> dict[str, object]:
    kiosk, body = _post(daemon.web_port, "/kiosk/ticket", {"service": "A"})
    remote, _ = _command(rec, "ticket.remote", {"id": f"{tag}-app", "service": "A"})
    day = daemon.get("/api/queues")[1]["day"]
    return {
        f"{tag}_ok": kiosk == 200 and remote["ok"] and day == "2026-12-08",
        "kiosk_ticket_after_reset": body.get("ticket", {}).get("number", kiosk),
        "app_ticket_after_reset": remote.get("data", {}).get("number", remote.get("error")),
    }


def _restarted(daemon: Daemon, rec: Recorder, tag: str) -> bool:
    try:
        daemon.start()
    except (RuntimeError, TimeoutError):
        return False
    reply, _ = _command(rec, "ticket.remote", {"id": f"{tag}-app", "service": "A"})
    return bool(reply["ok"]) and daemon.get("/healthz")[0] == 200

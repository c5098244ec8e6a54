"""MQTT attacks at full size on a real daemon and its own Mosquitto (issue 17, items 6 and 7).

- poison: N deeply nested payloads (some with a readable id, some without) on
  `<base>/cmd/ticket.remote`, then a valid command: how long its reply took, how many
  poison payloads got an error reply, how often a sync task restarted.
- reply topics: commands naming response topics the contract forbids; how many replies
  landed there (must be 0) and how many on `<base>/cmd/<name>/reply`.
- flood: 5,000 `ticket.remote` from one client as fast as it can publish, then one from
  the backend: how many were answered and dropped, the backend's wait, the daemon's RSS.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemon_harness import Daemon, simulated_hall_config
from tests.mqtt_broker import Broker, Recorder, publish, wait_until
from tests.test_attack_mqtt import FORBIDDEN_REPLY_TOPICS

BASE = "hall/demo-hall"
COMMANDS = f"{BASE}/cmd/ticket.remote"
REPLIES = f"{BASE}/cmd/ticket.remote/reply"


class Hall:
    """A daemon with MQTT, and a recorder that sees every topic of the broker."""

    def __init__(self, tmp: Path) -> None:
        self.broker = Broker(tmp).start()
        token_file = tmp / "metrics-token"
        self.token = secrets.token_urlsafe(24)
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        config, web = simulated_hall_config(tmp, self.broker.port)
        text = config.read_text(encoding="utf-8")
        text = text.replace(
            "  # metrics_token_file: /etc/hall-daemon/metrics-token",
            f"  metrics_token_file: {token_file}",
        )
        config.write_text(text, encoding="utf-8")
        self.daemon = Daemon(config, web)
        self.rec = Recorder(self.broker.port, ["#"]).start()
        self.daemon.start()
        wait_until(lambda: self.rec.status() == "online", 20, "the hall online")

    def close(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.rec.close()
            self.broker.kill()

    def rss_mib(self) -> float:
        assert self.daemon.proc is not None
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return round(int(found.group(1)) / 1024, 1) if found else -1.0

    def metrics(self) -> dict[str, float]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.daemon.web_port}/metrics",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("hall_mqtt_"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def replies(self, command_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(topic, reply) of every message carrying this command id (the commands aside)."""
        found = []
        for m in self.rec.snapshot():
            if m.topic.startswith(f"{BASE}/cmd/") and not m.topic.endswith("/reply"):
                continue
            if not m.payload.startswith(b"{") or command_id.encode() not in m.payload:
                continue
            obj = json.loads(m.payload)
            if isinstance(obj, dict) and obj.get("id") == command_id:
                found.append((m.topic, obj))
        return found

    def wait_reply(self, command_id: str, timeout: float) -> float | None:
        """Seconds until the reply arrived (the recorder's clock), None if it did not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.replies(command_id):
                return time.monotonic()
            time.sleep(0.002)
        return None


def poison_payload(command_id: str, n: int) -> bytes:
    if n % 3 == 0:
        return b"[" * 100_000 + b"]" * 100_000  # no id: nobody to answer
    head = b'{"v":1,"id":"%s",' % command_id.encode()
    if n % 3 == 1:
        return head + b'"service":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    return head + b'"service":"A","x":' + b"{" * 100_000  # over 16 KiB, and unclosed


def poison(hall: Hall, count: int) -> dict[str, object]:
    ids = [f"p{count}-{n}" for n in range(count)]
    for n, command_id in enumerate(ids):
        publish(hall.rec, COMMANDS, poison_payload(command_id, n))
    valid = f"valid-after-{count}"
    sent = time.monotonic()
    publish(hall.rec, COMMANDS, {"v": 1, "id": valid, "service": "B"})
    arrived = hall.wait_reply(valid, 60.0)
    with_id = [command_id for n, command_id in enumerate(ids) if n % 3]
    time.sleep(0.2)
    errors = sum(1 for cid in with_id for _t, r in hall.replies(cid) if r["ok"] is False)
    return {
        "payloads": count,
        "valid_reply_s": None if arrived is None else round(arrived - sent, 3),
        "error_replies": errors,
        "with_id": len(with_id),
    }


def reply_topics(hall: Hall) -> dict[str, object]:
    on_default = on_forbidden = 0
    for n, topic in enumerate(FORBIDDEN_REPLY_TOPICS):
        command_id = f"rt-{n}"
        body = json.dumps({"v": 1, "id": command_id, "service": "C"}).encode()
        publish(hall.rec, COMMANDS, body, response_topic=topic, correlation=b"x" * 10_000)
        hall.wait_reply(command_id, 10.0)
    time.sleep(0.3)
    for n in range(len(FORBIDDEN_REPLY_TOPICS)):
        for topic, _reply in hall.replies(f"rt-{n}"):
            if topic == REPLIES:
                on_default += 1
            else:
                on_forbidden += 1
    return {
        "tried": len(FORBIDDEN_REPLY_TOPICS),
        "on_reply_topic": on_default,
        "on_forbidden": on_forbidden,
    }


def outcome(metrics: dict[str, float], name: str) -> int:
    return int(metrics.get(f'hall_mqtt_commands_total{{outcome="{name}"}}', 0))


def settled(before: dict[str, float], after: dict[str, float]) -> int:
    """Commands that were answered or dropped between the two readings."""
    done = ("accepted", "refused", "repeated", "dropped")
    return sum(outcome(after, o) - outcome(before, o) for o in done)


def backend_command(hall: Hall, command_id: str, retry_s: float = 1.0) -> tuple[float, int]:
    """Send a command the way the backend does (again under the same id while no reply
    comes): (seconds until the reply, tries)."""
    sent, tries = time.monotonic(), 0
    while time.monotonic() - sent < 60.0:
        tries += 1
        publish(hall.rec, COMMANDS, {"v": 1, "id": command_id, "service": "B"})
        if hall.wait_reply(command_id, retry_s) is not None:
            return time.monotonic() - sent, tries
    raise AssertionError(f"no reply to {command_id} within 60 s")


def flood(hall: Hall, count: int, round_: int) -> dict[str, object]:
    before = hall.metrics()
    rss_before = hall.rss_mib()
    attacker = Recorder(hall.broker.port, [f"{BASE}/nothing"]).start()
    started = time.monotonic()
    try:
        for n in range(count):
            body = b'{"v":1,"id":"f%d-%d","service":"A"}' % (round_, n)
            info = attacker.client.publish(COMMANDS, body, qos=1)
        info.wait_for_publish(60)
        published_s = time.monotonic() - started
        # The worst moment for the backend: the whole flood is at the daemon already.
        waited, tries = backend_command(hall, f"backend-{round_}")
        wait_until(lambda: settled(before, hall.metrics()) >= count + tries, 120, "the flood")
    finally:
        attacker.close()
    after = hall.metrics()
    answered = sum(
        1 for m in hall.rec.snapshot() if m.topic == REPLIES and b'"f%d-' % round_ in m.payload
    )
    return {
        "sent": count,
        "published_s": round(published_s, 2),
        "answered": answered,
        "dropped": outcome(after, "dropped") - outcome(before, "dropped"),
        "accepted": outcome(after, "accepted") - outcome(before, "accepted"),
        "refused": outcome(after, "refused") - outcome(before, "refused"),
        "backend_reply_s": round(waited, 2),
        "backend_tries": tries,
        "settled_s": round(time.monotonic() - started, 1),
        "rss_mib_before": rss_before,
        "rss_mib_after": hall.rss_mib(),
    }


def flood_large(hall: Hall, count: int, size: int) -> dict[str, object]:
    """`count` payloads of `size` bytes (just under the broker's limit for the daemon), each
    with an id: the queue's byte bound, not its length, is what holds memory here."""
    before = hall.metrics()
    rss_before = hall.rss_mib()
    attacker = Recorder(hall.broker.port, [f"{BASE}/nothing"]).start()
    started = time.monotonic()
    try:
        for n in range(count):
            head = b'{"v":1,"id":"big-%d","pad":"' % n
            info = attacker.client.publish(COMMANDS, head + b"x" * (size - len(head) - 2) + b'"}')
        info.wait_for_publish(120)
        waited, tries = backend_command(hall, "backend-large")
        wait_until(lambda: settled(before, hall.metrics()) >= count + tries, 120, "the flood")
    finally:
        attacker.close()
    after = hall.metrics()
    return {
        "sent": count,
        "mib": round(count * size / 2**20),
        "refused_too_large": outcome(after, "refused") - outcome(before, "refused"),
        "dropped": outcome(after, "dropped") - outcome(before, "dropped"),
        "backend_reply_s": round(waited, 2),
        "settled_s": round(time.monotonic() - started, 1),
        "rss_mib_before": rss_before,
        "rss_mib_after": hall.rss_mib(),
    }


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        hall = Hall(Path(d))
        try:
            figures: dict[str, object] = {
                "poison_5": poison(hall, 5),
                "poison_50": poison(hall, 50),
                "reply_topics": reply_topics(hall),
                "flood": flood(hall, 5000, 1),
                "flood_again": flood(hall, 5000, 2),
                "flood_large": flood_large(hall, 500, 250 * 1024),
            }
            m = hall.metrics()
            figures["task_restarts"] = int(m.get("hall_mqtt_task_restarts_total", -1))
            figures["reply_topics_refused"] = int(m.get("hall_mqtt_reply_topics_refused_total", -1))
            figures["restart_log_lines"] = hall.daemon.log_text().count("restarting it")
            return figures
        finally:
            hall.close()

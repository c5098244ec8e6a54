"""Issue 17's MQTT attacks replayed against a real daemon process and a real Mosquitto:
poison payloads (deep nesting) must cost only their own error reply, and replies must never
land on a topic the contract forbids, whatever response topic the sender names."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemon, simulated_hall_config
from tests.mqtt_broker import Broker, Msg, Recorder, publish, recording, wait_until

pytest_plugins = ["tests.mqtt_broker"]
pytestmark = pytest.mark.service

BASE = "hall/demo-hall"


def deep(prefix: bytes, depth: int, suffix: bytes = b"") -> bytes:
    return prefix + b"[" * depth + b"]" * depth + suffix


@pytest.fixture
def hall(broker: Broker, tmp_path: Path) -> Iterator[tuple[Daemon, Recorder]]:
    config, web = simulated_hall_config(tmp_path, broker.port)
    daemon = Daemon(config, web)
    with recording(broker.port, ["#"]) as rec:
        daemon.start()
        try:
            wait_until(lambda: rec.status() == "online", 15, "the hall online")
            yield daemon, rec
        finally:
            daemon.stop()


def with_id(rec: Recorder, command_id: str) -> list[Msg]:
    found = []
    for m in rec.snapshot():
        if m.topic.startswith(f"{BASE}/cmd/") and not m.topic.endswith("/reply"):
            continue  # the commands themselves (the poison too), not their replies
        obj = json.loads(m.payload) if m.payload.startswith(b"{") else None
        if isinstance(obj, dict) and obj.get("id") == command_id:
            found.append(m)
    return found


def answer(rec: Recorder, command_id: str, timeout: float) -> Msg:
    wait_until(lambda: with_id(rec, command_id), timeout, f"the reply to {command_id}")
    return with_id(rec, command_id)[0]


def test_deeply_nested_payloads_get_error_replies_and_do_not_delay_the_next_command(
    hall: tuple[Daemon, Recorder],
) -> None:
    daemon, rec = hall
    poison = [
        deep(b"", 100_000),  # no id: nobody to answer
        deep(b'{"v":1,"id":"deep-1","service":', 5_000, b"}"),
        deep(b'{"v":1,"id":"deep-2","service":', 100_000, b"}"),  # also over 16 KiB
        b'{"v":1,"id":"deep-3","service":' + b"[" * 100_000,  # and not even closed
        deep(b'{"v":1,"id":"deep-4","service":"A","x":{"y":', 2_000, b"}}"),
    ]
    for payload in poison:
        publish(rec, f"{BASE}/cmd/ticket.remote", payload)
    sent = time.perf_counter()
    publish(rec, f"{BASE}/cmd/ticket.remote", {"v": 1, "id": "after", "service": "A"})
    reply = answer(rec, "after", 2.0)
    assert reply.topic == f"{BASE}/cmd/ticket.remote/reply" and reply.json()["ok"] is True
    assert reply.at - sent < 2.0
    for n in range(1, 5):
        refusal = answer(rec, f"deep-{n}", 2.0).json()
        assert refusal["ok"] is False, refusal
        assert refusal["error"]["reason"] in {"too-deep", "too-large"}, refusal
    assert "restarting it" not in daemon.log_text()


def test_a_payload_that_breaks_its_handler_gets_an_error_reply_and_the_next_command_works(
    hall: tuple[Daemon, Recorder],
) -> None:
    daemon, rec = hall
    nested = deep(b'{"v":1,"id":"bad-1","service":"B","appointment":{"code":', 3_000, b"}}")
    publish(rec, f"{BASE}/cmd/ticket.remote", nested)
    refusal = answer(rec, "bad-1", 2.0)
    assert refusal.topic == f"{BASE}/cmd/ticket.remote/reply"
    assert refusal.json()["ok"] is False and refusal.json()["error"]["code"] == 400
    publish(rec, f"{BASE}/cmd/ticket.remote", {"v": 1, "id": "bad-2", "service": "B"})
    assert answer(rec, "bad-2", 2.0).json()["ok"] is True
    assert "Traceback" not in daemon.log_text()


FORBIDDEN_REPLY_TOPICS = [
    f"{BASE}/queues/A",  # this hall's retained state
    f"{BASE}/status",
    "hall/other-hall/cmd/ticket.remote",  # another hall's commands
    f"{BASE}/cmd/ticket.remote/reply/x",
    "backend/cmd/x",
    "#",
    "a/+/b",
    "$SYS/x",
    "app/" + "r" * 300,
]


def test_replies_go_only_to_response_topics_the_contract_allows(
    hall: tuple[Daemon, Recorder],
) -> None:
    _daemon, rec = hall
    default = f"{BASE}/cmd/ticket.remote/reply"
    for n, topic in enumerate(FORBIDDEN_REPLY_TOPICS):
        command_id = f"rt-{n}"
        body = json.dumps({"v": 1, "id": command_id, "service": "B"}).encode()
        publish(rec, f"{BASE}/cmd/ticket.remote", body, response_topic=topic)
        reply = answer(rec, command_id, 5.0)
        assert [m.topic for m in with_id(rec, command_id)] == [default], (topic, reply)

    body = json.dumps({"v": 1, "id": "rt-ok", "service": "B"}).encode()
    publish(rec, f"{BASE}/cmd/ticket.remote", body, response_topic="app/replies/123",
            correlation=b"\x01corr")  # fmt: skip
    reply = answer(rec, "rt-ok", 5.0)
    assert reply.topic == "app/replies/123" and reply.json()["ok"] is True
    assert reply.properties.CorrelationData == b"\x01corr"

    # A correlation too large to be an honest one is not echoed; the reply still goes out.
    body = json.dumps({"v": 1, "id": "rt-big", "service": "B"}).encode()
    publish(rec, f"{BASE}/cmd/ticket.remote", body, response_topic="app/replies/124",
            correlation=b"c" * 4096)  # fmt: skip
    reply = answer(rec, "rt-big", 5.0)
    assert reply.topic == "app/replies/124"
    assert getattr(reply.properties, "CorrelationData", None) is None
    time.sleep(0.2)  # anything misrouted would have arrived with the replies
    assert [m.topic for m in with_id(rec, "rt-ok")] == ["app/replies/123"]


def peak_rss_mib(daemon: Daemon) -> float:
    """The daemon's largest resident size since it started (the kernel's high-water mark)."""
    assert daemon.proc is not None
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def test_a_flood_of_large_commands_keeps_memory_flat_and_the_backend_gets_through(
    hall: tuple[Daemon, Recorder],
) -> None:
    daemon, rec = hall
    before = peak_rss_mib(daemon)
    size = 250 * 1024  # under the broker's limit for the daemon, over the contract's 16 KiB
    for n in range(600):
        head = b'{"v":1,"id":"big-%d","pad":"' % n
        info = rec.client.publish(
            f"{BASE}/cmd/ticket.remote", head + b"x" * (size - len(head) - 2) + b'"}', qos=1
        )
    info.wait_for_publish(30)
    # The backend's way: the same id again each second until a reply comes.
    body = {"v": 1, "id": "backend", "service": "A"}
    for _ in range(10):
        publish(rec, f"{BASE}/cmd/ticket.remote", body)
        with contextlib.suppress(AssertionError):
            answer(rec, "backend", 1.0)
            break
    assert answer(rec, "backend", 1.0).json()["ok"] is True
    assert peak_rss_mib(daemon) - before < 25, (before, peak_rss_mib(daemon))

"""A whole hall on this machine: the hardware simulator drives the real daemon over sockets.

What hall staff would see after a few compressed hours: tickets taken at the dispenser are
called at the counters, announced, shown on the window screens, and rated; the exported log
is gap-free and every ticket ends at most once; and a subscriber on the hall's own Mosquitto
holds every event in order and the same live queues as the hall.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hall_daemon.events import loads
from tests.daemon_harness import Daemon, hall_daemon, simulated_hall_config, start_simulator
from tests.mqtt_broker import Broker, Contract, broker, broker_factory, recording

__all__ = ["broker", "broker_factory"]  # fixtures

pytestmark = pytest.mark.service


def test_simulated_devices_run_a_hall_through_the_real_daemon(
    tmp_path: Path, broker: Broker
) -> None:
    config, web = simulated_hall_config(tmp_path, broker.port)
    subscriber = recording(broker.port, ["hall/demo-hall/#"])
    rec = subscriber.__enter__()
    sim = start_simulator(
        config, *("--speed", "240", "--start", "08:30", "--seed", "3", "--duration", "25")
    )
    daemon = Daemon(config, web)
    try:
        daemon.start()
        out, _ = sim.communicate(timeout=60)
        assert sim.returncode == 0
        stats = json.loads(out[out.index("{") :])
        status, view = daemon.get("/api/queues")
        assert status == 200
        assert any(c["state"] == "open" for c in view["counters"]), view  # the clerks opened them
        # Live state is coalesced (≤ 1 publish per topic per 500 ms): give it a moment.
        rec.wait_for(
            lambda r: all(
                (r.last_json(f"hall/demo-hall/queues/{s['service']}") or {}).get("waiting")
                == s["waiting"]
                for s in view["services"]
            ),
            timeout=5,
        )
        assert daemon.stop() == 0
        rec.wait_for(lambda r: r.status() == "stopped", timeout=10)
    finally:
        sim.kill()
        if daemon.proc is not None:
            daemon.proc.kill()
        subscriber.__exit__(None, None, None)

    export = tmp_path / "events.jsonl"
    assert hall_daemon("events", "export", "-c", str(config), "-o", str(export)).returncode == 0
    log = [loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    kinds = Counter(e.type for e in log)
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert kinds["ticket.issued"] >= 10, kinds
    assert kinds["ticket.called"] >= 5, kinds
    assert kinds["ticket.done"] >= 1 and kinds["ticket.rated"] >= 1, kinds
    channels = {e.data["channel"] for e in log if e.type == "ticket.issued"}
    assert channels == {"dispenser"}
    assert any(e.type == "device.online" and e.data["kind"] == "dispenser" for e in log)
    ends = Counter(
        e.data["number"]
        for e in log
        if e.type in ("ticket.done", "ticket.no_show", "ticket.cancelled")
    )
    assert max(ends.values()) == 1
    # What the devices saw: a TICKET reply for every ticket, calls on LCDs and window screens.
    assert stats["tickets"] == kinds["ticket.issued"], stats
    assert stats["bad_lines"] == 0 and stats["bad_frames"] == 0 and stats["unacked"] == 0, stats
    assert stats["calls_seen"] >= 5 and stats["screen_texts"] >= 5, stats
    assert any("请到" in text for text in stats["last_screen_text"].values()), stats
    # The subscriber got every event, in order, as the contract describes it.
    published = rec.events("hall/demo-hall/events")
    assert [e["seq"] for e in published] == [e.seq for e in log]
    assert all("token" not in e["data"] for e in published)
    assert Contract().check_all(rec.snapshot()) > len(log)
    voice = list((tmp_path / "state" / "voice").glob("*called*.wav"))
    assert voice, "calls were announced to the voice folder"

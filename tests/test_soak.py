"""The fault and soak suite in its CI form (the long form: `make soak`), and a graceful stop
in the middle of traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.soak import run_soak
from hall_daemon.events import loads
from tests.daemon_harness import Daemon, hall_daemon, simulated_hall_config, start_simulator
from tests.mqtt_broker import Broker, broker, broker_factory, recording

__all__ = ["broker", "broker_factory"]  # fixtures

pytestmark = pytest.mark.service


def test_a_compressed_day_with_kills_outages_unplugs_garbage_fuzz_and_a_day_end_loses_nothing(
    tmp_path: Path,
) -> None:
    report = run_soak(tmp_path / "soak", kills=5, duration=60, speed=240, seed=10)
    print(report.figures())
    assert report.faults["kill"] == 5 and report.faults["broker_stop"] == 1
    assert report.faults["unplug"] == 2 and report.faults["garbage"] == 10
    assert report.tickets >= 20, report.figures()
    # The reset hour passes mid-run: yesterday's tickets end once (day_end), numbers restart.
    assert report.day_ends == 1, report.figures()
    assert report.losses == 0, report.figures()
    assert report.problems == [], report.figures()


def test_sigterm_in_the_middle_of_traffic_exits_cleanly_and_keeps_every_ticket(
    tmp_path: Path, broker: Broker
) -> None:
    config, web = simulated_hall_config(tmp_path, broker.port)
    with recording(broker.port, ["hall/demo-hall/status"]) as rec:
        sim = start_simulator(
            config,
            *("--speed", "600", "--peak-per-hour", "400", "--seed", "4", "--duration", "20"),
        )
        daemon = Daemon(config, web)
        try:
            daemon.start()
            time.sleep(8)  # traffic flowing
            t0 = time.monotonic()
            assert daemon.stop(timeout=15) == 0  # TimeoutStopSec=15
            stopped_in = time.monotonic() - t0
            out, _ = sim.communicate(timeout=60)
            rec.wait_for(lambda r: r.status() == "stopped", timeout=10)
        finally:
            sim.kill()
            if daemon.proc is not None:
                daemon.proc.kill()
    assert stopped_in < 15
    stats = json.loads(out[out.index("{") :])
    export = tmp_path / "events.jsonl"
    assert hall_daemon("events", "export", "-c", str(config), "-o", str(export)).returncode == 0
    log = [loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    issued = [e for e in log if e.type == "ticket.issued"]
    # Every ticket the dispenser printed (a TICKET reply: acknowledged) is in the log.
    assert stats["tickets"] >= 5, stats
    assert len(issued) >= stats["tickets"], (len(issued), stats)
    assert "stopped cleanly" in daemon.log_text()
    assert "Traceback" not in daemon.log_text()
    # Retained: a subscriber arriving later still sees `stopped`.
    with recording(broker.port, ["hall/demo-hall/status"]) as late:
        late.wait_for(lambda r: r.status() == "stopped", timeout=10)

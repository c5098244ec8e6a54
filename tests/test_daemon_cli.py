"""The `hall-daemon` command as hall IT staff use it: check the config, run, stop, export."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hall_daemon.events import from_contract, loads
from tests.daemon_harness import Daemon, free_port, hall_daemon, write_config

pytestmark = pytest.mark.service


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    d = Daemon(write_config(tmp_path, web_port=port), port)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()


def test_check_config_accepts_the_example_and_names_the_line_of_an_error(tmp_path: Path) -> None:
    ok = hall_daemon("check-config", "config.yaml")
    assert ok.returncode == 0, ok.stderr
    assert "3 services, 6 counters" in ok.stdout
    bad = write_config(tmp_path, web_port=8080, **{r"services: \[A, B\]": "services: [A, X]"})
    result = hall_daemon("check-config", str(bad))
    assert result.returncode == 2
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if "[A, X]" in t)
    assert re.search(
        rf"config\.yaml:{line} counters\[\d\]\.services\[1\]: unknown service 'X'", result.stderr
    )


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["run", "--help"],
        ["check-config", "--help"],
        ["events", "export", "--help"],
    ):
        result = hall_daemon(*args)
        assert result.returncode == 0 and "usage: hall-daemon" in result.stdout


def test_run_serves_health_stops_cleanly_and_exports_its_log(
    daemon: Daemon, tmp_path: Path
) -> None:
    daemon.start()
    status, health = daemon.get("/healthz")
    assert status == 200 and health["ok"] and health["boot"] == 1
    status, view = daemon.get("/api/queues")
    assert status == 200
    assert [s["service"] for s in view["services"]] == ["A", "B", "C"]
    assert len(view["counters"]) == 6
    assert daemon.stop() == 0
    assert "stopped cleanly" in daemon.log_text()

    # A second start is boot 2 and recovers the same hall.
    daemon.start()
    assert daemon.get("/healthz")[1]["boot"] == 2
    assert daemon.stop() == 0

    out = tmp_path / "events.jsonl"
    result = hall_daemon(
        "events", "export", "-c", str(daemon.config), "--since", "2000-01-01", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    events = [loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert events and [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "hall.day_started"
    assert (
        from_contract(
            {
                "v": 1,
                **{k: getattr(events[0], k) for k in ("seq", "id", "type", "data")},
                "at": events[0].at.isoformat(),
            }
        )
        == events[0]
    )

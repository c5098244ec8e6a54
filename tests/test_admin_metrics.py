"""/metrics: valid Prometheus text exposition (checked by a strict little parser) with the
series a hall's monitoring needs, and /api/status for the page."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hall_daemon import commands as c
from hall_daemon.admin.metrics import Exposition
from hall_daemon.config import WebLimits
from hall_daemon.connections import FrontDoor

from .test_admin_security import T0, Rig, make_rig

pytestmark = pytest.mark.unit

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
VALUE = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_exposition(text: str) -> Series:
    """The text format 0.0.4, strictly: HELP/TYPE before a family's samples, families not
    interleaved, no duplicate series, every value a float, the body ending in a newline."""
    assert text.endswith("\n")
    series: Series = {}
    typed: dict[str, str] = {}
    finished: set[str] = set()
    current: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        where = f"line {n}: {line!r}"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name), where
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in TYPES and name not in typed, where
            if current is not None:
                finished.add(current)
            typed[name], current = kind, name
            continue
        assert not line.startswith("#") and line.strip(), where
        m = SAMPLE.match(line)
        assert m, where
        name, labels, value = m.groups()
        assert name == current and name not in finished, f"{where}: outside its family"
        assert VALUE.match(value), where
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        key = (name, pairs)
        assert key not in series, f"{where}: duplicate series"
        series[key] = float(value)
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


class Source:
    """A stand-in with the stats() shape of the real handle (see each module's stats())."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def stats(self) -> Any:
        return self._stats


@pytest_asyncio.fixture
async def rig(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Rig]:
    caplog.set_level(logging.INFO)
    async for r in make_rig(tmp_path, caplog):
        yield r


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("a\\b", "a\\\\b"), ('say "hi"', 'say \\"hi\\"'), ("two\nlines", "two\\nlines")],
)
def test_label_values_are_escaped(raw: str, shown: str) -> None:
    x = Exposition()
    x.family("hall_x", "gauge", "x", [({"l": raw}, 1.0)])
    text = x.text()
    assert f'hall_x{{l="{shown}"}} 1' in text
    parse_exposition(text)


def test_the_parser_catches_broken_exposition() -> None:
    with pytest.raises(AssertionError):
        parse_exposition('# TYPE a gauge\na{l="x} 1\n')
    with pytest.raises(AssertionError):
        parse_exposition("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n")
    with pytest.raises(AssertionError):
        parse_exposition("# TYPE a gauge\na one\n")


async def test_metrics_parse_and_carry_the_halls_series(rig: Rig) -> None:
    csrf = await rig.login()
    h = rig.hall
    await h.submit(c.TakeTicket(T0, "A", "m" * 22))
    await h.submit(c.TakeTicket(T0, "A", "n" * 22))
    await h.submit(c.TakeTicket(T0, "B", "o" * 22))
    await h.submit(c.CallNext(T0, 1))
    await h.submit(c.Done(T0, 1))
    status, _ = await rig.act("counter.pause", {"counter": 1}, csrf=csrf)
    assert status == 200
    handles = rig.admin.handles
    handles.ports = Source(
        [
            {
                "port": "bus1",
                "link": {"name": "bus1", "state": "open"},
                "devices": [
                    {
                        "id": "kp-1",
                        "kind": "keypad",
                        "online": True,
                        "frames_good": 120,
                        "frames_bad": 3,
                        "unresponsive": 1,
                    },
                    {"id": 'odd"name', "kind": "screen", "online": False, "frames_good": 0},
                ],
            }
        ]
    )
    handles.sync = Source(
        {
            "enabled": True,
            "connected": False,
            "outbox_depth": 7,
            "oldest_unsent": T0.replace(minute=0).isoformat(),
            "reconnects": 2,
            "events_published": 40,
        }
    )
    handles.voice = Source(
        {"enabled": True, "ok": False, "queue": 2, "played": 5, "dropped": 0, "faults": 1}
    )
    handles.printer = Source({"ok": True, "paper": "low", "printed": 12, "failed": 0})
    door = FrontDoor(WebLimits(), cap=500)
    door.counts.refused_per_client, door.counts.head_timeouts = 844, 3
    handles.web = door
    await h.bus.drain()  # the metrics' bus subscription has counted every event

    r = await rig.client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    s = parse_exposition(await r.text())
    assert value(s, "hall_queue_waiting", service="A") == 1
    assert value(s, "hall_queue_waiting", service="B") == 1
    assert value(s, "hall_queue_waiting", service="C") == 0
    assert value(s, "hall_forecast_wait_seconds", service="A", bound="expected") >= 0
    assert value(s, "hall_tickets_issued_today", service="A") == 2
    assert value(s, "hall_tickets_today", service="A", state="done") == 1
    assert value(s, "hall_events_total", type="ticket.issued") == 3
    assert value(s, "hall_ticket_events_total", type="ticket.done", service="A") == 1
    assert value(s, "hall_counter_state", counter="1", state="paused") == 1
    assert value(s, "hall_counter_state", counter="1", state="open") == 0
    assert value(s, "hall_device_online", device="kp-1", kind="keypad", port="bus1") == 1
    assert value(s, "hall_device_frames_bad_total", device="kp-1", kind="keypad", port="bus1") == 3
    assert value(s, "hall_device_online", device='odd\\"name', kind="screen", port="bus1") == 0
    assert value(s, "hall_port_link_up", port="bus1") == 1
    assert value(s, "hall_mqtt_connected") == 0
    assert value(s, "hall_outbox_depth") == 7
    assert value(s, "hall_outbox_oldest_unsent_age_seconds") == 0  # T0 is the hall's "now"
    assert value(s, "hall_voice_queue_length") == 2 and value(s, "hall_voice_ok") == 0
    assert value(s, "hall_printer", field="printed") == 12
    assert value(s, "hall_writer_healthy") == 1
    assert value(s, "hall_web_connections_cap") == 500
    assert value(s, "hall_web_connections_refused_total", reason="per_client") == 844
    assert value(s, "hall_web_connections_refused_total", reason="head_timeout") == 3
    assert value(s, "hall_event_seq") == h.store.last_seq()
    assert 0 <= value(s, "hall_loop_lag_seconds") < 5
    assert value(s, "hall_state_dir_free_bytes") > 0
    assert not any(math.isnan(v) for v in s.values())


async def test_status_json_reports_queues_counters_and_outputs(rig: Rig) -> None:
    await rig.login()
    await rig.hall.submit(c.TakeTicket(T0, "A", "p" * 22))
    await rig.hall.submit(c.CallNext(T0, 2))
    r = await rig.client.get("/admin/api/status")
    body = await r.json()
    counters = {x["counter"]: x for x in body["counters"]}
    assert counters[2]["state"] == "open" and counters[2]["ticket"] == "A001"
    assert counters[2]["since"] == "10:00:00"
    assert body["tickets"][0]["number"] == "A001" and body["tickets"][0]["counter"] == 2
    assert body["disk"]["free_bytes"] > 0 and body["writer"]["healthy"] is True
    assert body["mqtt"] is None and body["printer"] is None  # not configured in this rig
    assert "p" * 22 not in await r.text()  # never a ticket's token

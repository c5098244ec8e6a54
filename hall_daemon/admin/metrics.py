"""`/metrics` in the Prometheus text exposition format (version 0.0.4), written by hand.

Gauges are read from the hall's state and the outputs' `stats()` at scrape time; the
`hall_events_total` counter counts committed events by type since the daemon started (the
usual Prometheus counter: it resets with the process, and `rate()` copes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..events import StoredEvent
from ..hall import Hall
from ..state import CLOSED, OPEN, PAUSED
from .status import AdminHandles, read_stats, services_view

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = dict[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Collects families; each is HELP, TYPE, then its samples, never split."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]
    ) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            if labels:
                inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                self._lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self._lines.append(f"{name} {_number(value)}")

    def gauge(self, name: str, help_text: str, value: float | None) -> None:
        if value is not None:
            self.family(name, "gauge", help_text, [({}, value)])

    def counter(self, name: str, help_text: str, value: float | None) -> None:
        if value is not None:
            self.family(name, "counter", help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


class EventCounter:
    """Committed events by type, fed by the bus."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.by_service: Counter[tuple[str, str]] = Counter()

    async def on_event(self, e: StoredEvent) -> None:
        self.by_type[e.type] += 1
        service = e.data.get("service") or e.data.get("to")
        if e.type.startswith("ticket.") and isinstance(service, str):
            self.by_service[(e.type, service)] += 1


def _num(d: Any, key: str) -> float | None:
    if isinstance(d, dict):
        v = d.get(key)
        if isinstance(v, bool | int | float):
            return float(v)
    return None


def _age(iso: Any, now: datetime) -> float:
    if not isinstance(iso, str):
        return 0.0
    try:
        return max((now - datetime.fromisoformat(iso)).total_seconds(), 0.0)
    except (ValueError, TypeError):
        return 0.0


COMMAND_OUTCOMES = (
    "accepted",
    "refused",
    "repeated",
    "unreadable",
    "too_deep",
    "failed",
    "dropped",
)


def render_metrics(
    hall: Hall,
    handles: AdminHandles,
    counter: EventCounter,
    *,
    loop_lag_s: float,
    loop_lag_max_s: float,
    disk: dict[str, Any],
    login_failures: int,
    login_checks: int = 0,
    login_refused: int = 0,
) -> str:
    x = Exposition()
    s = hall.state
    now = hall.now()
    services = services_view(hall, now)
    x.family(
        "hall_queue_waiting",
        "gauge",
        "Tickets waiting per service.",
        [({"service": v["service"]}, v["waiting"]) for v in services],
    )
    x.family(
        "hall_queue_longest_wait_seconds",
        "gauge",
        "How long the longest-waiting ticket of the service has waited (0 when none waits).",
        [({"service": v["service"]}, v["longest_wait_s"] or 0) for v in services],
    )
    x.family(
        "hall_forecast_wait_seconds",
        "gauge",
        "Forecast wait of a ticket taken now, with its 80% interval.",
        [
            ({"service": v["service"], "bound": b}, v["forecast"].get(key))
            for v in services
            for b, key in (("expected", "wait_s"), ("p10", "p10_s"), ("p90", "p90_s"))
        ],
    )
    x.family(
        "hall_tickets_issued_today",
        "gauge",
        "Tickets issued since the hall day began, per original service.",
        [({"service": v["service"]}, v["issued"]) for v in services],
    )
    states: Counter[tuple[str, str]] = Counter()
    for t in s.tickets.values():
        states[(t.service, t.state)] += 1
    x.family(
        "hall_tickets_today",
        "gauge",
        "Today's tickets by service and state.",
        [({"service": k[0], "state": k[1]}, n) for k, n in sorted(states.items())],
    )
    x.family(
        "hall_events_total",
        "counter",
        "Committed events by type since the daemon started.",
        [({"type": t}, n) for t, n in sorted(counter.by_type.items())],
    )
    x.family(
        "hall_ticket_events_total",
        "counter",
        "Ticket events (issued, called, done, no_show, cancelled, ...) by service since start.",
        [({"type": t, "service": svc}, n) for (t, svc), n in sorted(counter.by_service.items())],
    )
    x.family(
        "hall_counter_state",
        "gauge",
        "1 for the counter's current state (open, paused, closed).",
        [
            ({"counter": str(c.id), "state": st}, 1 if c.state == st else 0)
            for c in s.counters.values()
            for st in (OPEN, PAUSED, CLOSED)
        ],
    )
    x.family(
        "hall_counter_busy",
        "gauge",
        "1 when the counter is calling or serving a ticket.",
        [({"counter": str(c.id)}, 1 if c.current else 0) for c in s.counters.values()],
    )

    # Devices, from the ports' own counters.
    ports = read_stats(handles.ports, "ports")
    up, good, bad, unresponsive, link_up = [], [], [], [], []
    for port in ports if isinstance(ports, list) else []:
        if not isinstance(port, dict):
            continue
        link = port.get("link") or {}
        name = str(port.get("port") or link.get("name") or "")
        link_up.append(({"port": name}, 1 if link.get("state") == "open" else 0))
        for d in port.get("devices") or []:
            labels = {"device": str(d.get("id")), "kind": str(d.get("kind")), "port": name}
            up.append((labels, 1 if d.get("online") else 0))
            good.append((labels, d.get("frames_good", 0)))
            bad.append((labels, d.get("frames_bad", 0)))
            unresponsive.append((labels, d.get("unresponsive", 0)))
    x.family("hall_port_link_up", "gauge", "1 when the serial link is open.", link_up)
    x.family("hall_device_online", "gauge", "1 when the device answers.", up)
    x.family("hall_device_frames_good_total", "counter", "Good frames from the device.", good)
    x.family("hall_device_frames_bad_total", "counter", "Bad frames from the device.", bad)
    x.family(
        "hall_device_unresponsive_total",
        "counter",
        "Times the device stopped answering.",
        unresponsive,
    )
    x.family(
        "hall_device_fault",
        "gauge",
        "1 for devices whose last logged state is fault (voice, printer, serial devices).",
        [({"device": name}, 1 if st == "fault" else 0) for name, (st, _d) in s.devices.items()],
    )

    # MQTT link and outbox.
    sync = read_stats(handles.sync, "sync")
    if isinstance(sync, dict) and sync.get("enabled"):
        x.gauge("hall_mqtt_connected", "1 when connected to the broker.", _num(sync, "connected"))
        x.gauge(
            "hall_outbox_depth",
            "Events not yet acknowledged by the broker.",
            _num(sync, "outbox_depth"),
        )
        x.gauge(
            "hall_outbox_oldest_unsent_age_seconds",
            "Age of the oldest event the broker has not acknowledged (0 when none).",
            _age(sync.get("oldest_unsent"), now),
        )
        x.counter(
            "hall_mqtt_reconnects_total", "Reconnections to the broker.", _num(sync, "reconnects")
        )
        x.counter(
            "hall_mqtt_events_published_total",
            "Events published to the broker since start.",
            _num(sync, "events_published"),
        )
        x.family(
            "hall_mqtt_commands_total",
            "counter",
            "Backend commands since start by outcome (too_deep ones are also refused; failed "
            "ones were answered 500; dropped ones found the queue full).",
            [({"outcome": o}, _num(sync, f"commands_{o}") or 0) for o in COMMAND_OUTCOMES],
        )
        x.counter(
            "hall_mqtt_reply_topics_refused_total",
            "Response topics the contract forbids; those replies went to <base>/cmd/<name>/reply.",
            _num(sync, "reply_topics_refused"),
        )
        x.counter(
            "hall_mqtt_task_restarts_total",
            "MQTT sync tasks restarted after an unexpected failure.",
            _num(sync, "task_restarts"),
        )

    # Voice and printer.
    voice = read_stats(handles.voice, "voice")
    if isinstance(voice, dict) and voice.get("enabled"):
        x.gauge(
            "hall_voice_queue_length", "Announcements waiting to be said.", _num(voice, "queue")
        )
        x.gauge("hall_voice_ok", "1 when the voice output works.", _num(voice, "ok"))
        x.counter("hall_voice_played_total", "Announcements said.", _num(voice, "played"))
        x.counter(
            "hall_voice_dropped_total", "Announcements dropped as too late.", _num(voice, "dropped")
        )
        x.counter("hall_voice_faults_total", "Player faults.", _num(voice, "faults"))
    printer = read_stats(handles.printer, "printer")
    if isinstance(printer, dict):
        x.family(
            "hall_printer",
            "gauge",
            "The receipt printer's figures as it reports them (ok, paper, printed, failed, ...).",
            [
                ({"field": k}, float(v))
                for k, v in sorted(printer.items())
                if isinstance(v, bool | int | float)
            ],
        )

    # The daemon itself.
    w = hall.stats
    x.gauge("hall_event_seq", "The seq of the last committed event.", hall.store.last_seq())
    x.gauge(
        "hall_writer_healthy",
        "1 when the writer runs, its last commit worked and the engine is not failing.",
        hall.healthy,
    )
    x.counter("hall_writer_commits_total", "Store commits.", w.commits)
    x.counter("hall_writer_commit_failures_total", "Store commits that failed.", w.commit_failures)
    x.counter("hall_writer_refused_total", "Commands the engine refused.", w.refused)
    x.counter(
        "hall_writer_engine_failures_total",
        "Commands the engine failed on (internal errors, see the log).",
        w.engine_failures,
    )
    x.gauge("hall_writer_last_commit_seconds", "Duration of the last commit.", w.last_commit_s)
    x.family(
        "hall_bus_dropped_total",
        "counter",
        "Events a slow bus subscriber lost (it resynchronised afterwards).",
        [({"subscriber": n}, st.dropped) for n, st in sorted(hall.bus.stats().items())],
    )
    x.gauge("hall_loop_lag_seconds", "Event loop lag: the worst of the last probes.", loop_lag_s)
    x.gauge("hall_loop_lag_max_seconds", "Worst event loop lag since start.", loop_lag_max_s)
    x.gauge(
        "hall_state_dir_free_bytes", "Free space where the state is kept.", _num(disk, "free_bytes")
    )
    x.counter(
        "hall_admin_login_failures_total", "Wrong admin passwords since start.", login_failures
    )
    x.counter("hall_admin_login_checks_total", "Admin passwords checked (hashed).", login_checks)
    x.counter(
        "hall_admin_login_refused_total",
        "Admin logins refused unchecked by the throttle (429).",
        login_refused,
    )
    _web_connections(x, read_stats(handles.web, "web"))
    return x.text()


def _web_connections(x: Exposition, door: Any) -> None:
    if not isinstance(door, dict):
        return
    x.gauge("hall_web_connections", "Web connections held now.", _num(door, "held"))
    x.gauge("hall_web_connections_cap", "Web connections the server admits.", _num(door, "cap"))
    reasons = {
        "per_client": "refused_per_client",
        "full": "refused_full",
        "made_room": "made_room",
        "head_timeout": "head_timeouts",
    }
    x.family(
        "hall_web_connections_refused_total",
        "counter",
        "Web connections refused or closed by the front door, by reason.",
        [({"reason": r}, int(door.get(key, 0))) for r, key in reasons.items()],
    )
    x.counter(
        "hall_web_accept_errors_total",
        "accept() failures (EMFILE, ENFILE, ...).",
        _num(door, "accept_errors"),
    )


def _kiosk_refusals(handles: AdminHandles) -> dict[str, int]:
    stats = read_stats(handles.display, "display")
    refused = stats.get("kiosk_refused") if isinstance(stats, dict) else None
    return {str(k): int(v) for k, v in refused.items()} if isinstance(refused, dict) else {}

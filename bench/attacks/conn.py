"""Connections, WebSockets and the dispenser's link-up, at full size, against the real daemon
run under systemd's default open-file limit (1024). Loopback only (127.0.0.x sources)."""

from __future__ import annotations

import contextlib
import resource
import statistics
import tempfile
import time
from pathlib import Path

from tests.attack_conn_harness import (
    EagerDispenser,
    LimitedDaemon,
    answered_or_closed,
    close_all,
    connect_from,
    fresh_daemon,
    hall_config,
    hold_idle,
    hold_kept_alive,
    timed_get,
    websocket_handshake,
)
from tests.daemon_harness import free_port

IDLE = 1100
WEBSOCKETS = 5000
LINK_RUNS = 8  # daemon starts; two link-ups each (the start's and one reconnection)


def _healthz_under_load(port: int, tries: int = 5) -> tuple[int, float, float]:
    """How many of `tries` fresh /healthz got 200, and the median and worst seconds."""
    times, ok = [], 0
    for _ in range(tries):
        status, took = timed_get(port, timeout=10.0)
        ok += status == 200
        times.append(took)
        time.sleep(0.2)
    return ok, statistics.median(times), max(times)


def _idle_flood(daemon: LimitedDaemon, sources: list[str]) -> dict[str, object]:
    log_before = daemon.log_size()
    held = hold_idle(daemon.web_port, IDLE, sources)
    try:
        time.sleep(0.5)
        open_now = sum(answered_or_closed(s, peek=True) is None for s in held)
        ok, median, worst = _healthz_under_load(daemon.web_port)
    finally:
        close_all(held)
    return {
        "held": open_now,
        "refused_or_closed": IDLE - open_now,
        "healthz_ok": f"{ok}/5",
        "healthz_median_s": round(median, 3),
        "healthz_max_s": round(worst, 3),
        "log_bytes": daemon.log_size() - log_before,
    }


def _kept_alive_flood(daemon: LimitedDaemon) -> dict[str, object]:
    held = hold_kept_alive(daemon.web_port, IDLE, [f"127.0.0.{i}" for i in range(12, 17)])
    try:
        time.sleep(1.5)
        open_now = sum(answered_or_closed(s, peek=True) is None for s in held)
        ok, _, worst = _healthz_under_load(daemon.web_port)
    finally:
        close_all(held)
    return {
        "kept_alive_held": open_now,
        "kept_alive_healthz_ok": f"{ok}/5",
        "kept_alive_healthz_max_s": round(worst, 3),
    }


def _slowloris(daemon: LimitedDaemon) -> float:
    sock = connect_from("127.0.0.7", daemon.web_port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    try:
        while time.monotonic() - started < 30.0:
            if answered_or_closed(sock) is not None:
                break
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.25)
        return round(time.monotonic() - started, 2)
    finally:
        sock.close()


def _websockets(daemon: LimitedDaemon) -> dict[str, object]:
    rss_before = daemon.rss_mb()
    opened, upgraded, refused = [], 0, 0
    try:
        for _ in range(WEBSOCKETS):
            try:
                sock = connect_from("127.0.0.3", daemon.web_port)
                status = websocket_handshake(sock, "/ws/screen/hall")
            except OSError:
                refused += 1
                continue
            opened.append(sock)
            if status.startswith(b"HTTP/1.1 101"):
                upgraded += 1
            else:
                refused += 1
        rss_after = daemon.rss_mb()
        screen = connect_from("127.0.0.2", daemon.web_port)
        opened.append(screen)
        real_screen = websocket_handshake(screen, "/ws/screen/hall").startswith(b"HTTP/1.1 101")
    finally:
        close_all(opened)
    return {
        "ws_accepted_one_address": upgraded,
        "ws_refused": refused,
        "ws_real_screen_connects": real_screen,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
    }


def _link_ups(tmp: Path) -> str:
    dispenser = EagerDispenser()
    port = free_port()
    daemon = LimitedDaemon(hall_config(tmp, port, dispenser.port), port, nofile=1024)
    try:
        for run in range(LINK_RUNS):
            dispenser.arm()
            daemon.start()
            dispenser.wait(2 * (run + 1), timeout=6.0)
            dispenser.disarm()
            daemon.stop()
    finally:
        daemon.kill()
        dispenser.close()
    answered = sum(r is not None for r in dispenser.replies)
    return f"{answered}/{len(dispenser.replies)}"


def run() -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))
    figures: dict[str, object] = {"daemon_nofile": 1024}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "a").mkdir()
        daemon = fresh_daemon(tmp / "a", nofile=1024)
        try:
            daemon.start()
            figures["rss_mb_start"] = round(daemon.rss_mb(), 1)
            spread = _idle_flood(daemon, [f"127.0.0.{i}" for i in range(2, 7)])
            figures.update({f"idle5_{k}": v for k, v in spread.items()})
            time.sleep(1.0)
            single = _idle_flood(daemon, ["127.0.0.8"])
            figures.update({f"idle1_{k}": v for k, v in single.items()})
            time.sleep(1.0)
            figures.update(_kept_alive_flood(daemon))
            figures["slowloris_closed_after_s"] = _slowloris(daemon)
            figures.update(_websockets(daemon))
            log = daemon.log_text()
            figures["accept_tracebacks"] = log.count("out of system resource")
            figures["log_bytes_total"] = daemon.log_size()
            daemon.stop()
        finally:
            daemon.kill()
        (tmp / "b").mkdir()
        figures["take_at_link_up_answered"] = _link_ups(tmp / "b")
    return figures

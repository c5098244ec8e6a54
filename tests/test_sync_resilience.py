"""The MQTT sync when things go wrong: a broker outage across a daemon restart, kill -9 of
a real daemon process (the Last Will), and a hall broker bridged to a central one whose
link is cut for a while."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hall_daemon import commands as c
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from sync import SyncOptions
from sync.connection import Connection, Session, Settings
from tests.mqtt_broker import (
    REPO,
    T0,
    Broker,
    Clock,
    Contract,
    TcpProxy,
    command,
    mqtt_config,
    recording,
    running,
    until,
)

pytest_plugins = ["tests.mqtt_broker"]
pytestmark = pytest.mark.service

BASE = "hall/demo-hall"
CONTRACT = Contract()


async def burst(hall: Hall, clock: Clock, n: int) -> None:
    """n events as fast as the hall takes them: PAUSE pressed on the six counters in turn."""
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                hall.submit(c.TogglePause(clock(), 1 + i % 6))
                for i in range(start, min(start + 500, n))
            )
        )


def check_log(events: list[dict[str, Any]], last: int) -> int:
    """Every seq from 1 to `last`, in order; a repeat only as the very same event (same id).
    Returns how many repeats there were."""
    ids: dict[int, str] = {}
    order: list[int] = []
    for e in events:
        if e["seq"] in ids:
            assert ids[e["seq"]] == e["id"], f"seq {e['seq']} came with two ids"
            continue
        ids[e["seq"]] = e["id"]
        order.append(e["seq"])
    assert order == list(range(1, last + 1)), "missing or out of order: " + str(
        sorted(set(range(1, last + 1)) - set(order))[:20]
    )
    return len(events) - len(order)


async def test_an_outage_across_a_daemon_restart_loses_no_event_and_keeps_the_order(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    db = tmp_path / "hall.db"
    config = mqtt_config(broker.port)
    # The backend: a persistent session, so the broker keeps what it cannot deliver yet.
    with recording(broker.port, [f"{BASE}/events"], client_id="backend", persistent=True) as rec:
        async with running(db, config, clock) as (hall, sync):
            await until(lambda: sync.stats()["connected"])
            await burst(hall, clock, 2000)
            broker.stop()  # in the middle: the pump is still draining those 2,000
            await burst(hall, clock, 1500)
            await until(lambda: not sync.stats()["connected"], what="the outage noticed")
            assert sync.stats()["outbox_depth"] > 1500
        # The daemon restarts while the broker is still away, and the hall goes on.
        async with running(db, config, clock) as (hall, sync):
            await burst(hall, clock, 1500)
            depth = sync.stats()["outbox_depth"]
            assert depth >= 3000, depth
            await until(lambda: sync.stats()["oldest_unsent"] is not None, what="oldest unsent")
            broker.start()
            started = time.perf_counter()
            await until(lambda: sync.stats()["outbox_depth"] == 0, 60, "the outbox drained")
            drained = time.perf_counter() - started
            last = hall.store.last_seq()
            assert last >= 5000
            print(f"\ndrained {depth} events in {drained:.2f} s ({depth / drained:.0f}/s)")
            await rec.until(lambda r: any(e["seq"] == last for e in r.events(f"{BASE}/events")), 30)
    events = rec.events(f"{BASE}/events")
    repeats = check_log(events, last)
    assert repeats <= 2 * 1000, repeats  # at most what was in flight at each of two drops
    CONTRACT.check_all(rec.snapshot())
    # Every row is marked sent, so the daemon's hourly housekeeping can prune them all: the
    # outbox does not grow without bound.
    store = Store(Store.sqlite_url(db))
    store.open()
    try:
        assert store.outbox_depth() == 0
        assert store.prune(clock() + timedelta(seconds=1)) >= last
    finally:
        store.close()


CHILD = """
import asyncio, sys
from pathlib import Path
from tests.mqtt_broker import FAST, make_hall, mqtt_config
from sync import start_sync

async def main() -> None:
    hall = make_hall(Path(sys.argv[1]))
    await hall.start()
    await start_sync(hall, mqtt_config(int(sys.argv[2])), options=FAST)
    print("started", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_child(db: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_kill_9_of_the_daemon_makes_the_broker_say_offline(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "hall.db"
    with recording(broker.port, [f"{BASE}/status"]) as rec:
        child = start_child(db, broker.port)
        try:
            await rec.until(lambda r: r.status() == "online", 20, "online")
            first = rec.last_json(f"{BASE}/status")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            killed = time.perf_counter()
            await rec.until(lambda r: r.status() == "offline", 10, "the Last Will")
            print(f"\noffline {time.perf_counter() - killed:.3f} s after kill -9")
            will = rec.last(f"{BASE}/status")
            assert will is not None
            assert will.json()["boot"] == first["boot"] == 1
            child = start_child(db, broker.port)
            await rec.until(lambda r: r.status() == "online", 20, "online again")
            assert rec.last_json(f"{BASE}/status")["boot"] == 2
        finally:
            child.kill()
            child.wait(10)
    # A new subscriber sees the retained state of the live daemon.
    with recording(broker.port, [f"{BASE}/status"]) as late:
        await late.until(lambda r: r.status() is not None)
        assert late.last(f"{BASE}/status").retain  # type: ignore[union-attr]
    CONTRACT.check_all(rec.snapshot())


def bridge_conf(central: str, restart: str = "1 2") -> str:
    """sync/mosquitto-bridge.conf's bridge section, to `central`, without TLS and login."""
    text = (REPO / "sync" / "mosquitto-bridge.conf").read_text(encoding="utf-8")
    section = text[text.index("\nconnection ") :]
    lines = []
    for line in section.splitlines():
        if line.startswith(("bridge_cafile", "bridge_certfile", "bridge_keyfile", "remote_")):
            continue
        if line.startswith("address "):
            line = f"address {central}"
        if line.startswith("restart_timeout "):
            line = f"restart_timeout {restart}"  # the test's outage is seconds, not hours
        lines.append(line)
    return "\n".join(lines)


async def test_a_bridged_hall_broker_delivers_every_event_to_the_central_one_across_a_cut(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    clock = Clock(T0)
    central = broker_factory("central")
    link = TcpProxy(central.port)
    local = broker_factory("local", conf=bridge_conf(f"127.0.0.1:{link.port}"))
    state_topic = "bridge/demo-hall/state"
    try:
        with recording(central.port, [f"{BASE}/#", state_topic]) as backend:
            await backend.until(lambda r: r.last(state_topic), 15, "the bridge up")
            async with running(tmp_path / "hall.db", mqtt_config(local.port), clock) as (
                hall,
                sync,
            ):
                await backend.until(lambda r: r.status() == "online", 15, "online via the bridge")
                await burst(hall, clock, 300)
                first = hall.store.last_seq()
                await backend.until(lambda r: len(r.events(f"{BASE}/events")) >= first, 15)

                link.cut()
                await backend.until(lambda r: r.last(state_topic).payload == b"0", 15)  # type: ignore[union-attr]
                await burst(hall, clock, 700)
                await until(
                    lambda: sync.stats()["outbox_depth"] == 0, 15, "events at the hall broker"
                )
                await asyncio.sleep(1.5)  # the link stays down a while; nothing gets through
                assert max(e["seq"] for e in backend.events(f"{BASE}/events")) == first
                link.restore()

                last = hall.store.last_seq()
                await backend.until(
                    lambda r: any(e["seq"] == last for e in r.events(f"{BASE}/events")),
                    20,
                    "every event at the central broker",
                )
                # Commands from the central side reach the hall and are answered there.
                reply = await command(
                    backend, "ticket.remote", {"v": 1, "id": "via-bridge", "service": "A"}
                )
                assert reply["ok"] and reply["data"]["number"] == "A001"
                assert sync.stats()["reconnects"] == 0  # the daemon never noticed the cut
                last = hall.store.last_seq()
                await backend.until(
                    lambda r: any(e["seq"] == last for e in r.events(f"{BASE}/events"))
                )
        check_log(backend.events(f"{BASE}/events"), last)
        retained = [m for m in backend.snapshot() if m.topic == f"{BASE}/status"]
        assert retained and retained[-1].json()["state"] == "stopped"
        CONTRACT.check_all([m for m in backend.snapshot() if m.topic.startswith(BASE)])
    finally:
        link.close()


async def test_a_link_that_stops_answering_is_dropped_after_the_puback_timeout(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    link = TcpProxy(broker.port)
    options = SyncOptions(
        backoff_min_s=0.1, backoff_max_s=0.5, ack_timeout_s=1.0, connack_timeout_s=1.0
    )
    try:
        with recording(broker.port, [f"{BASE}/events", f"{BASE}/status"]) as rec:
            config = mqtt_config(link.port)
            async with running(tmp_path / "hall.db", config, clock, options) as (hall, sync):
                await rec.until(lambda r: r.status() == "online")
                await until(lambda: sync.stats()["outbox_depth"] == 0, what="a quiet start")
                link.stall()  # our publishes still arrive; the broker's PUBACKs do not
                await burst(hall, clock, 200)
                # No PUBACK within the timeout: dropped like a crash, so the Will goes out.
                await rec.until(lambda r: r.status() == "offline", 10, "the Last Will")
                await until(lambda: "no PUBACK" in sync.stats()["last_error"], what="the cause")
                assert sync.stats()["outbox_depth"] == 200  # nothing was marked sent
                link.stall(False)
                await rec.until(lambda r: r.status() == "online", 15, "online again")
                await until(lambda: sync.stats()["outbox_depth"] == 0, 15)
                last = hall.store.last_seq()
                await rec.until(lambda r: any(e["seq"] == last for e in r.events(f"{BASE}/events")))
        repeats = check_log(rec.events(f"{BASE}/events"), last)
        assert repeats >= 1  # what went through unacknowledged came again, same ids
        CONTRACT.check_all(rec.snapshot())
    finally:
        link.close()


async def test_closing_while_on_ready_runs_ends_the_connection_even_if_the_cancel_is_lost(
    broker: Broker,
) -> None:
    """Python 3.11's wait_for can swallow a cancel that lands as the awaited publish
    completes. close() must still end the connection, politely: the status the broker keeps
    is the goodbye, not the Will, and close() returns."""
    topic = "hall/test/status"
    entered = asyncio.Event()

    async def on_ready(sess: Session) -> None:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # what wait_for does in that race
            await asyncio.sleep(30)
        await sess.publish(topic, b"online", retain=True)

    async def goodbye(sess: Session) -> None:
        await sess.publish(topic, b"stopped", retain=True)

    settings = Settings(
        host="127.0.0.1",
        port=broker.port,
        client_id="lost-cancel",
        keepalive=30,
        protocol=5,
        username=None,
        password=lambda: None,
        tls=None,
        will_topic=topic,
        will_payload=lambda: b"offline",
    )
    conn = Connection(settings, on_ready=on_ready, on_message=lambda _s, _m: None)
    with recording(broker.port, [topic]) as rec:
        conn.start()
        await asyncio.wait_for(entered.wait(), 10)
        started = time.monotonic()
        await asyncio.wait_for(conn.close(goodbye), 15)
        assert time.monotonic() - started < 10
        await rec.until(lambda r: r.last(topic) and r.last(topic).payload == b"stopped", 5)
        await asyncio.sleep(0.5)  # a Will would come now, if the link had been dropped
        assert [m.payload for m in rec.on(topic)][-1] == b"stopped"

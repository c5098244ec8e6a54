"""The MQTT sync against a real Mosquitto: live state, events, coalescing, ticket topics,
commands, reconnects and the MQTT 3.1.1 fallback. Every message a subscriber sees is checked
against sync/asyncapi.yaml.

The serial drivers are not in this tree yet, so "keypad presses" are the engine commands a
keypad sends (CallNext, Recall, Serving, Done, ...), submitted to the hall directly."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from hall_daemon import commands as c
from hall_daemon.events import format_time
from hall_daemon.hall import Hall
from sync import SyncOptions, payloads
from sync.commands import commands_table, read_id
from sync.live import ticket_topics
from tests.mqtt_broker import (
    T0,
    Broker,
    Clock,
    Contract,
    DaemonThread,
    Recorder,
    TcpProxy,
    command,
    mqtt_config,
    publish,
    recording,
    replies,
    running,
    until,
    wait_until,
)

pytest_plugins = ["tests.mqtt_broker"]
pytestmark = pytest.mark.service

BASE = "hall/demo-hall"
CONTRACT = Contract()


def token(n: int) -> str:
    return f"tok{n:019d}"  # 22 characters, like secrets.token_urlsafe(16)


def retained_state(rec: Recorder) -> dict[str, Any]:
    """topic -> the last payload (parsed; None once cleared), for retained topics."""
    out: dict[str, Any] = {}
    for m in rec.snapshot():
        if m.topic.endswith("/events") or "/cmd/" in m.topic:
            continue
        out[m.topic] = m.json() if m.payload else None
    return out


def expected_state(hall: Hall) -> dict[str, Any]:
    """What the retained topics must say now, computed from the hall's view ('updated' aside)."""
    s, now, f = hall.state, hall.now(), hall.forecaster
    out: dict[str, Any] = {}
    for code in s.services:
        out[f"{BASE}/queues/{code}"] = json.loads(payloads.queue_state(s, f, code, now, now))
    for cid in s.counters:
        out[f"{BASE}/counters/{cid}"] = json.loads(payloads.counter_state(s, cid))
    for t in s.tickets.values():
        out[f"{BASE}/tickets/{t.token}"] = json.loads(payloads.ticket_state(s, f, t, now))
    return out


def without_updated(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: {f: v for f, v in (obj or {}).items() if f != "updated"} if "/queues/" in k else obj
        for k, obj in state.items()
    }


async def test_live_state_and_events_match_the_hall_after_a_morning_of_keypad_presses(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    with recording(broker.port, [f"{BASE}/#"]) as rec:
        async with running(tmp_path / "hall.db", mqtt_config(broker.port), clock) as (hall, sync):
            await rec.until(lambda r: r.status() == "online", what="online")
            script: list[Callable[[], c.Command]] = [
                lambda: c.OpenCounter(clock(), 1),
                lambda: c.OpenCounter(clock(), 3),
                *(lambda i=i: c.TakeTicket(clock(), "A", token(i)) for i in range(4)),
                lambda: c.TakeTicket(clock(), "A", token(10), priority=True),
                *(lambda i=i: c.TakeTicket(clock(), "B", token(20 + i)) for i in range(3)),
                lambda: c.TakeTicket(clock(), "C", token(30)),
                lambda: c.CallNext(clock(), 1),  # the priority ticket
                lambda: c.Recall(clock(), 1),
                lambda: c.Serving(clock(), 1),
                lambda: c.CallNext(clock(), 3),
                lambda: c.Suspend(clock(), 3),
                lambda: c.CallNext(clock(), 1),  # done with A005, calls the next
                lambda: c.Transfer(clock(), 1, "C"),
                lambda: c.CallNext(clock(), 3),
                lambda: c.NoShow(clock(), 3),
                lambda: c.Resume(clock(), 3),
                lambda: c.Done(clock(), 3),
                lambda: c.Rate(clock(), 3, 5),
                lambda: c.Cancel(clock(), token(22), "left"),
                lambda: c.PauseCounter(clock(), 3),
                lambda: c.OpenCounter(clock(), 6),
                lambda: c.CallNext(clock(), 6),
            ]
            for press in script:
                clock.advance(20)
                await hall.submit(press())
            last = hall.store.last_seq()
            await rec.until(
                lambda r: [e["seq"] for e in r.events(f"{BASE}/events")][-1:] == [last],
                what="the last event",
            )
            await until(lambda: sync.stats()["outbox_depth"] == 0, what="an empty outbox")
            expected = without_updated(expected_state(hall))
            await rec.until(
                lambda r: (
                    without_updated(retained_state(r)) | expected
                    == without_updated(retained_state(r))
                ),
                what="the retained state to match the hall",
            )
            stats = sync.stats()
            assert stats["connected"] and stats["outbox_depth"] == 0 and stats["in_flight"] == 0
            assert stats["oldest_unsent"] is None and stats["reconnects"] == 0

            # The event log: every seq once, in order, exactly the store's events, no tokens.
            events = rec.events(f"{BASE}/events")
            stored = await hall.io(hall.store.events_after, 0)
            assert [e["seq"] for e in events] == list(range(1, last + 1))
            assert events == [json.loads(payloads.event(e)) for e in stored]
            assert all("token" not in e["data"] for e in events)
            assert {e["type"] for e in events} >= {
                "ticket.issued", "ticket.called", "ticket.recalled", "ticket.serving",
                "ticket.suspended", "ticket.resumed", "ticket.transferred", "ticket.no_show",
                "ticket.done", "ticket.rated", "ticket.cancelled", "counter.opened",
                "counter.paused",
            }  # fmt: skip

            # A subscriber that comes later gets the same picture from the retained topics.
            with recording(broker.port, [f"{BASE}/#"]) as late:
                await late.until(
                    lambda r: len(retained_state(r)) >= len(expected) + 2, what="retained"
                )
                assert all(m.retain for m in late.snapshot())
                got = retained_state(late)
                assert without_updated(got) | expected == without_updated(got)
                assert got[f"{BASE}/status"]["state"] == "online"
                # The learned forecaster's outlook, from weekday x hour history.
                assert got[f"{BASE}/outlook"]["method"] == "weekday-hour-history"
                queue_a = got[f"{BASE}/queues/A"]
                assert queue_a["updated"] <= format_time(clock())
                assert queue_a["open_counters"] == [1, 6]
        # Stopped cleanly: the retained status says so.
        await rec.until(lambda r: r.status() == "stopped", what="stopped")
        assert CONTRACT.check_all(rec.snapshot()) > last


async def test_retained_topics_are_coalesced_and_the_last_value_is_published(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    topic = f"{BASE}/counters/2"
    with recording(broker.port, [f"{BASE}/counters/+", f"{BASE}/queues/+"]) as rec:
        async with running(tmp_path / "hall.db", mqtt_config(broker.port), clock) as (hall, _):
            await rec.until(lambda r: r.last(topic), what="counter 2")
            start = len(rec.on(topic))
            began = time.perf_counter()
            for _ in range(101):  # 101 presses of PAUSE in a second or so: closed -> open
                await hall.submit(c.TogglePause(clock(), 2))
                await asyncio.sleep(0.01)
            took = time.perf_counter() - began
            assert hall.state.counters[2].state == "open"
            final = json.loads(payloads.counter_state(hall.state, 2))
            await rec.until(lambda r: r.last_json(topic) == final, what="the final value")
            await asyncio.sleep(0.7)  # nothing more may follow
            for t in (topic, f"{BASE}/queues/A"):
                msgs = rec.on(t)[start if t == topic else 1 :]
                gaps = [b.at - a.at for a, b in itertools.pairwise(msgs)]
                # One at once, then one per 500 ms at most, and the last value at the end.
                assert len(msgs) <= took / 0.5 + 2, f"{t}: {len(msgs)} messages in {took:.2f} s"
                # Sent at least 500 ms apart; arrival times may jitter a little under load.
                assert all(g >= 0.4 for g in gaps), gaps
            assert rec.last_json(topic) == final
            CONTRACT.check_all(rec.snapshot())


async def test_a_ticket_topic_is_cleared_an_hour_after_the_ticket_finishes(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    db = tmp_path / "hall.db"
    options = SyncOptions(backoff_min_s=0.1, backoff_max_s=0.5, sweep_every_s=0.1)
    config = mqtt_config(broker.port)
    done_topic, left_topic = f"{BASE}/tickets/{token(1)}", f"{BASE}/tickets/{token(2)}"

    def tracked(hall: Hall) -> set[str]:
        with hall.store.engine.connect() as conn:
            return {r.token for r in conn.execute(select(ticket_topics.c.token))}

    with recording(broker.port, [f"{BASE}/tickets/+"]) as rec:
        async with running(db, config, clock, options) as (hall, _):
            await hall.submit(c.TakeTicket(clock(), "A", token(1)))
            await hall.submit(c.TakeTicket(clock(), "A", token(2)))
            await hall.submit(c.CallNext(clock(), 1))
            await hall.submit(c.Done(clock(), 1))
            await rec.until(lambda r: (r.last_json(done_topic) or {}).get("state") == "done")
            clock.advance(30 * 60)
            await asyncio.sleep(0.5)
            assert rec.last(done_topic).payload  # type: ignore[union-attr]
            assert tracked(hall) == {token(1), token(2)}
        # A restart in between: the hour still counts from when the ticket finished.
        async with running(db, config, clock, options) as (hall, _):
            clock.advance(29 * 60)
            await asyncio.sleep(0.5)
            assert rec.last(done_topic).payload  # type: ignore[union-attr]
            clock.advance(61)
            await rec.until(lambda r: r.last(done_topic).payload == b"", what="cleared")
            await until(lambda: tracked(hall) == {token(2)}, what="the token forgotten")
            # The waiting ticket is cancelled when the next hall day begins (04:00): its app
            # is told, and an hour later its topic goes.
            clock.t = T0.replace(day=28, hour=4, minute=30)
            await hall.submit(c.Tick(clock()))
            await rec.until(lambda r: (r.last_json(left_topic) or {}).get("state") == "cancelled")
            assert token(2) not in hall.state.by_token
            clock.advance(3601)
            await rec.until(lambda r: r.last(left_topic).payload == b"", what="cleared")
            await until(lambda: tracked(hall) == set(), what="no token left")
    # Nothing is retained for either ticket any more.
    with recording(broker.port, [f"{BASE}/tickets/+", f"{BASE}/status"]) as late:
        await late.until(lambda r: r.status() is not None)
        await asyncio.sleep(0.3)
        assert late.on(done_topic) == [] and late.on(left_topic) == []
    CONTRACT.check_all(rec.snapshot())


async def test_commands_run_and_reply_on_the_response_topic_or_reply_topic(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    topics = [f"{BASE}/cmd/+/reply", "app/replies/#", f"{BASE}/tickets/+", f"{BASE}/events"]
    with recording(broker.port, topics) as rec:
        async with running(tmp_path / "hall.db", mqtt_config(broker.port), clock) as (hall, sync):
            await until(lambda: sync.stats()["connected"], what="connected")
            took = await command(
                rec,
                "ticket.remote",
                {"v": 1, "id": "r-1", "service": "B"},
                response_topic="app/replies/42",
                correlation=b"\x01corr",
            )
            assert took["ok"] is True, took
            data = took["data"]
            assert data["number"] == "B001" and data["ahead"] == 0
            assert data["forecast"]["method"] == "queue-length"
            reply_msg = rec.on("app/replies/42")[-1]
            assert reply_msg.properties.CorrelationData == b"\x01corr"
            t = hall.state.by_token[data["token"]]
            assert t.channel == "remote" and len(t.token) >= 16
            ticket_topic = f"{BASE}/tickets/{data['token']}"
            await rec.until(lambda r: (r.last_json(ticket_topic) or {}).get("state") == "waiting")

            cancelled = await command(
                rec, "ticket.cancel", {"v": 1, "id": "k-1", "token": data["token"]}
            )
            assert cancelled == {
                "v": 1,
                "id": "k-1",
                "ok": True,
                "data": {"number": "B001", "state": "cancelled"},
            }
            await rec.until(lambda r: (r.last_json(ticket_topic) or {}).get("state") == "cancelled")
            again = await command(
                rec, "ticket.cancel", {"v": 1, "id": "k-2", "token": data["token"]}
            )
            assert again["error"]["code"] == 409 and again["error"]["reason"] == "not-waiting"
            unknown = await command(rec, "ticket.cancel", {"v": 1, "id": "k-3", "token": token(99)})
            assert unknown["error"]["code"] == 404

            start = clock() + timedelta(minutes=10)
            appointment = {
                "v": 1,
                "id": "a-1",
                "code": "AP-7",
                "service": "C",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
            }
            upserted = await command(rec, "appointment.upsert", appointment)
            assert upserted["ok"] and hall.state.appointments["AP-7"].service == "C"
            wrong = await command(
                rec, "ticket.remote", {"v": 1, "id": "r-2", "service": "A", "appointment": "AP-7"}
            )
            assert wrong["error"]["reason"] == "wrong-service"
            checked_in = await command(
                rec, "ticket.remote", {"v": 1, "id": "r-3", "service": "C", "appointment": "AP-7"}
            )
            assert checked_in["ok"] and checked_in["data"]["number"] == "C001"
            assert hall.state.by_token[checked_in["data"]["token"]].channel == "appointment"
            await command(rec, "appointment.upsert", {**appointment, "id": "a-2", "code": "AP-8"})
            removed = await command(
                rec, "appointment.cancel", {"v": 1, "id": "a-3", "code": "AP-8"}
            )
            assert removed == {"v": 1, "id": "a-3", "ok": True, "data": {"code": "AP-8"}}
            assert "AP-8" not in hall.state.appointments
            gone = await command(rec, "appointment.cancel", {"v": 1, "id": "a-4", "code": "AP-8"})
            assert gone["error"]["code"] == 404

            stats = sync.stats()
            assert stats["commands_accepted"] == 6 and stats["commands_refused"] == 4
            await rec.until(
                lambda r: any(
                    e["type"] == "appointment.cancelled" for e in r.events(f"{BASE}/events")
                )
            )
    CONTRACT.check_all([m for m in rec.snapshot() if m.topic.startswith(BASE)])
    for m in rec.on("app/replies/42"):
        assert CONTRACT.validator("#/components/schemas/Reply").is_valid(m.json())


async def test_a_repeated_command_id_is_answered_again_but_never_run_twice_even_across_restarts(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    db = tmp_path / "hall.db"
    config = mqtt_config(broker.port)
    take = {"v": 1, "id": "same-1", "service": "A"}
    with recording(broker.port, [f"{BASE}/cmd/+/reply"]) as rec:
        async with running(db, config, clock) as (hall, sync):
            await until(lambda: sync.stats()["connected"])
            first = await command(rec, "ticket.remote", take)
            seq = hall.store.last_seq()
            assert await command(rec, "ticket.remote", take) == first
            # Same id, different payload: still the first reply (the id names the command).
            assert await command(rec, "ticket.remote", {**take, "service": "B"}) == first
            assert hall.store.last_seq() == seq and sync.stats()["commands_repeated"] == 2
            second = await command(rec, "ticket.remote", {**take, "id": "same-2"})
            assert second["data"]["number"] == "A002"
        # The daemon died after running same-2 but before recording its reply: the intent
        # row is there without a reply (what a kill -9 at that moment leaves).
        probe = make_store_engine(db)
        with probe.begin() as conn:
            conn.execute(
                update(commands_table).where(commands_table.c.id == "same-2").values(reply=None)
            )
        probe.dispose()
        async with running(db, config, clock) as (hall, sync):
            await until(lambda: sync.stats()["connected"])
            assert await command(rec, "ticket.remote", take) == first
            redo = await command(rec, "ticket.remote", {**take, "id": "same-2"})
            assert (
                redo["data"]["number"] == "A002"
                and redo["data"]["token"] == second["data"]["token"]
            )
            assert sorted(hall.state.tickets) == ["A001", "A002"]
            # After 24 hours the id may be used again (a new hall day by then).
            clock.advance(25 * 3600)
            later = await command(rec, "ticket.remote", take)
            assert later["ok"] and later["data"]["token"] != first["data"]["token"]
    CONTRACT.check_all(rec.snapshot())


def make_store_engine(db: Path) -> Any:
    from sqlalchemy import create_engine

    return create_engine(f"sqlite:///{db}")


async def test_after_a_broker_restart_it_resubscribes_republishes_and_says_online_again(
    broker: Broker, tmp_path: Path
) -> None:
    clock = Clock(T0)
    topics = [f"{BASE}/status", f"{BASE}/cmd/+/reply", f"{BASE}/events", f"{BASE}/queues/A"]
    # A persistent session: what the daemon publishes while we reconnect waits for us, in order.
    with recording(broker.port, topics, client_id="backend", persistent=True) as rec:
        async with running(tmp_path / "hall.db", mqtt_config(broker.port), clock) as (hall, sync):
            await rec.until(lambda r: r.status() == "online")
            await hall.submit(c.TakeTicket(clock(), "A", token(1)))
            broker.stop()
            await until(lambda: not sync.stats()["connected"], what="the drop noticed")
            await hall.submit(c.TakeTicket(clock(), "A", token(2)))
            assert sync.stats()["outbox_depth"] >= 1
            onlines = len([m for m in rec.on(f"{BASE}/status") if m.json()["state"] == "online"])
            broker.start()
            await rec.until(
                lambda r: (
                    len([m for m in r.on(f"{BASE}/status") if m.json()["state"] == "online"])
                    > onlines
                ),
                timeout=15,
                what="online again",
            )
            # The retained state was republished before `online`; the subscription is back.
            order = [m.topic for m in rec.snapshot()]
            online_at = len(order) - 1 - order[::-1].index(f"{BASE}/status")
            republished = [m for m in rec.snapshot()[:online_at] if m.topic == f"{BASE}/queues/A"]
            assert republished and republished[-1].json()["waiting"] == 2
            reply = await command(rec, "ticket.remote", {"v": 1, "id": "after", "service": "A"})
            assert reply["data"]["number"] == "A003"
            await until(lambda: sync.stats()["outbox_depth"] == 0)
            assert sync.stats()["reconnects"] >= 1
            seqs = [e["seq"] for e in rec.events(f"{BASE}/events")]
            assert sorted(set(seqs)) == list(range(min(seqs), hall.store.last_seq() + 1))
    CONTRACT.check_all(rec.snapshot())


async def test_falls_back_to_mqtt_311_for_a_broker_that_only_speaks_it(
    broker: Broker, tmp_path: Path
) -> None:
    proxy = TcpProxy(broker.port, mqtt311_only=True)
    try:
        with recording(broker.port, [f"{BASE}/#"]) as rec:
            async with running(tmp_path / "hall.db", mqtt_config(proxy.port)) as (hall, sync):
                await rec.until(lambda r: r.status() == "online")
                assert proxy.rejected_v5 >= 1 and sync.stats()["protocol"] == "3.1.1"
                await hall.submit(c.TakeTicket(hall.now(), "A", token(1)))
                reply = await command(rec, "ticket.remote", {"v": 1, "id": "x", "service": "C"})
                assert reply["ok"]
                await rec.until(lambda r: len(r.events(f"{BASE}/events")) == hall.store.last_seq())
            await rec.until(lambda r: r.status() == "stopped")
            CONTRACT.check_all(rec.snapshot())
    finally:
        proxy.close()


BAD = [
    ("ticket.remote", b'{"v":1,"id":"b-1","service":', 400, "bad-json"),
    ("ticket.remote", b'{"v":1,"id":"b-2","service":"\xc0"}', 400, "bad-encoding"),
    ("ticket.remote", {"v": 1, "id": "b-3"}, 400, "missing-field"),
    ("ticket.remote", {"id": "b-4", "service": "A"}, 400, "missing-field"),
    ("ticket.remote", {"v": 1, "id": "b-5", "service": 7}, 400, "bad-type"),
    ("ticket.remote", {"v": 1, "id": "b-6", "service": "Z"}, 404, "unknown-service"),
    ("ticket.remote", {"v": 1, "id": "b-7", "service": "A", "pad": "x" * 17000}, 413, "too-large"),
    ("ticket.cancel", {"v": 1, "id": "b-8", "token": "A001"}, 400, "bad-value"),
    ("ticket.cancel", {"v": 1, "id": "b-9", "token": "x" * 22}, 404, "unknown-ticket"),
    (
        "appointment.upsert",
        {"v": 1, "id": "b-10", "code": "X", "service": "A", "start": "2026-11-27T11:00+08:00",
         "end": "2026-11-27T10:00+08:00"},
        400,
        "bad-time",
    ),
    ("appointment.cancel", {"v": 1, "id": "b-11", "code": "none"}, 404, "unknown-code"),
    ("ticket.teleport", {"v": 1, "id": "b-12"}, 404, "unknown-command"),
]  # fmt: skip


async def test_bad_commands_get_clear_errors_and_change_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    with recording(broker.port, [f"{BASE}/cmd/+/reply", f"{BASE}/events"]) as rec:
        # A command left retained comes with every (re)subscription: it would run again at
        # every reconnect once its id expired. Ignored (and counted) when it comes that way.
        retained = {"v": 1, "id": "kept", "service": "A"}
        publish(rec, f"{BASE}/cmd/ticket.remote", retained, retain=True)
        async with running(tmp_path / "hall.db", mqtt_config(broker.port)) as (hall, sync):
            await until(lambda: sync.stats()["connected"])
            await until(lambda: sync.stats()["commands_unreadable"] == 1, what="ignored")
            seq = hall.store.last_seq()
            for name, payload, code, reason in BAD:
                reply = await command(rec, name, payload)
                assert not reply["ok"] and reply["error"]["code"] == code, (name, reply)
                assert reply["error"]["reason"] == reason and reply["error"]["message"]
                assert hall.store.last_seq() == seq
            # Nobody to answer: logged, counted, no reply; the next command is served.
            before = len(rec.snapshot())
            for junk in (b"", b"garbage", b"[1]", b'{"v":1,"service":"A"}', b'{"id":5}'):
                publish(rec, f"{BASE}/cmd/ticket.remote", junk)
            ok = await command(rec, "ticket.remote", {"v": 1, "id": "good", "service": "A"})
            assert ok["ok"] and len(rec.snapshot()) == before + 1 + 1  # its reply and its event
            stats = sync.stats()
            assert stats["commands_unreadable"] == 5 + 1 and stats["commands_refused"] == len(BAD)
            assert hall.store.last_seq() == seq + 1 and list(hall.state.tickets) == ["A001"]
    CONTRACT.check_all(rec.snapshot())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
fuzzed_objects = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, "1", None, True]) | json_values,
        "id": st.text(min_size=1, max_size=12) | json_values,
        "service": st.sampled_from(["A", "B", "Z", "", 1]) | json_values,
        "appointment": st.sampled_from(["AP-1", None, 3]),
        "token": st.sampled_from(["A001", "x" * 22, ""]) | json_values,
        "code": st.text(max_size=70) | json_values,
        "start": st.sampled_from(["2026-11-27T10:00+08:00", "2026-11-27T10:00", "soon"]),
        "end": st.sampled_from(["2026-11-27T11:00+08:00", "2026-11-27T09:00+08:00", 5]),
    },
).map(lambda d: json.dumps(d).encode())
fuzzed_payloads = fuzzed_objects | st.binary(max_size=120)
command_names = st.sampled_from(
    ["ticket.remote", "ticket.cancel", "appointment.upsert", "appointment.cancel", "nope"]
)


@pytest.fixture
def fuzz_daemon(broker: Broker, tmp_path: Path) -> Iterator[tuple[DaemonThread, Recorder]]:
    daemon = DaemonThread(tmp_path / "hall.db", mqtt_config(broker.port))
    with recording(broker.port, [f"{BASE}/cmd/+/reply"]) as rec:
        wait_until(lambda: daemon.stats()["connected"], what="connected")
        yield daemon, rec
    daemon.close()


probes = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=command_names, payload=fuzzed_payloads)
def test_fuzzed_commands_get_valid_replies_or_none_and_never_crash_it(
    fuzz_daemon: tuple[DaemonThread, Recorder], name: str, payload: bytes
) -> None:
    daemon, rec = fuzz_daemon
    seq = daemon.hall.store.last_seq()
    command_id = read_id(payload)
    seen = len(rec.snapshot())
    publish(rec, f"{BASE}/cmd/{name}", payload)
    # Commands run in order: once the probe's reply is in, the fuzzed one's would be too.
    probe = f"probe-{next(probes)}"
    publish(rec, f"{BASE}/cmd/probe", {"v": 1, "id": probe})  # refused at once: unknown
    wait_until(lambda: replies(rec, probe), 10, "the probe's reply")
    new = [m for m in rec.snapshot()[seen:] if m.json()["id"] != probe]
    if command_id is None:
        assert new == [], new
        return
    assert len(new) == 1 and new[0].topic == f"{BASE}/cmd/{name}/reply", new
    CONTRACT.check(new[0].topic, new[0].payload)
    reply = new[0].json()
    if not reply["ok"]:
        assert daemon.hall.store.last_seq() == seq
    assert daemon.stats()["connected"]

"""The MQTT sync's pure parts: payloads, command parsing, and the AsyncAPI document itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from hall_daemon import commands as c
from hall_daemon.config import ConfigError
from hall_daemon.engine import DAY_STARTED, Engine
from hall_daemon.events import EVENT_TYPES, StoredEvent
from hall_daemon.forecast import queue_length_forecast
from hall_daemon.model import HallSpec, OpeningWindow, ServiceSpec
from hall_daemon.waits import wait_first
from sync import payloads, start_sync
from sync.commands import (
    MAX_BYTES,
    CancelAppointment,
    CancelTicket,
    Refused,
    RemoteTicket,
    Unreadable,
    UpsertAppointment,
    parse,
    read_id,
)
from sync.service import SyncHandle, SyncOptions
from tests.mqtt_broker import CONFIG, SPEC, T0, Contract, make_hall, mqtt_config

pytestmark = pytest.mark.unit

CONTRACT = Contract()
SERVICES = frozenset(s.code for s in SPEC.services)
TOPICS = payloads.Topics("hall/demo-hall")


def schema(name: str) -> Draft7Validator:
    return CONTRACT.validator(f"#/components/schemas/{name}")


def valid(name: str, obj: Any) -> bool:
    return schema(name).is_valid(obj)


def busy_engine() -> Engine:
    """A hall mid-morning: open counters, waiting, called, served and finished tickets."""
    e = Engine(SPEC)
    at = T0
    for cmd in [
        c.TakeTicket(at, "A", "tok-a1-xxxxxxxxxxxxx"),
        c.TakeTicket(at, "A", "tok-a2-xxxxxxxxxxxxx", priority=True),
        c.TakeTicket(at, "B", "tok-b1-xxxxxxxxxxxxx", channel="remote"),
        c.TakeTicket(at, "C", "tok-c1-xxxxxxxxxxxxx"),
        c.CallNext(at, 1),
        c.Serving(at, 1),
        c.CallNext(at, 4),
        c.Done(at, 4),
        c.Rate(at, 4, 5),
        c.PauseCounter(at, 4),
        c.UpsertAppointment(at, "AP-1", "A", at, at + timedelta(hours=1)),
    ]:
        e.execute(cmd)
    return e


# -- the AsyncAPI document ------------------------------------------------------------------


def test_the_asyncapi_document_holds_valid_json_schemas_for_every_channel() -> None:
    doc = CONTRACT.doc
    assert doc["asyncapi"].startswith("3.")
    for s in doc["components"]["schemas"].values():
        Draft7Validator.check_schema(s)
    for name, _pattern, refs in CONTRACT.channels:
        assert refs, f"channel {name} has no message"
        for ref in refs:
            CONTRACT.validator(ref)  # resolves
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]


def test_every_event_type_the_engine_emits_is_described() -> None:
    described = set(CONTRACT.doc["components"]["schemas"]["Event"]["properties"]["type"]["enum"])
    assert described == set(EVENT_TYPES) | {DAY_STARTED}


def test_topics() -> None:
    assert TOPICS.queue("A") == "hall/demo-hall/queues/A"
    assert TOPICS.command_name("hall/demo-hall/cmd/ticket.remote") == "ticket.remote"
    assert TOPICS.command_name("hall/demo-hall/cmd/ticket.remote/reply") is None
    assert TOPICS.command_name("hall/other/cmd/ticket.remote") is None
    assert TOPICS.command_name("hall/demo-hall/cmd/") is None
    for topic in (
        TOPICS.status,
        TOPICS.events,
        TOPICS.outlook,
        TOPICS.reply("x"),
        TOPICS.ticket("t"),
    ):
        CONTRACT.channel_of(topic)


# -- what the daemon publishes ----------------------------------------------------------------


def test_events_are_published_without_the_ticket_token_and_match_their_schema() -> None:
    e = busy_engine()
    s = e.state
    for seq, t in enumerate(s.tickets.values(), start=1):
        data = {
            "number": t.number,
            "service": t.service,
            "priority": t.priority,
            "channel": t.channel,
            "ahead": 0,
            "forecast": queue_length_forecast(s, t.service, 0, T0),
            "token": t.token,
        }
        ev = StoredEvent(seq, str(uuid4()), "ticket.issued", T0, data)
        obj = json.loads(payloads.event(ev))
        assert "token" not in obj["data"] and obj["data"]["number"] == t.number
        assert valid("Event", obj)
        # The schema itself refuses a token, so a regression could not slip through.
        assert not valid("Event", {**obj, "data": {**obj["data"], "token": t.token}})


def test_every_event_of_a_busy_engine_matches_the_schema() -> None:
    e = Engine(SPEC)
    at = T0
    out = []
    script = [
        c.OpenCounter(at, 1),
        c.TakeTicket(at, "A", "t" * 22),
        c.TakeTicket(at, "A", "u" * 22),
        c.CallNext(at, 1),
        c.Recall(at, 1),
        c.Serving(at, 1),
        c.Transfer(at, 1, "B"),
        c.CallNext(at, 1),
        c.Suspend(at, 1),
        c.Resume(at, 1),
        c.NoShow(at, 1),
        c.OpenCounter(at, 3),
        c.CallNext(at, 3),
        c.Done(at, 3),
        c.Rate(at, 3, 4),
        c.TakeTicket(at, "C", "v" * 22),
        c.Cancel(at, "v" * 22, "remote"),
        c.PauseCounter(at, 3),
        c.CloseCounter(at, 3),
        c.ReportDevice(at, "kp-1", "bus1", "keypad", "fault", "no answer"),
        c.ReportDevice(at, "kp-1", "bus1", "keypad", "online"),
        c.ReportDevice(at, "kp-1", "bus1", "keypad", "offline"),
        c.UpsertAppointment(at, "AP-9", "A", at, at + timedelta(minutes=30)),
        c.CancelAppointment(at, "AP-9"),
        c.TakeTicket(at, "A", "x" * 22, channel="counter"),
        c.MoveTicket(at, "x" * 22, "B"),  # an admin's move: counter null
        c.RequestReprint(at, "x" * 22),
        c.SetNotice(at, "今日系统维护 System maintenance today"),
        c.OpenCounter(at, 3),
        c.CallNext(at, 3),
        c.ReplayCall(at, counter=3),
        c.TakeTicket(at + timedelta(days=1), "A", "w" * 22),  # a new hall day first
    ]
    for cmd in script:
        out.extend(e.execute(cmd))
    types = set()
    for seq, ev in enumerate(out, start=1):
        stored = StoredEvent(seq, str(uuid4()), ev.type, ev.at, ev.data)
        CONTRACT.check(TOPICS.events, payloads.event(stored))
        types.add(ev.type)
    assert types == set(EVENT_TYPES) | {DAY_STARTED}


def test_retained_payloads_match_their_schemas() -> None:
    e = busy_engine()
    s = e.state
    for code in s.services:
        CONTRACT.check(
            TOPICS.queue(code), payloads.queue_state(s, queue_length_forecast, code, T0, T0)
        )
    for cid in s.counters:
        CONTRACT.check(TOPICS.counter(cid), payloads.counter_state(s, cid))
    states = set()
    for t in s.tickets.values():
        body = payloads.ticket_state(s, queue_length_forecast, t, T0)
        CONTRACT.check(TOPICS.ticket(t.token), body)
        obj = json.loads(body)
        states.add(obj["state"])
        assert (obj["forecast"] is None) == (t.state != "waiting")
        assert ("counter" in obj) == (t.counter is not None)
    assert {"waiting", "serving", "done"} <= states
    CONTRACT.check(TOPICS.ticket("x" * 22), b"")  # clearing is allowed on ticket topics
    with pytest.raises(AssertionError):
        CONTRACT.check(TOPICS.queue("A"), b"")
    for state in ("online", "offline", "stopped"):
        CONTRACT.check(TOPICS.status, payloads.status(state, T0, 3))
    body = payloads.outlook_placeholder(s, queue_length_forecast, T0)
    CONTRACT.check(TOPICS.outlook, payloads.outlook(body, T0))
    finished = payloads.ticket_finished("A001", "A", "cancelled", None)
    CONTRACT.check(TOPICS.ticket("y" * 22), finished)


def test_queue_state_agrees_with_the_hall_view() -> None:
    e = busy_engine()
    s = e.state
    obj = json.loads(payloads.queue_state(s, queue_length_forecast, "A", T0, T0))
    assert obj["waiting"] == s.waiting("A") == 1
    assert obj["serving"] == ["A002"]  # the priority ticket went first
    assert obj["open_counters"] == [1]
    assert obj["forecast"] == queue_length_forecast(s, "A", 1, T0)
    assert obj["name"] == "企业开办"


def test_the_outlook_placeholder_covers_open_hours_and_says_what_it_is() -> None:
    hours = (
        OpeningWindow(time(8, 30), time(12), frozenset({1, 2, 3, 4, 5})),
        OpeningWindow(time(13, 30), time(17, 30), frozenset({1, 2, 3, 4, 5})),
        OpeningWindow(time(9), time(12), frozenset({6})),
    )
    spec = HallSpec(
        services=(
            ServiceSpec("A", "企业开办", "A", 1, hours=hours),
            ServiceSpec("N", "24h", "N", 2),
        ),
        counters=SPEC.counters[:1],
    )
    e = Engine(spec)
    body = payloads.outlook_placeholder(e.state, queue_length_forecast, T0)  # Friday 09:00
    assert body["method"] == "flat-now"
    days = body["days"]
    assert [d["date"] for d in days] == [
        (T0 + timedelta(days=i)).date().isoformat() for i in range(7)
    ]

    def open_hours(day: dict[str, Any], code: str) -> list[int]:
        return [h["hour"] for h in day["hours"] if any(x["service"] == code for x in h["services"])]

    assert open_hours(days[0], "A") == [9, 10, 11, 13, 14, 15, 16, 17]  # from now on, Friday
    assert open_hours(days[1], "A") == [9, 10, 11]  # Saturday morning
    assert open_hours(days[2], "A") == []  # Sunday
    assert open_hours(days[3], "A") == [8, 9, 10, 11, 13, 14, 15, 16, 17]
    assert open_hours(days[2], "N") == list(range(24))
    cell = days[0]["hours"][0]["services"][0]
    assert cell["crowd"] is None
    assert cell["forecast"] == queue_length_forecast(e.state, "A", 0, T0)


def test_reconnect_backoff_is_capped_exponential_with_jitter(tmp_path: Path) -> None:
    handle = SyncHandle(make_hall(tmp_path / "hall.db"), mqtt_config(1883), SyncOptions())
    backoff = handle.conn._backoff
    ceilings, delays = [], []
    for _ in range(11):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings[:5] == [0.5, 1.0, 2.0, 4.0, 8.0] and ceilings[-1] == 30.0  # capped
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))  # jittered
    assert delays[0] >= 0.25 and delays[-1] >= 15.0


# -- commands ---------------------------------------------------------------------------------


def cmd(**fields: Any) -> bytes:
    return json.dumps({"v": 1, "id": "c-1", **fields}).encode()


GOOD = [
    ("ticket.remote", cmd(service="A"), RemoteTicket("c-1", "A", None)),
    ("ticket.remote", cmd(service="B", appointment="AP-1"), RemoteTicket("c-1", "B", "AP-1")),
    (
        "ticket.cancel",
        cmd(token="abcdefghij_-KLMNOPQRS"),
        CancelTicket("c-1", "abcdefghij_-KLMNOPQRS"),
    ),
    (
        "appointment.upsert",
        cmd(
            code="AP-2",
            service="C",
            start="2026-11-27T10:00:00+08:00",
            end="2026-11-27T10:30+08:00",
        ),
        UpsertAppointment(
            "c-1",
            "AP-2",
            "C",
            datetime.fromisoformat("2026-11-27T10:00:00+08:00"),
            datetime.fromisoformat("2026-11-27T10:30:00+08:00"),
        ),
    ),
    ("appointment.cancel", cmd(code="AP-2"), CancelAppointment("c-1", "AP-2")),
]


@pytest.mark.parametrize(("name", "payload", "expected"), GOOD)
def test_good_commands_parse(name: str, payload: bytes, expected: object) -> None:
    assert parse(name, payload, SERVICES) == expected
    CONTRACT.check(f"hall/demo-hall/cmd/{name}", payload)


BAD = [
    ("ticket.remote", b'{"v":1,"id":"c-1","service":', 400, "bad-json"),
    ("ticket.remote", b'{"id":"c-1","v":1,"service":"A"', 400, "bad-json"),
    ("ticket.remote", b'{"v":1,"id":"c-1","service":"\xff\xfe"}', 400, "bad-encoding"),
    ("ticket.remote", cmd(), 400, "missing-field"),
    ("ticket.remote", b'{"id":"c-1","service":"A"}', 400, "missing-field"),
    ("ticket.remote", cmd(v=2, service="A"), 400, "bad-version"),
    ("ticket.remote", cmd(v=True, service="A"), 400, "bad-version"),
    ("ticket.remote", cmd(service=1), 400, "bad-type"),
    ("ticket.remote", cmd(service=None), 400, "bad-type"),
    ("ticket.remote", cmd(service=""), 400, "bad-value"),
    ("ticket.remote", cmd(service="Z"), 404, "unknown-service"),
    ("ticket.remote", cmd(service="A", appointment=5), 400, "bad-type"),
    ("ticket.remote", cmd(service="A", pad="x" * MAX_BYTES), 413, "too-large"),
    ("ticket.cancel", cmd(token="A001"), 400, "bad-value"),
    ("ticket.cancel", cmd(token=["x"]), 400, "bad-type"),
    (
        "appointment.upsert",
        cmd(code="X", service="A", start="tomorrow", end="2026-11-27T10:00+08:00"),
        400,
        "bad-time",
    ),
    (
        "appointment.upsert",
        cmd(code="X", service="A", start="2026-11-27T10:00", end="2026-11-27T11:00"),
        400,
        "bad-time",
    ),
    (
        "appointment.upsert",
        cmd(code="X", service="A", start="2026-11-27T11:00+08:00", end="2026-11-27T10:00+08:00"),
        400,
        "bad-time",
    ),
    (
        "appointment.upsert",
        cmd(code="X", service="A", start="2026-11-27T10:00+08:00"),
        400,
        "missing-field",
    ),
    ("appointment.cancel", cmd(code="x" * 65), 400, "bad-value"),
    ("ticket.teleport", cmd(service="A"), 404, "unknown-command"),
]


@pytest.mark.parametrize(("name", "payload", "code", "reason"), BAD)
def test_bad_commands_are_refused_with_a_clear_error(
    name: str, payload: bytes, code: int, reason: str
) -> None:
    with pytest.raises(Refused) as err:
        parse(name, payload, SERVICES)
    assert (err.value.code, err.value.reason, err.value.id) == (code, reason, "c-1")
    reply = json.loads(err.value.reply())
    assert valid("Reply", reply) and reply["error"]["message"]


@pytest.mark.parametrize(
    "payload",
    [
        *(b"", b"not json", b"[1,2]", b'"c-1"', b"{}", b'{"id":5,"v":1}', b'{"id":"","v":1}'),
        *(b"\xff" * 100, json.dumps({"v": 1, "id": "x" * 129}).encode()),
        b'{"id":"a\\u0000b","v":1}',
    ],
)
def test_a_payload_without_a_readable_id_gets_no_reply(payload: bytes) -> None:
    with pytest.raises(Unreadable):
        parse("ticket.remote", payload, SERVICES)


def test_the_id_of_broken_json_is_still_found_to_address_the_error() -> None:
    assert read_id(b'{"v":1, "id": "abc-\\"1\\"", "service": }') == 'abc-"1"'
    assert read_id(b'{"service": "A", "id":"q"') == "q"
    assert read_id(b'{"id": 7}') is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
field_names = st.sampled_from(
    ["v", "id", "service", "appointment", "token", "code", "start", "end"]
)
commands = st.dictionaries(
    field_names, json_values | st.sampled_from(["A", "B", "Z", 1, "c-1"]), max_size=8
)
names = st.sampled_from(
    ["ticket.remote", "ticket.cancel", "appointment.upsert", "appointment.cancel", "x"]
)


@settings(max_examples=300, deadline=None)
@given(names, commands)
def test_fuzzed_command_objects_are_accepted_only_if_the_schema_accepts_them(
    name: str, obj: dict[str, Any]
) -> None:
    payload = json.dumps(obj).encode()
    try:
        request = parse(name, payload, SERVICES)
    except Unreadable:
        assert not (
            isinstance(obj.get("id"), str) and 0 < len(obj["id"]) <= 128 and obj["id"].isprintable()
        )
        return
    except Refused as exc:
        assert valid("Reply", json.loads(exc.reply()))
        return
    ref = {
        "ticket.remote": "TicketRemoteCommand",
        "ticket.cancel": "TicketCancelCommand",
        "appointment.upsert": "AppointmentUpsertCommand",
        "appointment.cancel": "AppointmentCancelCommand",
    }[name]
    assert valid(ref, obj), (name, obj)
    assert request.id == obj["id"]


@settings(max_examples=300, deadline=None)
@given(names, st.binary(max_size=300))
def test_fuzzed_bytes_never_crash_the_parser(name: str, payload: bytes) -> None:
    with contextlib.suppress(Unreadable, Refused):
        parse(name, payload, SERVICES)


async def test_start_sync_refuses_an_unreadable_password_and_does_nothing_when_disabled(
    tmp_path: Path,
) -> None:
    hall = make_hall(tmp_path / "hall.db")
    await hall.start()
    try:
        missing = mqtt_config(1, username="demo-hall", password_file=tmp_path / "nope")
        with pytest.raises(ConfigError, match="password_file: cannot read"):
            await start_sync(hall, missing)
        off = CONFIG.model_copy(
            update={"mqtt": CONFIG.mqtt.model_copy(update={"enabled": False, "host": None})}
        )
        handle = await start_sync(hall, off)
        assert handle.stats() == {"enabled": False}
        await handle.stop()
    finally:
        await hall.stop()


@pytest.mark.parametrize("steps", range(8))
async def test_a_stop_cancels_a_loop_whose_connection_just_closed(steps: int) -> None:
    """The outbox and live-state loops wait with `wait_first`, and when the connection ends
    they go back to waiting for a new one, with no timeout. A stop that cancels them a few
    loop steps after the connection closed must end them, at whichever step it lands (the
    old wait swallowed a cancel that landed while it tidied up, and the stop hung)."""
    wake = asyncio.Event()
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready = asyncio.Event()  # a new connection: never, here

    async def loop() -> None:
        while True:
            await wait_first(wake, closed, timeout=30)
            if closed.done():
                await ready.wait()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    closed.set_result(None)
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done and task.cancelled()

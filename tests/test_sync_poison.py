"""What hostile MQTT input meets before the hall: the depth check, the id reader, the rule
for response topics, the command processor's own failures, the command queue's bounds, the
restart pauses and the throttled log."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hall_daemon.quietlog import OncePer
from sync import SyncOptions, payloads
from sync.commands import MAX_DEPTH, CommandProcessor, Refused, parse, read_id, too_deep
from sync.service import SyncHandle, restart_backoff
from tests.mqtt_broker import CONFIG, SPEC, T0, Clock, make_hall

pytestmark = pytest.mark.unit

SERVICES = frozenset(s.code for s in SPEC.services)
TOPICS = payloads.Topics("hall/demo-hall")


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ ab\n', max_size=8)
json_values = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=30,
)


@given(json_values, st.integers(0, 6))
def test_the_depth_check_agrees_with_the_parsed_value(value: Any, limit: int) -> None:
    payload = json.dumps(value).encode()
    assert too_deep(payload, limit) == (depth(value) > limit)


@pytest.mark.parametrize(
    ("payload", "deep"),
    [
        (b"[" * 100_000 + b"]" * 100_000, True),
        (b"[" * 100_000, True),  # never closed
        (b'{"id":"x","service":' + b"[" * (MAX_DEPTH + 1), True),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, False),
        (b'{"id":"x","v":1,"service":"' + b"[" * 100_000 + b'"}', False),  # inside a string
        (b'{"s":"\\"' + b"[" * 100 + b'"}', False),  # after an escaped quote, still a string
        (b'{"s":"\\\\"' + b"[" * 100, True),  # an escaped backslash ends the string
        (b"]" * 100 + b"[" * 10, False),  # broken, and not deep
    ],
)
def test_the_depth_check_counts_only_brackets_outside_strings(payload: bytes, deep: bool) -> None:
    assert too_deep(payload) is deep


def test_a_deep_payload_with_an_id_is_refused_before_it_is_parsed() -> None:
    payload = b'{"v":1,"id":"deep","service":"A","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert read_id(payload) == "deep"
    with pytest.raises(Refused) as refused:
        parse("ticket.remote", payload, SERVICES)
    assert (refused.value.code, refused.value.reason) == (400, "too-deep")
    assert refused.value.id == "deep"


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"{" * 100_000,
        b'{"x":' * 50_000,
        b'[{"id":"inner"}' + b"[" * 10_000,
        b"\xff" * 300_000,
    ],
)
def test_reading_the_id_of_a_poison_payload_never_raises(payload: bytes) -> None:
    assert read_id(payload) in (None, "inner")


@pytest.mark.parametrize(
    "topic",
    [
        "app/replies/123",
        "backend/hall-1/replies",
        "hall/other-hall/replies/7",
        "app/应用/回复",
        "app/commands/x",  # `commands` is not `cmd`
        "a" * 256,
    ],
)
def test_response_topics_the_contract_allows(topic: str) -> None:
    assert TOPICS.reply_to("ticket.remote", topic) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "hall/demo-hall",
        "hall/demo-hall/queues/A",
        "hall/demo-hall/status",
        "hall/demo-hall/cmd/ticket.remote/reply",
        "hall/demo-hall/cmd/ticket.remote/reply/x",
        "hall/other-hall/cmd/ticket.remote",
        "cmd",
        "backend/cmd/x",
        "x/cmd",
        "#",
        "a/+/b",
        "a/#",
        "$SYS/x",
        "$share/g/x",
        "app/\x00x",
        "app/\nx",
        "app/\x7fx",
        "app/\ud800",
        "",
        "a" * 257,
        "回" * 86,  # 258 bytes of UTF-8
        None,
        b"app/replies",
        17,
    ],
)
def test_response_topics_the_contract_forbids_fall_back_to_the_reply_topic(topic: object) -> None:
    assert TOPICS.reply_to("ticket.remote", topic) == "hall/demo-hall/cmd/ticket.remote/reply"


async def test_a_command_whose_handling_fails_gets_its_own_500_reply_and_the_next_runs(
    tmp_path: Path,
) -> None:
    failing = True

    def token() -> str:
        if failing:
            raise ValueError("no token today")
        return "t" * 22

    hall = make_hall(tmp_path / "hall.db", Clock(T0))
    await hall.start()
    try:
        processor = CommandProcessor(hall, token=token)
        await hall.io(processor.dedupe.create)
        reply = await processor.handle("ticket.remote", b'{"v":1,"id":"r-1","service":"A"}')
        assert reply is not None
        answer = json.loads(reply)
        assert answer["id"] == "r-1" and answer["ok"] is False
        assert answer["error"]["code"] == 500 and answer["error"]["reason"] == "internal"
        assert processor.stats.failed == 1 and hall.state.tickets == {}
        failing = False
        # Not recorded as final: the same id again runs (once).
        again = await processor.handle("ticket.remote", b'{"v":1,"id":"r-1","service":"A"}')
        assert again is not None and json.loads(again)["ok"] is True
        assert list(hall.state.tickets) == ["A001"]
    finally:
        await hall.stop()


async def test_the_command_queue_is_bounded_in_messages_and_bytes(tmp_path: Path) -> None:
    hall = make_hall(tmp_path / "hall.db")
    disabled = CONFIG.model_copy(update={"mqtt": CONFIG.mqtt.model_copy(update={"enabled": False})})
    handle = SyncHandle(hall, disabled, SyncOptions(command_queue=5, command_queue_bytes=1000))
    topic = "hall/demo-hall/cmd/ticket.remote"
    for _ in range(4):
        handle._on_message(None, (topic, b"x" * 300, False, None))  # type: ignore[arg-type]
    assert handle._commands.qsize() == 3 and handle._dropped_commands == 1
    for _ in range(5):
        handle._on_message(None, (topic, b"x", False, None))  # type: ignore[arg-type]
    assert handle._commands.qsize() == 5 and handle._dropped_commands == 4


def test_restart_pauses_double_while_failing_and_reset_after_a_healthy_run() -> None:
    pauses = restart_backoff(healthy_s=60.0)
    for ceiling in [0.5, 1, 2, 4, 8, 16, 30, 30]:
        assert ceiling / 2 <= pauses.next_delay(ran_s=0.01) <= ceiling
    assert 0.25 <= pauses.next_delay(ran_s=61.0) <= 0.5
    assert 0.5 <= pauses.next_delay(ran_s=0.01) <= 1.0


def test_a_flood_of_one_kind_of_line_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    quiet = OncePer(logging.getLogger("test.quiet"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.quiet"):
        written = [quiet.log(logging.WARNING, "junk", "junk %d", n) for n in range(1000)]
        assert quiet.log(logging.WARNING, "other", "other")
        now[0] = 61.0
        assert quiet.log(logging.WARNING, "junk", "junk %d", 1000)
    assert written.count(True) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "junk 0",
        "other",
        "junk 1000 (and 999 more like it in the last 61 s)",
    ]

"""The serial line as a hostile or broken device uses it, against the real daemon process.

A bad frame is counted and skipped, the log gets at most one line per kind per minute (not
one per frame), memory stays bounded, and every good request in between gets its answer.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import bus68
from drivers.bus68 import Frame, Function, Key
from hall_daemon.quietlog import OncePer
from tests.edge_harness import EdgeHall, key_frame, line

HELLO_ID = "kiosk-1"
RSS_GROWTH_KB = 20 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
def test_one_log_line_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    quiet = OncePer(logging.getLogger("edge"), interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, "edge"):
        for n in range(1000):
            clock.now = n * 0.1
            quiet.info("too_long", "dropped a line: %s", "too_long")
            quiet.info("bad_utf8", "dropped a line: %s", "bad_utf8")
    assert [r.getMessage() for r in caplog.records] == [
        "dropped a line: too_long",
        "dropped a line: bad_utf8",
        "dropped a line: too_long (and 599 more like it in the last 60 s)",
        "dropped a line: bad_utf8 (and 599 more like it in the last 60 s)",
    ]


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeHall]:
    hall = EdgeHall(tmp_path).start()
    try:
        yield hall
    finally:
        hall.stop()


def garbage_lines(rng: random.Random, n: int) -> bytes:
    """Lines of random bytes: NULs, invalid UTF-8, stray CRs, bad checksums."""
    out = bytearray()
    for _ in range(n):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
        out += body.replace(b"\n", b"") + rng.choice([b"\n", b"\r\n", b"*00\n", b"\0\n"])
    return bytes(out)


def answered_ids(text: str) -> set[str]:
    return {r.rsplit(" #", 1)[1] for r in text.splitlines() if r.startswith(("TICKET", "ERR"))}


@pytest.mark.service
def test_a_garbage_dispenser_is_counted_not_logged_and_pings_still_answer(
    edge: EdgeHall,
) -> None:
    wire = edge.dispenser
    wire.send(line(f"HELLO {HELLO_ID} dispenser 1.0 #1"))
    assert wire.wait_for(b"OK #1\n")
    rss_before = edge.rss_kb()
    log_before = edge.log_bytes()
    rng = random.Random(17)
    pings = 0
    for round_ in range(20):
        wire.send(b"\xff" * 200_000)  # 4 MB in all of one endless line, no LF
        wire.send(b"\n" + garbage_lines(rng, 200))
        wire.send(b"x" * 201 + b"\n")  # one byte over
        wire.send(line(f"PING #{round_ + 10}"))
        pings += 1
    firmware = "f" * (200 - len(f"HELLO {HELLO_ID} dispenser  #2"))
    at_max = line(f"HELLO {HELLO_ID} dispenser {firmware} #2")
    assert len(at_max) == 201  # 200 bytes and the LF
    wire.send(at_max)
    wire.send(line(f"HELLO {HELLO_ID} dispenser {firmware}x #3"))
    wire.send(line("PING #99"))
    assert wire.wait_for(b"PONG #99\n", timeout=20)
    for n in range(10, 10 + pings):
        assert wire.has(f"PONG #{n}\n".encode()), n
    assert wire.has(b"OK #2\n") and not wire.has(b"#3\n")
    assert edge.healthz_s() < 1.0
    # Thousands of bad lines, a handful of log lines: one per kind.
    assert edge.log_lines(r"dropped a line") <= 3
    assert edge.log_bytes() - log_before < 4096
    assert edge.rss_kb() - rss_before < RSS_GROWTH_KB


@pytest.mark.service
def test_a_take_flood_is_braked_by_the_daily_limit_and_the_bus_still_answers(
    edge: EdgeHall,
) -> None:
    wire = edge.dispenser
    flood = b"".join(line(f"TAKE A #{n}") for n in range(1, 3001))
    log_before = edge.log_bytes()
    wire.send(flood)
    # Meanwhile a clerk presses NEXT at counter 1: acked and acted on.
    press = key_frame(1, 1, Key.NEXT)
    edge.bus.send(press)
    # Within 100 ms on an idle machine; the margin is for the two cores these tests share.
    assert edge.bus.wait_for(press, timeout=2.0), "the keypad's ack"
    assert edge.healthz_s() < 2.0
    # Every request is answered: a ticket, the daily limit, or busy (retry, nothing issued).
    wanted = {str(n) for n in range(1, 3001)}
    deadline = time.monotonic() + 60
    while (answered := answered_ids(wire.text())) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answered == wanted
    replies = wire.text().splitlines()
    assert sum(r.startswith("TICKET A") for r in replies) == 200  # the example's daily_limit
    assert all(r.startswith(("TICKET A", "ERR 429", "ERR 500 busy", "STATUS")) for r in replies)
    assert edge.counter_ticket(1) is not None
    # A refusal per request, yet a handful of log lines.
    assert edge.log_lines(r"refused") <= 3
    assert edge.log_bytes() - log_before < 64 * 1024


@pytest.mark.service
def test_a_keypad_flooding_presses_does_not_starve_its_neighbours(edge: EdgeHall) -> None:
    for n in range(1, 21):
        edge.dispenser.send(line(f"TAKE B #{n}"))
    assert edge.dispenser.wait_for(b"#20\n")
    log_before = edge.log_bytes()
    rng = random.Random(6)
    # Keypad 2 presses every key there is, and bad frames, 4,000 times, as fast as it can.
    keys = list(Key)
    frames = bytearray()
    for n in range(4000):
        frames += key_frame(2, n, rng.choice(keys))
        if n % 10 == 0:
            frames += bytes([0x68, 0x04, 0x04, 0x68, 0x02, 0x01, n & 0xFF, 0x0C, 0x00, 0x16])
            frames += os.urandom(16)
    edge.bus.send(bytes(frames))
    neighbour = key_frame(4, 1, Key.NEXT)  # counter 4 offers B first
    edge.bus.send(neighbour)
    assert edge.bus.wait_for(neighbour, timeout=2.0)
    deadline = time.monotonic() + 5.0
    while edge.counter_ticket(4) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert edge.counter_ticket(4) is not None
    assert edge.healthz_s() < 1.0
    assert edge.log_bytes() - log_before < 16 * 1024


@pytest.mark.service
def test_a_flapping_device_writes_a_few_events_not_one_per_frame(edge: EdgeHall) -> None:
    _, health = edge.daemon.get("/healthz")
    seq_before = health["seq"]
    # Evaluator 0x21 says fault, online, fault, ... 250 times (each seq new: no retransmission).
    frames = b"".join(
        bus68.encode(Frame(0x21, Function.STATUS, bytes([n, n & 1]))) for n in range(250)
    )
    edge.bus.send(frames)
    last = bus68.encode(Frame(0x21, Function.STATUS, bytes([250, 0])))
    assert edge.bus.wait_for(frames[-11:], timeout=2.0)
    time.sleep(0.5)
    edge.bus.send(last)  # and is online in the end
    time.sleep(2.5)
    _, health = edge.daemon.get("/healthz")
    assert health["seq"] - seq_before <= 6
    assert edge.log_lines(r"evaluator .* is (fault|online)") <= 4


@pytest.mark.service
def test_guessing_check_in_codes_at_the_dispenser_is_braked(edge: EdgeHall) -> None:
    wire = edge.dispenser
    wire.send(b"".join(line(f"CHECKIN {n:06d} #{n + 1}") for n in range(200)))
    assert wire.wait_for(b" #200\n", timeout=10)
    replies = wire.text().splitlines()
    assert sum("ERR 404 no-appointment-now" in r for r in replies) == 5
    assert sum("ERR 429 too-many-codes" in r for r in replies) == 195
    assert edge.log_lines(r"refused|wrong check-in") <= 3


@pytest.mark.service
def test_extreme_field_values_get_their_refusal_and_the_next_request_its_ticket(
    edge: EdgeHall,
) -> None:
    wire = edge.dispenser
    hostile = [
        "ISSUED A 𝟘𝟙𝟚",  # digits, but not ASCII ones
        "ISSUED A " + "9" * 180,
        "ISSUED A A000",
        "ISSUED A -1",
        "ISSUED B A001",  # another service's prefix
        "TAKE Ａ",  # a full-width A
        "TAKE A URGENT",
        "CHECKIN " + "c" * 180,
        "PING #0",
        "PING #1000000",
        "PING #007",
    ]
    for n, request in enumerate(hostile, start=1):
        wire.send(line(f"{request} #{n}" if "#" not in request else request))
    wire.send(line("TAKE A #99"))
    assert wire.wait_for(b" #99\n")
    replies = {r.rsplit(" #", 1)[1]: r for r in wire.text().splitlines() if " #" in r}
    assert [replies.get(str(n), "").rsplit(" #", 1)[0] for n in range(1, 9)] == [
        "ERR 400 bad-number",
        "ERR 400 bad-number",
        "ERR 400 bad-number",
        "ERR 400 bad-number",
        "ERR 400 bad-number",
        "ERR 404 unknown-service",
        "ERR 400 bad-flag",
        "ERR 404 no-appointment-now",
    ]
    assert wire.text().count("ERR 400 bad-request-id") == 3
    assert replies["99"].startswith("TICKET A001 A 0 ")

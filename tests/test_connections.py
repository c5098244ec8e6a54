"""The web server's front door, in this process: shares per address, room made by the
silent, heads on time, accept errors paused and counted, never logged per attempt."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket

import pytest

from hall_daemon.config import WebLimits
from hall_daemon.connections import (
    FD_RESERVE,
    IDLE_GRACE_S,
    FrontDoor,
    GuardedConnection,
    Listener,
    connection_cap,
    start_web,
)
from hall_daemon.quietlog import Reporter

pytestmark = pytest.mark.unit


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def arrive(door: FrontDoor, client: str) -> tuple[GuardedConnection, Transport] | None:
    if door.refusal(client) is not None:
        return None
    conn = GuardedConnection(door, client, Inner())
    door.joined(conn)
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport


def test_the_cap_keeps_clear_of_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10**6) == soft - FD_RESERVE
    assert connection_cap(100) == min(100, soft - FD_RESERVE)


async def test_one_address_gets_its_share_and_the_silent_make_room() -> None:
    door = FrontDoor(WebLimits(connections_per_client=3), cap=4)
    first = [arrive(door, "10.0.0.1") for _ in range(4)]
    assert [f is not None for f in first] == [True, True, True, False]
    assert door.counts.refused_per_client == 1
    talker = arrive(door, "10.0.0.2")
    assert talker is not None
    talker[0].data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # Full: a newcomer closes the oldest connection that has said nothing yet.
    newcomer = arrive(door, "10.0.0.3")
    assert newcomer is not None and door.counts.made_room == 1
    oldest = first[0]
    assert oldest is not None and oldest[1].closed
    assert oldest[1].written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert len(door.held) == 4 and door.per_client["10.0.0.1"] == 2
    oldest[0].connection_lost(None)  # the close arrives later: counted once only
    assert door.per_client["10.0.0.1"] == 2
    for conn, _ in [f for f in first if f is not None][1:]:
        conn.connection_lost(None)
    assert "10.0.0.1" not in door.per_client
    assert not talker[1].closed


async def test_a_head_split_anywhere_stops_the_clock_and_a_late_one_gets_408() -> None:
    door = FrontDoor(WebLimits(head_timeout_s=0.05), cap=10)
    on_time = arrive(door, "10.0.0.1")
    late = arrive(door, "10.0.0.2")
    assert on_time is not None and late is not None
    for part in (b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"):
        on_time[0].data_received(part)
    late[0].data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await asyncio.sleep(0.1)
    assert not on_time[1].closed and on_time[0].inner.data.endswith(b"\r\n\r\n")  # type: ignore[attr-defined]
    assert late[1].closed and late[1].written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert door.counts.head_timeouts == 1 and set(door.per_client) == {"10.0.0.1"}


async def test_accept_errors_pause_accepting_and_are_logged_once_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()

    class Exhausted(socket.socket):
        calls = 0

        def accept(self) -> tuple[socket.socket, object]:
            Exhausted.calls += 1
            raise OSError(errno.EMFILE, "Too many open files")

    sock = Exhausted(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener = Listener(loop, sock, FrontDoor(WebLimits(), cap=10), Inner)
        with caplog.at_level(logging.WARNING, logger="hall_daemon.connections"):
            for _ in range(1000):
                listener._readable()
    finally:
        sock.close()
    assert Exhausted.calls == 1000  # one attempt per wake-up, never a burst of retries
    assert listener.door.counts.accept_errors == 1000
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "EMFILE" in warnings[0], warnings


async def test_a_reporter_says_at_once_then_what_it_counted_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = Reporter(
        logging.getLogger("hall_daemon.connections"), "web: things refused", every=0.1
    )
    with caplog.at_level(logging.WARNING, logger="hall_daemon.connections"):
        for kind in ("a", "b", "a", "a"):
            reporter.count(kind)
        assert len(caplog.records) == 1
        await asyncio.sleep(0.2)
    assert [r.getMessage() for r in caplog.records] == [
        "web: things refused: 1 a (reported at most every 0.1 s)",
        "web: things refused: 2 a, 1 b (reported at most every 0.1 s)",
    ]


async def test_a_connection_closed_to_make_room_before_its_transport_hears_so_on_arrival() -> None:
    door = FrontDoor(WebLimits(), cap=1)
    assert door.refusal("10.0.0.1") is None
    early = GuardedConnection(door, "10.0.0.1", Inner())
    door.joined(early)
    assert arrive(door, "10.0.0.2") is not None and door.counts.made_room == 1
    transport = Transport()
    early.connection_made(transport)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 503 ")
    assert set(door.per_client) == {"10.0.0.2"}


async def test_the_site_serves_through_the_door_and_frees_its_port_when_stopped() -> None:
    from aiohttp import ClientSession, web

    from hall_daemon.config import WebConfig
    from tests.daemon_harness import free_port

    async def remote(request: web.Request) -> web.Response:
        return web.Response(text=request.remote or "")

    config = WebConfig(host="127.0.0.1", port=free_port())
    for _ in range(2):  # the second start binds the same port again
        app = web.Application()
        app.router.add_get("/", remote)
        runner, door = await start_web(app, config)
        try:
            async with (
                ClientSession() as session,
                session.get(f"http://127.0.0.1:{config.port}/") as r,
            ):
                assert await r.text() == "127.0.0.1"
        finally:
            await runner.cleanup()
        assert door.counts.accepted == 1 and not door.held


async def test_when_none_is_silent_a_connection_idle_between_requests_makes_room() -> None:
    door = FrontDoor(WebLimits(), cap=2)
    busy, idle = arrive(door, "10.0.0.1"), arrive(door, "10.0.0.2")
    assert busy is not None and idle is not None
    for conn, _ in (busy, idle):
        conn.data_received(b"GET / HTTP/1.1\r\n\r\n")
    door.answered(idle[0])
    assert arrive(door, "10.0.0.3") is None  # just answered: it may still be writing
    door.idle[idle[0]] -= 2 * IDLE_GRACE_S
    assert arrive(door, "10.0.0.3") is not None
    assert idle[1].closed and not busy[1].closed
    # The next request on a kept-alive connection makes it busy again.
    door.answered(busy[0])
    busy[0].data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert busy[0] not in door.idle

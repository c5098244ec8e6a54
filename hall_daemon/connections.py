"""The web server's front door: who may hold a connection, for how long, and how many.

Screens, kiosks and phones share one aiohttp server with /healthz and the admin page, so no
client may use it up. Every accepted connection is judged before aiohttp parses a byte:

- one client address holds at most `web.limits.connections_per_client` connections; the
  next is answered 503 and closed at once;
- all clients together hold at most `web.limits.connections`, and never more than the
  open-file limit less FD_RESERVE (the database, serial ports, MQTT and voice need file
  descriptors too, and pyserial's select() needs them numbered under 1024). When full, the
  oldest connection that has not yet sent a request head makes room (503), or else the one
  kept alive and idle the longest (for IDLE_GRACE_S at least), so a flood of idle
  connections cannot keep a fresh client, or systemd's health check, out;
- a request head must be complete within `web.limits.head_timeout_s` (408, closed), and a
  kept-alive connection idle for `web.limits.idle_timeout_s` is closed by aiohttp.

The accept loop is our own rather than asyncio's: asyncio logs every EMFILE of a burst
with a traceback and re-arms itself once per failed attempt. Here an accept error pauses
accepting for ACCEPT_PAUSE_S, and errors and refusals are logged once a minute with counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .quietlog import Reporter

if TYPE_CHECKING:
    from .config import WebConfig, WebLimits

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FD_RESERVE = 256  # descriptors kept for everything but web clients
MIN_CONNECTIONS = 8
ACCEPT_BATCH = 64  # connections taken per wake-up, so one flood cannot hog the loop
ACCEPT_PAUSE_S = 0.5  # after an accept error (EMFILE, ENFILE, ENOBUFS, ENOMEM)
IDLE_GRACE_S = 1.0  # kept-alive and idle this long: may be closed to make room
BACKLOG = 128
SELECT_LIMIT = 1024  # FD_SETSIZE


def _answer(status: str, text: str, extra: str = "") -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\n{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


TOO_MANY = _answer("503 Service Unavailable", "too many connections\n", "Retry-After: 5\r\n")
HEAD_TIMEOUT = _answer("408 Request Timeout", "request head not received in time\n")


def connection_cap(configured: int) -> int:
    """The total the server admits: the configured one, kept clear of the open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(min(configured, soft - FD_RESERVE), MIN_CONNECTIONS)


@dataclass
class DoorStats:
    accepted: int = 0
    refused_per_client: int = 0
    refused_full: int = 0
    made_room: int = 0  # idle connections closed for a newcomer
    head_timeouts: int = 0
    accept_errors: int = 0


class FrontDoor:
    """The connections held, per client address, and which of them could make room: the
    silent (no request head yet) and the idle (kept alive between requests)."""

    def __init__(self, limits: WebLimits, cap: int) -> None:
        self.limits = limits
        self.cap = cap
        self.held: set[GuardedConnection] = set()
        self.per_client: Counter[str] = Counter()
        self.silent: OrderedDict[GuardedConnection, None] = OrderedDict()  # oldest first
        self.idle: OrderedDict[GuardedConnection, float] = OrderedDict()  # -> idle since
        self.by_transport: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self.counts = DoorStats()
        self.refusals = Reporter(log, "web: connections refused or closed")

    def stats(self) -> dict[str, int]:
        """For /metrics: what is held now, and what was refused or closed since start."""
        return {"held": len(self.held), "cap": self.cap, **asdict(self.counts)}

    def refusal(self, client: str) -> str | None:
        """Why a new connection from `client` is refused, or None to admit it."""
        if self.per_client[client] >= self.limits.connections_per_client:
            self.counts.refused_per_client += 1
            return "over the limit of one client"
        if len(self.held) >= self.cap and not self._make_room():
            self.counts.refused_full += 1
            return "server full"
        return None

    def _make_room(self) -> bool:
        if self.silent:
            oldest, why = next(iter(self.silent)), "silent, to make room"
        elif self.idle and next(iter(self.idle.values())) <= time.monotonic() - IDLE_GRACE_S:
            oldest, why = next(iter(self.idle)), "idle, to make room"
        else:
            return False
        self.counts.made_room += 1
        self.refusals.count(why)
        oldest.close_with(TOO_MANY)
        return True

    def joined(self, conn: GuardedConnection) -> None:
        self.counts.accepted += 1
        self.held.add(conn)
        self.per_client[conn.client] += 1
        self.silent[conn] = None

    def spoke(self, conn: GuardedConnection) -> None:
        self.silent.pop(conn, None)
        self.idle.pop(conn, None)

    def answered(self, conn: GuardedConnection) -> None:
        if conn in self.held:
            self.idle[conn] = time.monotonic()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks a kept-alive connection idle once its request is handled (a WebSocket's
        lasts as long as the socket)."""
        conn = self.by_transport.get(request.transport) if request.transport else None
        try:
            return await handler(request)
        finally:
            if conn is not None:
                self.answered(conn)

    def left(self, conn: GuardedConnection) -> None:
        if conn not in self.held:
            return
        self.held.discard(conn)
        self.silent.pop(conn, None)
        self.idle.pop(conn, None)
        if conn.transport is not None:
            self.by_transport.pop(conn.transport, None)
        self.per_client[conn.client] -= 1
        if self.per_client[conn.client] <= 0:
            del self.per_client[conn.client]


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the head timeout and the door's count."""

    def __init__(self, door: FrontDoor, client: str, inner: asyncio.Protocol) -> None:
        self.door = door
        self.client = client
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._tail = b""
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_word: bytes | None = None  # closed before its transport was made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self in self.door.held:
            self.door.by_transport[transport] = self
        self.inner.connection_made(transport)
        if self._last_word is not None:
            transport.write(self._last_word)
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self.door.limits.head_timeout_s, self._head_overdue)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            self._watch_head(data)
        else:
            self.door.spoke(self)  # the next request on a kept-alive connection
        self.inner.data_received(data)

    def _watch_head(self, data: bytes) -> None:
        seen = self._tail + data
        if b"\r\n\r\n" in seen or b"\n\n" in seen:
            self._stop_timer()
            self.door.spoke(self)
        else:
            self._tail = seen[-3:]

    def _head_overdue(self) -> None:
        self._head_timer = None
        self.door.counts.head_timeouts += 1
        self.door.refusals.count("request head too slow")
        self.close_with(HEAD_TIMEOUT)

    def close_with(self, answer: bytes) -> None:
        """Answer (nothing was parsed yet, so aiohttp has written nothing) and hang up."""
        self._stop_timer()
        self.door.left(self)
        if self.transport is None:
            self._last_word = answer
        elif not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.door.left(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Listener:
    """Accepts on one listening socket for the door, pausing on errors instead of spinning."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        door: FrontDoor,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.door = door
        self.factory = factory
        self.errors = Reporter(log, "web: accept failed (accepting paused briefly each time)")
        self._connecting: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self.sock.fileno() >= 0:  # not closed by the site's stop meanwhile
            self.loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._failed(exc)
                return
            self._arrived(conn, str(address[0]))

    def _failed(self, exc: OSError) -> None:
        self.door.counts.accept_errors += 1
        self.errors.count(errno.errorcode.get(exc.errno or 0, str(exc)))
        self.loop.remove_reader(self.sock.fileno())
        self.loop.call_later(ACCEPT_PAUSE_S, self.start)

    def _arrived(self, conn: socket.socket, client: str) -> None:
        why = self.door.refusal(client)
        if why is not None:
            self.door.refusals.count(why)
            _refuse(conn)
            return
        conn.setblocking(False)
        guarded = GuardedConnection(self.door, client, self.factory())
        self.door.joined(guarded)
        task = self.loop.create_task(self._connect(conn, guarded))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket, guarded: GuardedConnection) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: guarded, conn)
        except OSError:
            self.door.left(guarded)
            conn.close()


def _refuse(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(TOO_MANY)
    conn.close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a FrontDoor."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, door: FrontDoor) -> None:
        super().__init__(runner)
        self.host, self.port = host, port
        self.door = door
        self.listeners: list[Listener] = []

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        # asyncio binds the addresses as aiohttp's TCPSite would (every address of a name,
        # IPv6 on its own) but neither listens nor serves: our listeners do, on copies of
        # its sockets (the site's stop closes both).
        self._server = await loop.create_server(
            server, self.host, self.port, backlog=BACKLOG, start_serving=False
        )
        for bound in self._server.sockets:
            sock = socket.socket(fileno=os.dup(bound.fileno()))
            sock.setblocking(False)
            sock.listen(BACKLOG)
            listener = Listener(loop, sock, self.door, server)
            self.listeners.append(listener)
            listener.start()

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        await super().stop()


def front_door(limits: WebLimits) -> FrontDoor:
    return FrontDoor(limits, connection_cap(limits.connections))


async def start_web(
    app: web.Application, config: WebConfig, door: FrontDoor | None = None
) -> tuple[web.AppRunner, FrontDoor]:
    """Serve `app` on config's host and port behind the front door (`door`: made for the
    status page and /metrics to read beforehand)."""
    limits = config.limits
    door = door or front_door(limits)
    app.middlewares.insert(0, door.middleware)  # outermost: it must see every request end
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.idle_timeout_s)
    await runner.setup()
    site = GuardedSite(runner, config.host, config.port, door)
    await site.start()
    cap = door.cap
    if cap < limits.connections:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.info("web: at most %d connections (open-file limit %d)", cap, soft)
    if cap > SELECT_LIMIT - FD_RESERVE:
        log.warning(
            "web.limits.connections %d: serial ports reopened while that many are held get "
            "file descriptors above %d, which pyserial cannot use",
            cap,
            SELECT_LIMIT,
        )
    return runner, door

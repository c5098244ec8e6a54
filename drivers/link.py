"""One serial port kept open: reads, a write queue, and reconnection with backoff.

`SerialLink` owns the pyserial object for a configured port (`/dev/tty*`, `socket://`,
`rfc2217://`, `loop://`). Bytes read go to an asyncio.Protocol-style `LinkProtocol` on the
event loop; the protocol writes through the function it is given in `connection_made`.

Threads: one reader thread per open port, doing a blocking read with a short timeout, works
the same for ptys, sockets and RFC 2217 (add_reader would need a file descriptor, which
socket:// and rfc2217:// do not expose). Opening, writing and closing run on the port's own
single-thread executor, so a slow or stuck port never blocks the event loop or another port.

When the port fails (open error, read or write error, EOF on a socket) the link closes it and
opens it again after a capped, jittered exponential backoff, logging once per outage rather
than once per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

import serial
from serial.urlhandler.protocol_socket import Serial as SocketSerial

from hall_daemon.backoff import Backoff
from hall_daemon.waits import wait_first

log = logging.getLogger(__name__)

READ_POLL_S = 0.1  # how long a read waits before looking at the stop flag again
WRITE_TIMEOUT_S = 5.0  # a port that takes no bytes for this long counts as failed
READ_CHUNK = 4096
WRITE_QUEUE = 1000
STABLE_S = 10.0  # a connection that lasted this long resets the backoff
PATH_POLL_S = 0.2  # how often a vanished device path is looked for during a backoff

Write = Callable[[bytes], None]


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class LinkProtocol(Protocol):
    """Receives a link's bytes on the event loop, like asyncio.Protocol."""

    def connection_made(self, write: Write) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


@dataclass
class LinkStats:
    connects: int = 0
    failures: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    writes_dropped: int = 0  # written while the port was down or the queue was full
    last_error: str = ""


class SerialPort(Protocol):
    """The part of a pyserial port the link uses (the stubs' SerialBase lacks in_waiting)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1, /) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class Unopened(Protocol):
    """A pyserial port made with do_not_open=True (the stubs' SerialBase lacks open)."""

    def open(self) -> None: ...


def open_port(url: str, baudrate: int) -> SerialPort:
    # A read timeout rather than timeout=0: the reader thread blocks in read() and looks at
    # its stop flag between reads.
    port = serial.serial_for_url(
        url,
        baudrate=baudrate,
        timeout=READ_POLL_S,
        write_timeout=WRITE_TIMEOUT_S,
        do_not_open=True,
    )
    open_keeping_input(cast(Unopened, port))
    return cast(SerialPort, port)


def open_keeping_input(port: Unopened) -> None:
    """Open `port` without the input flush pyserial does on open.

    A device that speaks as soon as the link is up (a dispenser sending the TAKE pressed
    while the port was closed, a ser2net server replaying its buffer on connect) would
    otherwise lose that line: the flush discards whatever arrived before it, so its request
    went unanswered whenever it won the race. A stale partial line costs nothing instead:
    the decoder drops it at the next LF.
    """
    # Every pyserial class (posix, socket://, rfc2217://, loop://) flushes through one of
    # these two names during open(); shadowed on the instance for the open only.
    names = ("reset_input_buffer", "_reset_input_buffer")
    for name in names:
        setattr(port, name, _keep_input)
    try:
        port.open()
    finally:
        for name in names:
            port.__dict__.pop(name, None)


def _keep_input() -> None:
    pass


class SerialLink:
    def __init__(
        self,
        name: str,
        url: str,
        protocol: LinkProtocol,
        *,
        baudrate: int = 9600,
        backoff: Backoff | None = None,
        opener: Callable[[str, int], SerialPort] = open_port,
    ) -> None:
        self.name = name
        self.url = url
        self.baudrate = baudrate
        self.protocol = protocol
        self.backoff = backoff or Backoff(first=0.5, cap=30.0)
        self.stats = LinkStats()
        self.history: deque[tuple[float, LinkState]] = deque(maxlen=64)
        self._opener = opener
        self._state = LinkState.STOPPED
        self._since = time.monotonic()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writes: asyncio.Queue[bytes] | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"serial-io:{name}")
        self._outage_error: str | None = None  # what was last logged for the current outage

    # -- public ------------------------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is LinkState.CONNECTED

    def stopping(self) -> bool:
        return self._wake.is_set()  # only stop() sets it

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"link:{self.name}"
            )

    async def stop(self) -> None:
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._set_state(LinkState.STOPPED)
        self._io.shutdown(wait=False)

    def write(self, data: bytes) -> None:
        """Queue bytes for the port; dropped (and counted) while it is down."""
        if self._writes is None or not self.connected:
            self.stats.writes_dropped += 1
            return
        try:
            self._writes.put_nowait(bytes(data))
        except asyncio.QueueFull:
            self.stats.writes_dropped += 1

    async def wait_for(self, state: LinkState) -> None:
        while self._state is not state:
            changed = self._changed
            await changed.wait()

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "state": self._state.value,
            "state_for_s": round(time.monotonic() - self._since, 1),
            "connects": self.stats.connects,
            "failures": self.stats.failures,
            "bytes_in": self.stats.bytes_in,
            "bytes_out": self.stats.bytes_out,
            "writes_dropped": self.stats.writes_dropped,
            "last_error": self.stats.last_error,
        }

    # -- the connection loop -------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping():
            self._set_state(LinkState.CONNECTING)
            port = await self._open(loop)
            if port is None:
                if self.stopping():
                    break
                await self._pause()
                continue
            began = loop.time()
            error = await self._serve(loop, port)
            if self.stopping():
                break
            if loop.time() - began >= STABLE_S:
                self.backoff.reset()
            self._failed(error or ConnectionError("port closed"), was_connected=True)
            await self._pause()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> SerialPort | None:
        opening = loop.run_in_executor(self._io, self._opener, self.url, self.baudrate)
        await wait_first(self._wake, opening, timeout=None)
        if not opening.done():
            # Stopping while a connect hangs: let it finish on its own thread, then close it.
            opening.add_done_callback(_close_when_opened)
            return None
        try:
            return opening.result()
        except Exception as exc:  # pyserial raises SerialException, OSError or ValueError
            self._failed(exc, was_connected=False)
            return None

    async def _pause(self) -> None:
        delay = self.backoff.next_delay()
        self._set_state(LinkState.BACKOFF)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._until_woken_or_back()

    async def _until_woken_or_back(self) -> None:
        """Wait for stop(); for a device path that is gone (USB unplugged), also for its return.

        Without this a long outage leaves the next retry up to the backoff cap (30 s) after
        the adapter is plugged back in.
        """
        path = None if "://" in self.url else self.url
        if path is None or os.path.exists(path):
            await self._wake.wait()
            return
        while not os.path.exists(path):
            await wait_first(self._wake, timeout=PATH_POLL_S)
            if self._wake.is_set():
                return

    async def _serve(self, loop: asyncio.AbstractEventLoop, port: SerialPort) -> Exception | None:
        lost: asyncio.Future[Exception | None] = loop.create_future()
        stop_reading = threading.Event()

        def end(exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(exc)

        def from_thread(exc: Exception | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(end, exc)

        reader_done = threading.Event()
        reader = threading.Thread(
            target=self._read_loop,
            args=(port, stop_reading, loop, from_thread, reader_done),
            name=f"serial-read:{self.name}",
            daemon=True,
        )
        self._writes = asyncio.Queue(WRITE_QUEUE)
        writer = loop.create_task(self._write_loop(loop, port, self._writes, end))
        self.stats.connects += 1
        self._set_state(LinkState.CONNECTED)
        reader.start()
        try:
            self.protocol.connection_made(self.write)
        except Exception:
            log.exception("port %s: protocol failed in connection_made", self.name)
        await wait_first(self._wake, lost, timeout=None)
        error = lost.result() if lost.done() else None
        self._writes = None
        stop_reading.set()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        # The reader must be out of port.read() before the port is closed under it.
        await loop.run_in_executor(None, reader_done.wait)
        # Queued on the port's executor, so it runs after any write still in progress.
        await loop.run_in_executor(self._io, _close_quietly, port)
        try:
            self.protocol.connection_lost(error)
        except Exception:
            log.exception("port %s: protocol failed in connection_lost", self.name)
        return error

    def _read_loop(
        self,
        port: SerialPort,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        finished: Callable[[Exception | None], None],
        done: threading.Event,
    ) -> None:
        error: Exception | None = None
        try:
            while not stop.is_set():
                data = port.read(1)
                if not data:
                    continue
                while len(data) < READ_CHUNK and (
                    more := _read_waiting(port, READ_CHUNK - len(data))
                ):
                    data += more
                loop.call_soon_threadsafe(self._deliver, data)
        except RuntimeError:
            pass  # the event loop closed under us: shutting down
        except Exception as exc:
            error = exc
        finally:
            done.set()
            finished(error)

    def _deliver(self, data: bytes) -> None:
        if self._writes is None:
            return  # read just before the link went down; the protocol already heard it lost
        self.stats.bytes_in += len(data)
        try:
            self.protocol.data_received(data)
        except Exception:
            # A protocol bug must not take the port down with it.
            log.exception("port %s: protocol failed on %d bytes", self.name, len(data))

    async def _write_loop(
        self,
        loop: asyncio.AbstractEventLoop,
        port: SerialPort,
        queue: asyncio.Queue[bytes],
        failed: Callable[[Exception | None], None],
    ) -> None:
        while True:
            data = await queue.get()
            while not queue.empty() and len(data) < READ_CHUNK:
                data += queue.get_nowait()
            try:
                await loop.run_in_executor(self._io, port.write, data)
            except Exception as exc:
                failed(exc)
                return
            self.stats.bytes_out += len(data)

    # -- state and logging ---------------------------------------------------------------------
    def _failed(self, exc: Exception, *, was_connected: bool) -> None:
        self.stats.failures += 1
        message = f"{type(exc).__name__}: {exc}"
        self.stats.last_error = message
        if was_connected:
            log.warning("port %s: connection lost (%s); reconnecting", self.name, message)
        elif message != self._outage_error:
            log.warning(
                "port %s: cannot open %s (%s); retrying with backoff up to %g s",
                self.name,
                self.url,
                message,
                self.backoff.cap,
            )
        else:
            log.debug("port %s: still cannot open: %s", self.name, message)
        self._outage_error = message

    def _set_state(self, state: LinkState) -> None:
        if state is self._state:
            return
        self._state = state
        self._since = time.monotonic()
        self.history.append((self._since, state))
        if state is LinkState.CONNECTED:
            if self._outage_error is not None:
                log.info("port %s: connected to %s again", self.name, self.url)
            else:
                log.info("port %s: connected to %s", self.name, self.url)
            self._outage_error = None
        elif state is LinkState.STOPPED:
            log.info("port %s: stopped", self.name)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _read_waiting(port: SerialPort, room: int) -> bytes:
    """Up to `room` bytes that are already waiting, without blocking."""
    waiting = port.in_waiting
    if not waiting:
        return b""
    if isinstance(port, SocketSerial):
        # socket:// only says whether something is waiting (in_waiting is 0 or 1): one
        # non-blocking read takes all of it, where reading 1 byte a time capped a socket
        # link at well under 1 MB/s.
        port.timeout = 0
        try:
            return port.read(room)
        finally:
            port.timeout = READ_POLL_S
    return port.read(min(waiting, room))


def _close_quietly(port: SerialPort) -> None:
    with contextlib.suppress(Exception):
        port.close()


def _close_when_opened(opening: asyncio.Future[SerialPort]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _close_quietly(opening.result())

"""What the connection attacks share (tests/test_attack_conn.py, bench/attacks/conn.py): a
daemon under a small open-file limit, idle and trickling clients, display WebSockets, and a
dispenser that speaks the moment its serial server is connected to.

Loopback only: every client binds a 127.0.0.x source address.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.daemon_harness import REPO, Daemon, free_port, write_config


class LimitedDaemon(Daemon):
    """The real daemon process, with the open-file limit systemd gives a unit by default."""

    def __init__(self, config: Path, web_port: int, nofile: int | None = 1024) -> None:
        super().__init__(config, web_port)
        self.nofile = nofile

    def start(self, timeout: float = 20.0) -> None:
        nofile = self.nofile

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hall_daemon", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
                preexec_fn=limit,
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                if self.get("/healthz")[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"daemon not healthy within {timeout} s:\n{self.log_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0


def hall_config(tmp: Path, web_port: int, dispenser_port: int | None = None) -> Path:
    """The example hall without MQTT; its dispenser behind `dispenser_port` if given."""
    replace = {r"(?m)^mqtt:\n  enabled: true": "mqtt:\n  enabled: false"}
    if dispenser_port is not None:
        replace[r"127\.0\.0\.1:7001"] = f"127.0.0.1:{dispenser_port}"
    return write_config(tmp, web_port=web_port, **replace)


def fresh_daemon(tmp: Path, nofile: int | None = 1024) -> LimitedDaemon:
    port = free_port()
    return LimitedDaemon(hall_config(tmp, port), port, nofile)


# -- clients ---------------------------------------------------------------------------------


def connect_from(source: str, port: int, timeout: float = 2.0) -> socket.socket:
    """A TCP connection to the daemon from loopback address `source` (127.0.0.x)."""
    assert source.startswith("127."), "loopback only"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def hold_idle(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """`count` connections that send nothing, spread over `sources`; refused ones dropped."""
    held = []
    for i in range(count):
        with contextlib.suppress(OSError):
            held.append(connect_from(sources[i % len(sources)], port))
    return held


def hold_kept_alive(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """`count` connections that each made one request and then keep it alive, saying
    nothing more; refused ones dropped."""
    held = []
    for i in range(count):
        with contextlib.suppress(OSError):
            sock = connect_from(sources[i % len(sources)], port)
            sock.sendall(b"GET /no-such-page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = sock.recv(4096)
            if answer.startswith(b"HTTP/1.1 ") and b"Connection: close" not in answer:
                held.append(sock)
            else:
                sock.close()
    return held


def still_open(sock: socket.socket) -> bool:
    """True while the daemon has neither closed the connection nor answered on it."""
    return answered_or_closed(sock, peek=True) is None


def answered_or_closed(sock: socket.socket, peek: bool = False) -> bytes | None:
    """What the daemon sent before closing (b"" if it just closed), or None if still open."""
    sock.setblocking(False)
    try:
        data = sock.recv(4096, socket.MSG_PEEK if peek else 0)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        sock.setblocking(True)
    return data


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


def timed_get(port: int, path: str = "/healthz", timeout: float = 10.0) -> tuple[int, float]:
    """A fresh client's GET: its status and how long it took."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, time.monotonic() - started


def websocket_handshake(sock: socket.socket, path: str) -> bytes:
    """Send a WebSocket upgrade for `path`; the status line the daemon answered."""
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(1024)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n", 1)[0]


# -- the dispenser ---------------------------------------------------------------------------


class EagerDispenser:
    """A serial server (ser2net) whose dispenser sends `TAKE A #n` the moment the daemon
    connects, waits for the reply, then drops the link so that the daemon connects again."""

    def __init__(self, reply_timeout: float = 3.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.replies: list[bytes | None] = []  # None: no reply within reply_timeout
        self.reply_timeout = reply_timeout
        self._stop = threading.Event()
        self._armed = threading.Event()
        self._armed.set()
        self._exchange = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, self._exchange:
                if not self._armed.is_set():
                    self._idle(conn)
                    continue
                n = len(self.replies) + 1
                conn.sendall(b"TAKE A #%d\n" % n)
                self.replies.append(self._reply(conn, b"#%d\n" % n))

    def _idle(self, conn: socket.socket) -> None:
        """Disarmed (the daemon is stopping): keep the link up and say nothing."""
        conn.settimeout(0.2)
        while not self._stop.is_set() and not self._armed.is_set():
            try:
                if not conn.recv(4096):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def arm(self) -> None:
        self._armed.set()

    def disarm(self) -> None:
        """No TAKE on the next link-ups; returns once any exchange under way is over."""
        self._armed.clear()
        with self._exchange:
            pass

    def _reply(self, conn: socket.socket, tail: bytes) -> bytes | None:
        conn.settimeout(self.reply_timeout)
        buffer = b""
        try:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return None
                buffer += chunk
                for line in buffer.split(b"\n")[:-1]:
                    if line.endswith(tail[:-1]):
                        return line + b"\n"
        except OSError:
            return None

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.replies) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)

"""A real `hall-daemon` whose serial ports are TCP servers that the test plays, byte for byte.

The daemon opens `socket://` ports as a client, as it would a ser2net serial server; here the
server is a `Wire`: what the test sends is what the dispenser or the bus sent, and what the
daemon wrote is collected for the test to read.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
import urllib.request
from pathlib import Path

from drivers import bus68
from drivers.bus68 import Frame, Function, Key
from tests.daemon_harness import Daemon, free_port, write_config


class Wire:
    """One serial line: a listening socket, the daemon's connection to it, what came back."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.conn: socket.socket | None = None
        self.received = bytearray()
        self._lock = threading.Lock()

    def accept(self, timeout: float = 20.0) -> None:
        self.server.settimeout(timeout)
        self.conn, _ = self.server.accept()
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.conn is not None
        while True:
            try:
                data = self.conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += data

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def text(self) -> str:
        with self._lock:
            return self.received.decode("utf-8", "replace")

    def has(self, data: bytes) -> bool:
        with self._lock:
            return data in self.received

    def wait_for(self, data: bytes, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has(data):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


class EdgeHall:
    """The example hall, MQTT off, its dispenser and counter bus played by the test."""

    def __init__(self, tmp: Path) -> None:
        self.dispenser = Wire()
        self.bus = Wire()
        web = free_port()
        config = write_config(
            tmp,
            web_port=web,
            **{
                r"127\.0\.0\.1:7001": f"127.0.0.1:{self.dispenser.port}",
                r"127\.0\.0\.1:7002": f"127.0.0.1:{self.bus.port}",
                r"(?m)^(mqtt:\n  enabled:) true": r"\1 false",
            },
        )
        self.metrics_token = secrets.token_urlsafe(24)
        token_file = tmp / "metrics-token"
        token_file.write_text(self.metrics_token)
        token_file.chmod(0o600)
        text = config.read_text(encoding="utf-8").replace(
            "  # metrics_token_file: /etc/hall-daemon/metrics-token",
            f"  metrics_token_file: {token_file}",
        )
        config.write_text(text, encoding="utf-8")
        self.daemon = Daemon(config, web)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of `name` over the /metrics samples that carry `labels`."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.daemon.web_port}/metrics",
            headers={"Authorization": f"Bearer {self.metrics_token}"},
        )
        with urllib.request.urlopen(request, timeout=3) as response:
            text = response.read().decode()
        total = 0.0
        for sample in text.splitlines():
            if not sample.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(sample.rsplit(" ", 1)[1])
        return total

    def start(self) -> EdgeHall:
        self.daemon.start()
        self.dispenser.accept()
        self.bus.accept()
        return self

    def stop(self) -> int:
        try:
            return self.daemon.stop()
        finally:
            self.dispenser.close()
            self.bus.close()

    def rss_kb(self) -> int:
        assert self.daemon.proc is not None
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match[1])

    def log_lines(self, pattern: str) -> int:
        return sum(1 for line in self.daemon.log_text().splitlines() if re.search(pattern, line))

    def log_bytes(self) -> int:
        return self.daemon.log.stat().st_size

    def healthz_s(self) -> float:
        """How long /healthz took, which must say ok."""
        started = time.monotonic()
        status, body = self.daemon.get("/healthz")
        assert status == 200 and body["ok"], body
        return time.monotonic() - started

    def counter_ticket(self, counter: int) -> str | None:
        _, view = self.daemon.get("/api/queues")
        return next(c["ticket"] for c in view["counters"] if c["counter"] == counter)


def key_frame(address: int, seq: int, key: Key = Key.NEXT) -> bytes:
    return bus68.encode(Frame(address, Function.KEY, bytes([seq & 0xFF, key])))


def line(text: str) -> bytes:
    return text.encode() + b"\n"

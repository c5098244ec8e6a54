"""The real daemon under a fake systemd: READY=1 once serving, WATCHDOG=1 only while healthy.

The test binds the unix datagram socket systemd would, runs the daemon with NOTIFY_SOCKET
and WATCHDOG_USEC pointing at it, then takes the SQLite write lock from another process
(as a stuck admin shell would): the daemon must stop petting and say why in its log.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemon, free_port, write_config

pytestmark = pytest.mark.service


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, path
    sock.close()


def _messages(sock: socket.socket, seconds: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def test_ready_then_pets_and_stops_petting_when_the_store_is_locked(
    tmp_path: Path,
    notify_socket: tuple[socket.socket, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pet every 0.5 s
    port = free_port()
    daemon = Daemon(write_config(tmp_path, web_port=port), port)
    daemon.start()
    try:
        first = _messages(sock, 3.0)
        assert first[0] == "READY=1", first
        assert first.count("WATCHDOG=1") >= 3, first

        db = next((tmp_path / "state").glob("*.db"))
        locker = sqlite3.connect(db, timeout=1, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # hold the write lock
        try:
            _messages(sock, 7.0)  # a pet already in flight may still arrive
            while_locked = _messages(sock, 6.0)
            assert "WATCHDOG=1" not in while_locked, while_locked
            assert "watchdog: not petting systemd: the store" in daemon.log_text()
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert "WATCHDOG=1" in _messages(sock, 8.0)  # healthy again: petting resumes
        assert "watchdog: healthy again" in daemon.log_text()
    finally:
        assert daemon.stop() == 0
    assert "STOPPING=1" in _messages(sock, 1.0)

"""Issue 17's connection, file and link-up attacks, replayed against the real daemon process.

Idle and trickling connections under systemd's default open-file limit, a flood of display
WebSockets from one address, files others could read, and a dispenser whose request
arrives as its link comes up. Loopback only (127.0.0.x source addresses).
"""

from __future__ import annotations

import re
import resource
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attack_conn_harness import (
    EagerDispenser,
    LimitedDaemon,
    answered_or_closed,
    close_all,
    connect_from,
    fresh_daemon,
    hall_config,
    hold_idle,
    hold_kept_alive,
    timed_get,
    umask,
    websocket_handshake,
)
from tests.daemon_harness import free_port, hall_daemon

pytestmark = pytest.mark.service


@pytest.fixture
def daemons() -> Iterator[list[LimitedDaemon]]:
    started: list[LimitedDaemon] = []
    yield started
    for d in started:
        d.kill()


def lift_own_limit() -> None:
    """This process holds the attack's connections: lift its own soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files -----------------------------------------------------------------------------------


def test_the_state_folder_and_database_are_private_at_the_first_start_and_after(
    tmp_path: Path, daemons: list[LimitedDaemon]
) -> None:
    daemon = fresh_daemon(tmp_path, nofile=None)
    daemons.append(daemon)
    with umask(0o022):  # a shell's usual umask: 0755 folders, 0644 files
        daemon.start()
    state, db = tmp_path / "state", tmp_path / "state" / "hall.db"
    assert mode(state) == 0o750
    for suffix in ("", "-wal", "-shm"):
        assert mode(db.with_name(db.name + suffix)) == 0o600, suffix
    assert daemon.stop() == 0

    # Loosened meanwhile (a restore from a backup, a helpful chmod): tightened at start.
    state.chmod(0o777)
    db.chmod(0o666)
    daemon.start()
    assert mode(state) == 0o750 and mode(db) == 0o600
    assert daemon.stop() == 0


def secret(tmp_path: Path, name: str, file_mode: int) -> Path:
    path = tmp_path / name
    path.write_text("s3cret-token-0123456789\n")
    path.chmod(file_mode)
    return path


def test_check_config_and_run_refuse_secret_files_others_can_read(tmp_path: Path) -> None:
    token = secret(tmp_path, "metrics-token", 0o644)
    password = secret(tmp_path, "mqtt-password", 0o604)
    config = hall_config(
        tmp_path,
        free_port(),
        **{},
    )
    text = config.read_text()
    text = text.replace(
        "  # metrics_token_file: /etc/hall-daemon/metrics-token", f"  metrics_token_file: {token}"
    )
    text = text.replace(
        "  # password_file: /etc/hall-daemon/mqtt-password", f"  password_file: {password}"
    )
    config.write_text(text)
    lines = text.splitlines()
    token_line = next(
        i for i, t in enumerate(lines, 1) if "metrics_token_file:" in t and "#" not in t
    )
    password_line = next(
        i for i, t in enumerate(lines, 1) if "password_file:" in t and "#" not in t
    )

    for args in (["check-config", str(config)], ["run", "-c", str(config)]):
        result = hall_daemon(*args)
        assert result.returncode == 2, result.stderr
        assert (
            f"config.yaml:{token_line} web.metrics_token_file: {token} is readable by others "
            "(mode 0644); chmod 600 it"
        ) in result.stderr
        assert (
            f"config.yaml:{password_line} mqtt.password_file: {password} is readable by others "
            "(mode 0604); chmod 600 it"
        ) in result.stderr

    token.chmod(0o600)
    password.chmod(0o640)  # root:hall-daemon 0640 is how a package would install it
    result = hall_daemon("check-config", str(config))
    assert result.returncode == 0, result.stderr


# -- the link-up race ------------------------------------------------------------------------


def test_a_take_that_arrives_as_the_dispenser_link_comes_up_is_answered(
    tmp_path: Path, daemons: list[LimitedDaemon]
) -> None:
    dispenser = EagerDispenser()
    try:
        port = free_port()
        daemon = LimitedDaemon(hall_config(tmp_path, port, dispenser.port), port, nofile=None)
        daemons.append(daemon)
        for start in range(2):  # the first start, then a restart
            dispenser.arm()
            daemon.start()
            # Two link-ups per run: the start's, then a reconnection after the link dropped.
            dispenser.wait(2 * (start + 1), timeout=6.0)
            dispenser.disarm()  # a TAKE cut off by the stop itself proves nothing
            assert daemon.stop() == 0
    finally:
        dispenser.close()
    assert len(dispenser.replies) >= 4, dispenser.replies
    for n, reply in enumerate(dispenser.replies, start=1):
        assert reply is not None, f"TAKE #{n} was never answered: {dispenser.replies}"
        assert re.fullmatch(rb"(TICKET A\d{3} A \d+ \d+|ERR 409 [a-z-]+) #%d\n" % n, reply)


# -- connections -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedDaemon]:
    """One daemon under systemd's default open-file limit for the connection attacks; each
    attack closes what it opened."""
    lift_own_limit()
    daemon = fresh_daemon(tmp_path_factory.mktemp("limited"), nofile=1024)
    try:
        daemon.start()
        yield daemon
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def settle(daemon: LimitedDaemon) -> None:
    """Wait until the daemon has seen the previous attack's connections close."""
    time.sleep(0.5)
    assert daemon.get("/healthz")[0] == 200


def log_lines(daemon: LimitedDaemon) -> int:
    return daemon.log_text().count("\n")


def test_1100_idle_connections_under_nofile_1024_leave_healthz_answering(
    limited: LimitedDaemon,
) -> None:
    daemon = limited
    settle(daemon)
    before = log_lines(daemon)
    sources = [f"127.0.0.{i}" for i in range(2, 7)]  # 220 each: under the per-client limit
    held = hold_idle(daemon.web_port, 1100, sources)
    try:
        status, took = timed_get(daemon.web_port)
        assert status == 200 and took < 3.0, (status, took)
        assert daemon.get("/api/queues")[0] == 200
        time.sleep(1.0)
        status, took = timed_get(daemon.web_port)
        assert status == 200 and took < 3.0, (status, took)
    finally:
        close_all(held)
    text = daemon.log_text()
    assert "out of system resource" not in text and "Too many open files" not in text
    assert log_lines(daemon) - before < 20, text[-3000:]


def test_1100_kept_alive_connections_leave_healthz_answering(limited: LimitedDaemon) -> None:
    daemon = limited
    settle(daemon)
    sources = [f"127.0.0.{i}" for i in range(12, 17)]
    held = hold_kept_alive(daemon.web_port, 1100, sources)
    try:
        assert len(held) > 768 / 2, len(held)  # they got in, and made their requests
        time.sleep(1.5)  # idle long enough to make room for a newcomer
        status, took = timed_get(daemon.web_port)
        assert status == 200 and took < 3.0, (status, took)
    finally:
        close_all(held)


def test_one_address_holds_only_its_share_and_hears_why(limited: LimitedDaemon) -> None:
    daemon = limited
    settle(daemon)
    held = hold_idle(daemon.web_port, 300, ["127.0.0.9"])
    try:
        time.sleep(0.3)
        answers = [answered_or_closed(s) for s in held]
        refused = [a for a in answers if a is not None]
        assert len(held) - len(refused) == 256, len(refused)
        assert any(a.startswith(b"HTTP/1.1 503 ") for a in refused), refused[:3]
        status, took = timed_get(daemon.web_port)  # another address: unaffected
        assert status == 200 and took < 3.0
    finally:
        close_all(held)


def test_silent_and_trickling_connections_are_closed_within_the_head_timeout(
    limited: LimitedDaemon,
) -> None:
    daemon = limited
    settle(daemon)
    silent = connect_from("127.0.0.2", daemon.web_port)
    trickle = connect_from("127.0.0.3", daemon.web_port)
    trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    answers: dict[str, bytes] = {}
    try:
        while time.monotonic() - started < 8.0 and len(answers) < 2:
            for name, sock in (("silent", silent), ("trickle", trickle)):
                if name not in answers and (got := answered_or_closed(sock)) is not None:
                    answers[name] = got
            if "trickle" not in answers:
                try:
                    trickle.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    answers.setdefault("trickle", b"")
            time.sleep(0.25)
        took = time.monotonic() - started
    finally:
        close_all([silent, trickle])
    assert set(answers) == {"silent", "trickle"}, f"still open after {took:.1f} s"
    assert took < 7.0
    assert answers["silent"].startswith(b"HTTP/1.1 408 "), answers


def test_5000_screen_websockets_from_one_address_are_capped_and_a_real_screen_connects(
    limited: LimitedDaemon,
) -> None:
    daemon = limited
    settle(daemon)
    attempts, opened, statuses = 400, [], []
    try:
        for _ in range(attempts):  # the per-client connection limit refuses the rest sooner
            try:
                sock = connect_from("127.0.0.3", daemon.web_port)
                statuses.append(websocket_handshake(sock, "/ws/screen/hall"))
                opened.append(sock)
            except OSError:
                statuses.append(b"reset")
        upgraded = sum(s.startswith(b"HTTP/1.1 101") for s in statuses)
        assert upgraded == 16, statuses[:20]
        assert any(s.startswith(b"HTTP/1.1 429") for s in statuses)
        screen = connect_from("127.0.0.2", daemon.web_port)
        opened.append(screen)
        assert websocket_handshake(screen, "/ws/screen/hall").startswith(b"HTTP/1.1 101")
    finally:
        close_all(opened)

"""Run the real `hall-daemon` process on a copy of the example config, for service tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from hall_daemon import commands as c
from hall_daemon.config import load_config
from hall_daemon.hall import Hall
from hall_daemon.store import Store

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, *, web_port: int, **replace: str) -> Path:
    """config.yaml with its own state directory and web port; `replace` maps regex → text."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    text = text.replace("state_dir: ./state", f"state_dir: {tmp / 'state'}")
    text = re.sub(r"(?m)^(web:\n(?:  .*\n|\s*\n|  #.*\n)*?  port:) \d+", rf"\1 {web_port}", text)
    for pattern, new in replace.items():
        text = re.sub(pattern, new, text)
    path = tmp / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def quiet_config(tmp: Path, port: int, extra: str = "") -> Path:
    """The example hall without broker, voice or serial peers; `extra` is appended YAML."""
    path = write_config(
        tmp,
        web_port=port,
        **{
            r"(?m)^(voice:\n  enabled:) true": r"\1 false",
            r"(?m)^(mqtt:\n  enabled:) true": r"\1 false",
            r"socket://127\.0\.0\.1:7001": f"socket://127.0.0.1:{free_port()}",
            r"socket://127\.0\.0\.1:7002": f"socket://127.0.0.1:{free_port()}",
        },
    )
    if extra:
        path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def seed_appointment(config: Path, code: str, service: str = "B") -> None:
    """An appointment open for check-in now, in the store the daemon will open."""

    async def seed() -> None:
        hall_config = load_config(config)
        hall_config.state_dir.mkdir(parents=True, exist_ok=True)
        hall = Hall(hall_config.to_spec(), Store(hall_config.database_url()))
        await hall.start()
        now = hall.now()
        start, end = now + timedelta(minutes=10), now + timedelta(minutes=70)
        await hall.submit(c.UpsertAppointment(now, code, service, start, end))
        await hall.stop()

    asyncio.run(seed())


def client_session(source: str = "127.0.0.1", connections: int = 0) -> aiohttp.ClientSession:
    """An HTTP client from loopback address `source`, over at most `connections` at once (0:
    as many as requests; the daemon's front door caps them per client)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=connections)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def admin_login(s: aiohttp.ClientSession, base: str, password: str) -> tuple[int, float]:
    """POST the admin login form as the page does: the status (303 = in) and Retry-After."""
    async with s.post(
        base + "/admin/login",
        data={"password": password},
        headers={"Origin": base},
        allow_redirects=False,
    ) as r:
        await r.read()
        return r.status, float(r.headers.get("Retry-After", "0"))


def simulated_hall_config(
    tmp: Path, broker_port: int, dispenser: int | None = None, bus: int | None = None
) -> tuple[Path, int]:
    """config.yaml whose serial ports are TCP ports (free ones unless given: where `hall-daemon
    simulate` serves its devices), with the given broker; and the daemon's web port."""
    web = free_port()
    dispenser = dispenser or free_port()
    bus = bus or free_port()
    config = write_config(
        tmp,
        web_port=web,
        **{
            r"127\.0\.0\.1:7001": f"127.0.0.1:{dispenser}",
            r"127\.0\.0\.1:7002": f"127.0.0.1:{bus}",
            r"(?m)^  port: 1883": f"  port: {broker_port}",
        },
    )
    return config, web


def start_simulator(config: Path, *args: str) -> subprocess.Popen[str]:
    """`hall-daemon simulate --json` for `config`'s devices; its report is on stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "hall_daemon", "simulate", "-c", str(config), *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def hall_daemon(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hall_daemon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


class Daemon:
    def __init__(self, config: Path, web_port: int, env: dict[str, str] | None = None) -> None:
        self.config, self.web_port = config, web_port
        self.env = env or {}
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hall_daemon", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                status, _ = self.get("/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"daemon not healthy within {timeout} s:\n{self.log_text()}")

    def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

"""Optional parts cost nothing unless configured: python-escpos, Pillow and qrcode only for a
hall with a `printer:` section, psycopg only for a PostgreSQL store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_harness import REPO, Daemon, free_port, quiet_config

pytestmark = pytest.mark.service

OPTIONAL = ("escpos", "PIL", "qrcode", "psycopg")
PRINTER_SECTION = r"(?ms)^printer:\n.*?(?=^# ---)"  # up to the next section's banner


def without_printer(config: Path) -> Path:
    text = re.sub(PRINTER_SECTION, "", config.read_text(encoding="utf-8"))
    assert "\nprinter:" not in text
    config.write_text(text, encoding="utf-8")
    return config


# The daemon's own start-up and shutdown, as `hall-daemon run` does them, in a fresh
# interpreter: then sys.modules is exactly what this config made it import.
BUILD = """
import asyncio, json, sys
from hall_daemon.app import Daemon
from hall_daemon.cli import prepare_run
from hall_daemon.config import load_config

config = load_config(sys.argv[1])
prepare_run(config)

async def main():
    daemon = Daemon(config)
    await daemon.start()
    await daemon.stop()

asyncio.run(main())
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))))
"""


def imported_after_start(config: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(config), *OPTIONAL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_a_hall_without_a_printer_imports_no_printer_library(tmp_path: Path) -> None:
    config = without_printer(quiet_config(tmp_path, free_port()))
    assert imported_after_start(config) == []


def test_a_hall_with_a_printer_imports_them(tmp_path: Path) -> None:
    config = quiet_config(tmp_path, free_port())
    assert "\nprinter:" in config.read_text(encoding="utf-8")
    assert imported_after_start(config) == ["PIL", "escpos", "qrcode"]  # SQLite: no psycopg


def test_the_running_daemon_without_a_printer_maps_no_pillow(tmp_path: Path) -> None:
    # The real process, from outside: Pillow's C core is a shared object in its memory map.
    with_printer, without = tmp_path / "with", tmp_path / "without"
    maps: dict[bool, str] = {}
    for where, strip in ((with_printer, False), (without, True)):
        where.mkdir()
        port = free_port()
        config = quiet_config(where, port)
        if strip:
            without_printer(config)
        daemon = Daemon(config, port)
        daemon.start()
        try:
            assert daemon.proc is not None
            maps[strip] = Path(f"/proc/{daemon.proc.pid}/maps").read_text(encoding="utf-8")
        finally:
            assert daemon.stop() == 0
    assert "PIL/_imaging" in maps[False]  # so the check below can see it at all
    assert "PIL/" not in maps[True]


def test_a_hall_on_postgresql_imports_psycopg_and_still_no_printer_library(
    tmp_path: Path, pg_url: str
) -> None:
    config = without_printer(quiet_config(tmp_path, free_port()))
    text = config.read_text(encoding="utf-8").replace(
        "storage:\n", f"storage:\n  url: {pg_url}\n", 1
    )
    config.write_text(text, encoding="utf-8")
    assert imported_after_start(config) == ["psycopg"]

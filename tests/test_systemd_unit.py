"""The systemd unit passes `systemd-analyze verify` with no warnings, and the install script
lays out the tree IT staff expect (run into a DESTDIR, never the real /opt)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "hall-daemon.service"
INSTALLED_EXE = "/opt/hall-daemon/venv/bin/hall-daemon"

pytestmark = pytest.mark.service


def _verify(unit_text: str, tmp_path: Path) -> str:
    """systemd-analyze verify on the unit; only the executable path is swapped for one that
    exists here (/opt/hall-daemon is not installed), every directive is checked as written."""
    assert unit_text.count(INSTALLED_EXE) == 2
    unit = tmp_path / "hall-daemon.service"
    unit.write_text(unit_text.replace(INSTALLED_EXE, "/bin/true"), encoding="utf-8")
    done = subprocess.run(
        ["/usr/bin/systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return (done.stdout + done.stderr).strip()


def test_the_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    assert _verify(UNIT.read_text(encoding="utf-8"), tmp_path) == ""


def test_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8").replace("WatchdogSec=", "WatchDogSec=")
    assert "Unknown key 'WatchDogSec'" in _verify(text, tmp_path)


def test_the_unit_asks_for_what_the_issue_requires() -> None:
    text = UNIT.read_text(encoding="utf-8")
    directives = dict(re.findall(r"(?m)^(\w+)=(.*)$", text))
    assert directives["Type"] == "notify"
    assert directives["WatchdogSec"] == "30s"
    assert directives["Restart"] == "on-failure"
    assert directives["StateDirectory"] == "hall-daemon"
    assert directives["User"] == "hall-daemon"
    assert set(directives["SupplementaryGroups"].split()) == {"dialout", "lp"}
    assert directives["ProtectSystem"] == "strict"
    for key in ("ProtectHome", "NoNewPrivileges", "PrivateTmp"):
        assert directives[key] == "yes"
    assert set(directives["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # More descriptors than web.limits.connections and their reserve; nothing for others.
    assert int(directives["LimitNOFILE"]) >= 768 + 256
    assert directives["StateDirectoryMode"] == "0750" and directives["UMask"] == "0027"


def test_the_memory_benchmark_runs_the_daemon_with_the_units_environment() -> None:
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from rss_bench import unit_environment

    env = unit_environment(UNIT)
    assert env["MALLOC_ARENA_MAX"] == "2"  # glibc: two malloc arenas, not one per thread
    assert env["PYTHONUNBUFFERED"] == "1"


def _install(destdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DESTDIR": str(destdir), "HALL_NO_PIP": "1"},
    )


def test_install_lays_out_opt_etc_and_var_and_keeps_an_edited_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = _install(root)
    assert first.returncode == 0, first.stderr
    assert (root / "opt/hall-daemon/venv/bin/python").exists()
    assert (root / "opt/hall-daemon/README.md").exists()
    config = root / "etc/hall-daemon/config.yaml"
    assert "state_dir: /var/lib/hall-daemon" in config.read_text(encoding="utf-8")
    assert (root / "etc/hall-daemon/99-hall-devices.rules.example").exists()
    assert (root / "var/lib/hall-daemon").is_dir()
    unit = root / "etc/systemd/system/hall-daemon.service"
    assert unit.read_text(encoding="utf-8") == UNIT.read_text(encoding="utf-8")
    assert oct(config.stat().st_mode & 0o777) == "0o640"  # may hold broker details

    config.write_text("# edited by the hall's IT\n", encoding="utf-8")
    again = _install(root)
    assert again.returncode == 0, again.stderr
    assert "kept the existing /etc/hall-daemon/config.yaml" in again.stdout
    assert config.read_text(encoding="utf-8") == "# edited by the hall's IT\n"


def test_the_installed_example_config_is_valid(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _install(root).returncode == 0
    config = root / "etc/hall-daemon/config.yaml"
    text = config.read_text(encoding="utf-8").replace("/var/lib/hall-daemon", str(tmp_path / "s"))
    config.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [str(REPO / ".venv/bin/hall-daemon"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr

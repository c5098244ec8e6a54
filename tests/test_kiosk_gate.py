"""The kiosks' config (addresses, key files) and the gate's limits on its own clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from display.kiosk_gate import KioskGate
from hall_daemon.config import ConfigError, HallConfig, load_config
from hall_daemon.filemodes import secret_file_problems

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def with_kiosks(tmp_path: Path, kiosks: str, limits: str = "") -> Path:
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text(text + "\nkiosks:\n" + kiosks + limits, encoding="utf-8")
    return path


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_by_default_only_this_pc_is_a_kiosk() -> None:
    config = load_config(REPO / "config.yaml")
    assert [k.address for k in config.kiosks] == ["127.0.0.1/32", "::1/128"]


def test_kiosk_entries_are_checked_naming_the_line(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text("k" * 32)
    loose.chmod(0o644)
    short = tmp_path / "short.key"
    short.write_text("k" * 8)
    short.chmod(0o600)
    config = with_kiosks(tmp_path, "  - {id: a, address: 192.168.1.300}\n")
    assert "kiosks[0].address: not an IP address or network" in problems(config)
    found = problems(
        with_kiosks(
            tmp_path,
            "  - {id: a, address: 192.168.1.21}\n"
            "  - {id: b}\n"
            f"  - {{id: c, address: 10.0.0.1, key_file: {short}}}\n"
            f"  - {{id: d, key_file: {loose}}}\n"
            f"  - {{id: e, key_file: {short}}}\n"
            f"  - {{id: f, key_file: {tmp_path / 'missing.key'}}}\n"
            "  - {id: e, address: 10.0.0.0/28}\n",
        )
    )
    assert "kiosks[0]" not in found
    assert "kiosks[1]: give address or key_file (one of them)" in found
    assert "kiosks[2]: give address or key_file (one of them)" in found
    assert "kiosks[3]" not in found  # its mode is judged with the other secret files
    assert f"kiosks[4].key_file: the key in {short} is shorter than 16" in found
    assert "kiosks[5].key_file: cannot read" in found
    assert "kiosks[6].id: kiosk 'e' is already listed at kiosks[4]" in found


def gate_for(tmp_path: Path, limits: str) -> KioskGate:
    config: HallConfig = load_config(
        with_kiosks(tmp_path, "  - {id: hall, address: 192.168.1.0/28}\n", limits)
    )
    return KioskGate(config, clock=lambda: now[0])


now = [0.0]


def test_wrong_codes_are_limited_per_kiosk_and_for_the_hall(tmp_path: Path) -> None:
    gate = gate_for(
        tmp_path,
        "kiosk_limits:\n"
        "  wrong_codes: {burst: 3, every_s: 600}\n"
        "  wrong_codes_hall: {burst: 5, every_s: 360}\n",
    )
    now[0] = 0.0
    first = [gate.take_code("hall@192.168.1.2") for _ in range(4)]
    assert first[:3] == [None, None, None]
    assert first[3] is not None and first[3].status == 429
    assert first[3].headers() == {"Retry-After": "600"}
    # Another kiosk has its own 3, but the hall has only 2 left.
    other = [gate.take_code("hall@192.168.1.3") for _ in range(3)]
    assert other[:2] == [None, None]
    assert other[2] is not None and other[2].headers() == {"Retry-After": "360"}
    # A right code gives its try back, to the kiosk and to the hall.
    gate.code_accepted("hall@192.168.1.3")
    assert gate.take_code("hall@192.168.1.3") is None
    now[0] = 360.0
    assert gate.take_code("hall@192.168.1.4") is None
    assert gate.take_code("hall@192.168.1.4") is not None


def test_tickets_come_in_a_burst_then_at_the_rate(tmp_path: Path) -> None:
    gate = gate_for(tmp_path, "kiosk_limits:\n  tickets: {burst: 2, every_s: 5}\n")
    now[0] = 100.0
    answers = [gate.take_ticket("hall@192.168.1.2") for _ in range(3)]
    assert answers[:2] == [None, None]
    assert answers[2] is not None and answers[2].slug == "too-many-tickets"
    now[0] = 105.0
    assert gate.take_ticket("hall@192.168.1.2") is None


def test_a_kiosk_key_file_others_can_read_is_refused_naming_it(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text("k" * 32)
    loose.chmod(0o644)
    config = load_config(with_kiosks(tmp_path, f"  - {{id: d, key_file: {loose}}}\n"))
    [problem] = secret_file_problems(config)
    assert problem.endswith(
        f"kiosks[0].key_file: {loose} is readable by others (mode 0644); chmod 600 it"
    )
    loose.chmod(0o640)
    assert secret_file_problems(config) == []

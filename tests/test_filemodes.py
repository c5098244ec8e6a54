"""Who may read the hall's files: secret files refused like ssh, our own files tightened."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hall_daemon.config import parse_config
from hall_daemon.filemodes import (
    check_secret_file,
    ensure_private_database,
    ensure_state_dir,
    secret_file_problems,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("file_mode", "why"),
    [
        (0o644, "is readable by others (mode 0644)"),
        (0o602, "is writable by others (mode 0602)"),
        (0o620, "is writable by its group (mode 0620)"),
        (0o600, None),
        (0o640, None),
        (0o400, None),
    ],
)
def test_a_secret_file_is_refused_when_others_can_read_it(
    tmp_path: Path, file_mode: int, why: str | None
) -> None:
    path = tmp_path / "token"
    path.write_text("x")
    path.chmod(file_mode)
    problem = check_secret_file(path)
    assert problem == (None if why is None else f"{path} {why}; chmod 600 it")


def test_a_missing_secret_file_is_left_to_whoever_reads_it(tmp_path: Path) -> None:
    assert check_secret_file(tmp_path / "nothing") is None


def test_the_problems_name_the_line_and_field_of_each_secret(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("k")
    key.chmod(0o644)
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "  # tls:\n", f"  tls:\n    cert: {tmp_path / 'client.crt'}\n    key: {key}\n"
    )
    config = parse_config(text, "config.yaml", REPO)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == f"key: {key}")
    assert secret_file_problems(config) == [
        f"config.yaml:{line} mqtt.tls.key: {key} is readable by others (mode 0644); chmod 600 it"
    ]


def test_our_state_folder_and_database_are_made_private_and_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_state_dir(state)
    assert mode(state) == 0o750
    db = state / "hall.db"
    ensure_private_database(db)
    assert mode(db) == 0o600 and db.stat().st_size == 0
    state.chmod(0o755)
    db.chmod(0o644)
    wal = state / "hall.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o664)
    ensure_state_dir(state)
    ensure_private_database(db)
    assert (mode(state), mode(db), mode(wal)) == (0o750, 0o600, 0o600)
    state.chmod(0o700)  # tighter than ours: left as the hall set it
    ensure_state_dir(state)
    assert mode(state) == 0o700

"""Who may read the hall's files: the state folder, the database and the secrets.

The database holds every ticket's token (the key to its applicant page) and the state
folder the admin password's hash, so neither is for other users of the hall PC: the
folder is 0750 and the database files 0600, whoever creates them and whatever the umask
of the shell that started us. Files that were made too open are tightened at start
(they are ours). Secret files the hall's IT staff provide (the metrics token, the MQTT
password, the TLS key) are refused, as ssh refuses a private key, when others can read
them or anyone but their owner can write them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import HallConfig

PROCESS_UMASK = 0o027  # new files at most 0640, folders 0750
STATE_DIR_MODE = 0o750
PRIVATE_FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def restrict_umask() -> None:
    """At process start: nothing we create is ever readable by other users."""
    os.umask(PROCESS_UMASK | os.umask(PROCESS_UMASK))


def ensure_state_dir(path: Path) -> None:
    """Create the state folder 0750 (with its parents), or take away what others may do."""
    path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    tighten(path, 0o027)


def ensure_private_database(path: Path) -> None:
    """An SQLite database file that only the daemon's user can read, created so if missing.

    SQLite gives its -wal and -shm files the database file's mode, so a database created
    0600 here keeps them 0600 too; files left from before are tightened.
    """
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    for suffix in SQLITE_SUFFIXES:
        tighten(path.with_name(path.name + suffix), 0o077)


def tighten(path: Path, forbidden: int) -> None:
    """Remove the `forbidden` permission bits from `path` if it exists and has any."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & forbidden:
        path.chmod(mode & ~forbidden)


def check_secret_file(path: Path) -> str | None:
    """What is wrong with the permissions of a secret file, or None if nothing is.

    Readable by others, or writable by its group or others: refused, with the fix. A file
    that does not exist is not judged here; whoever reads it says it is missing.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & stat.S_IROTH:
        why = "is readable by others"
    elif mode & stat.S_IWOTH:
        why = "is writable by others"
    elif mode & stat.S_IWGRP:
        why = "is writable by its group"
    else:
        return None
    return f"{path} {why} (mode {mode:04o}); chmod 600 it"


def secret_file_problems(config: HallConfig) -> list[str]:
    """Each configured secret file whose permissions are refused, as `file:line field: why`."""
    mqtt, tls = config.mqtt, config.mqtt.tls
    secrets: list[tuple[tuple[str | int, ...], Path | None]] = [
        (("web", "metrics_token_file"), config.web.metrics_token_file),
        (("mqtt", "password_file"), mqtt.password_file),
        (("mqtt", "tls", "key"), tls.key if tls is not None else None),
    ]
    secrets += [(("kiosks", i, "key_file"), k.key_file) for i, k in enumerate(config.kiosks)]
    problems = []
    for loc, path in secrets:
        problem = check_secret_file(path) if path is not None else None
        if problem is not None:
            problems.append(f"{config.where(*loc)}: {problem}")
    return problems

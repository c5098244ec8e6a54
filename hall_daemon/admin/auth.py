"""The admin password: only its scrypt hash is kept, in a 0600 file in the state directory.

There is no default password. On the first start the daemon makes a random one, stores its
hash, and leaves the password itself in `admin-password.initial` (0600, beside the hash) for
whoever reads the state folder as root or the daemon's user; the log only says where.
`hall-daemon set-password` replaces it and removes that file. Hashing costs
tens of milliseconds and 32 MiB on purpose, so the daemon runs it on a worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "admin-password.json"
INITIAL_NAME = "admin-password.initial"
# scrypt with n = 2**15, r = 8 needs 32 MiB; the default maxmem (32 MiB) is just too small.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
HASH_BYTES = 32
SALT_BYTES = 16
MIN_LENGTH = 8
MAX_LENGTH = 1024  # hashing a megabyte "password" would be a cheap way to burn CPU


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long), or an unreadable hash file."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    hash: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "scheme": "scrypt",
                "n": self.n,
                "r": self.r,
                "p": self.p,
                "salt": base64.b64encode(self.salt).decode(),
                "hash": base64.b64encode(self.hash).decode(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PasswordHash:
        try:
            d: dict[str, Any] = json.loads(text)
            if d.get("scheme") != "scrypt":
                raise PasswordError(f"unknown password scheme {d.get('scheme')!r}")
            return cls(
                int(d["n"]),
                int(d["r"]),
                int(d["p"]),
                base64.b64decode(d["salt"]),
                base64.b64decode(d["hash"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PasswordError(f"unreadable password file: {exc}") from None


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=SCRYPT_MAXMEM,
        dklen=HASH_BYTES,
    )


def hash_password(password: str) -> PasswordHash:
    """Blocking (tens of ms): call on a worker thread from the daemon."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"the password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"the password may have at most {MAX_LENGTH} characters")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return PasswordHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest)


def check_password(stored: PasswordHash, password: str) -> bool:
    """Blocking, constant time in the password's content."""
    if not password or len(password) > MAX_LENGTH:
        return False
    digest = _scrypt(password, stored.salt, stored.n, stored.r, stored.p)
    return hmac.compare_digest(digest, stored.hash)


def generate_password() -> str:
    """About 120 bits, easy to read aloud and type: no 0/O or 1/l/I."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    groups = ["".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4)]
    return "-".join(groups)


class PasswordFile:
    """The hash file in the state directory; re-read when `set-password` replaced it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._cached: tuple[int, PasswordHash] | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def version(self) -> int:
        """Changes whenever the password does: sessions of an old password end."""
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def load(self) -> PasswordHash:
        version = self.version()
        if self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PasswordError(f"cannot read {self.path}: {exc}") from None
        stored = PasswordHash.from_json(text)
        self._cached = (version, stored)
        return stored

    def write(self, stored: PasswordHash) -> None:
        """Atomically, created 0600 from the start (never briefly world-readable)."""
        self._write_private(self.path, stored.to_json() + "\n")
        self._cached = None

    def _write_private(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self._keep_owner(fd)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _keep_owner(self, fd: int) -> None:
        """root running set-password must not take the file away from the daemon's user."""
        if os.geteuid() != 0:
            return
        try:
            st = self.path.stat() if self.path.exists() else self.path.parent.stat()
        except OSError:
            return
        os.fchown(fd, st.st_uid, st.st_gid)

    @property
    def initial_path(self) -> Path:
        return self.path.with_name(INITIAL_NAME)

    def set(self, password: str) -> None:
        """Blocking: hash and store a new password; the generated one's file goes."""
        self.write(hash_password(password))
        self.initial_path.unlink(missing_ok=True)

    def ensure(self) -> Path | None:
        """Blocking: on the first start make a password; return the private file it is in.

        The password's file is written before its hash: a crash between the two leaves no
        hash, so the next start makes a new password rather than one nobody knows."""
        if self.exists():
            return None
        password = generate_password()
        self._write_private(self.initial_path, password + "\n")
        self.write(hash_password(password))
        return self.initial_path

    def verify(self, password: str) -> bool:
        """Blocking. False also when the file is missing or unreadable (logged)."""
        try:
            stored = self.load()
        except PasswordError as exc:
            log.error("admin login refused: %s", exc)
            return False
        return check_password(stored, password)

"""Shared pytest fixtures."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules load the display harness as a plugin (its fixtures) and import its names too;
# registered here, before either, so its asserts are rewritten like a test module's.
pytest.register_assert_rewrite("tests.display_harness")

# -- PostgreSQL ---------------------------------------------------------------------------
# A throwaway database per test on the local server (trust auth, user postgres). If the
# server is down the fixture tries to start it once, and fails loudly if it still does not
# answer: a service test that silently skips would hide a broken PostgreSQL path.

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
_PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres connect_timeout=3"


def _pg_reachable() -> str | None:
    """None if the server answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(_PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def _pg_try_start() -> str:
    """Start every local cluster named 'main'; return what pg_ctlcluster said."""
    etc = Path("/etc/postgresql")
    versions = sorted(p.name for p in etc.iterdir()) if etc.is_dir() else []
    if not versions:
        return "no cluster under /etc/postgresql"
    said = []
    for version in versions:
        try:
            done = subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            said.append(f"pg_ctlcluster {version} main start: {exc}")
            continue
        said.append(
            f"pg_ctlcluster {version} main start: rc={done.returncode} "
            f"{(done.stdout + done.stderr).strip()}"
        )
    return "; ".join(said)


@pytest.fixture(scope="session")
def _pg_server() -> None:
    """Make sure the local PostgreSQL answers, starting it if needed, or fail the test."""
    why = _pg_reachable()
    if why is None:
        return
    started = _pg_try_start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        why = _pg_reachable()
        if why is None:
            return
        time.sleep(0.5)
    pytest.fail(
        f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({why}); "
        f"tried to start it: {started}",
        pytrace=False,
    )


@pytest.fixture
def pg_url(_pg_server: None) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database `hall_test_<random>`, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"hall_test_{secrets.token_hex(6)}"
    with psycopg.connect(_PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(_PG_ADMIN_DSN, autocommit=True) as conn:
            # FORCE: a test that failed midway may leave its store's connections open.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

"""The durable event store: the hall's event log, its MQTT outbox, snapshots and a little meta.

SQLAlchemy Core (no ORM, for speed), SQLite by default and PostgreSQL by URL. The daemon
calls it from one writer thread; `append` is the only hot path, so it does one `executemany`
per table in one short transaction and nothing else.

Every event gets the next `seq` (last + 1, forever, no gaps: ../shared/spec/mqtt.md, "The
event log") and a UUID `id`, and an outbox row in the same transaction, so an event is
either stored and queued for the backend or not there at all. `seq` is assigned here from a
cached counter rather than by the database so a batch needs no round trip to learn its
numbers; the primary key on `seq` is what stops a second writer from ever reusing one.

Times: `at` keeps the event's full ISO 8601 text (offset and microseconds) so a replay sees
exactly the datetime the engine produced; `ts` (and `outbox.sent_at`) hold integer
microseconds since the Unix epoch, exact and offset-independent, for range queries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hall_daemon.events import Event, StoredEvent
from hall_daemon.filemodes import STATE_DIR_MODE, ensure_private_database

__all__ = ["Store", "StoreError", "metadata"]


class StoreError(Exception):
    """The store could not do what was asked; for `append`, nothing was committed."""


# BIGINT PRIMARY KEY is an ordinary column plus a separate unique index in SQLite; INTEGER
# PRIMARY KEY is the rowid itself (also 64-bit), which saves a b-tree write per row.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

events_table = Table(
    "events",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("id", String(36), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("at", Text, nullable=False),  # full isoformat with offset: replay must be exact
    Column("ts", BigInteger, nullable=False, index=True),  # epoch µs, for time ranges
    Column("data", Text, nullable=False),  # JSON, ensure_ascii=False
)

outbox_table = Table(
    "outbox",
    metadata,
    Column("seq", _SEQ, ForeignKey("events.seq"), primary_key=True, autoincrement=False),
    Column("sent_at", BigInteger, nullable=True),  # epoch µs of the broker's ack; NULL: pending
    # (sent_at, seq) rather than sent_at alone so "pending after seq N in seq order" is one
    # index range scan on both backends, however long the broker was away.
    Index("ix_outbox_sent_at_seq", "sent_at", "seq"),
)

snapshots_table = Table(
    "snapshots",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),  # the last seq it covers
    Column("taken_at", Text, nullable=False),
    Column("state", Text, nullable=False),
)

meta_table = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_BOOT_KEY = "boot"
# One statement text for any acknowledgement, a run of consecutive seqs at a time. An
# `IN (...)` list made a new SQL text for every list length, and SQLite keeps each prepared
# statement in the connection's cache (tens of KB each): the daemon grew by ~0.5 MiB a day.
_MARK_SENT = (
    update(outbox_table)
    .where(outbox_table.c.seq.between(bindparam("lo"), bindparam("hi")))
    .where(outbox_table.c.sent_at.is_(None))
    .values(sent_at=bindparam("sent"))
)


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Distinct seqs as (first, last) runs of consecutive numbers, in order."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


_EVENT_COLUMNS = (
    events_table.c.seq,
    events_table.c.id,
    events_table.c.type,
    events_table.c.at,
    events_table.c.data,
)

_MAX_SEQ = select(func.max(events_table.c.seq))


@dataclass(frozen=True, slots=True)
class _AppendSql:
    """The hot path's statements in the driver's own parameter style."""

    insert_event: str
    insert_outbox: str
    insert_snapshot: str

    @classmethod
    def for_paramstyle(cls, paramstyle: str) -> _AppendSql:
        if paramstyle == "qmark":
            mark = "?"
        elif paramstyle in ("format", "pyformat"):
            mark = "%s"
        else:
            raise StoreError(f"unsupported DB-API parameter style {paramstyle!r}")

        def ins(table: Table, columns: Sequence[str]) -> str:
            marks = ", ".join(mark for _ in columns)
            return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"

        return cls(
            insert_event=ins(events_table, ("seq", "id", "type", "at", "ts", "data")),
            insert_outbox=ins(outbox_table, ("seq",)),
            insert_snapshot=ins(snapshots_table, ("seq", "taken_at", "state")),
        )


def _micros(at: datetime) -> int:
    """Exact integer microseconds since the epoch of an aware datetime."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"datetime {at!r} lacks a UTC offset")
    return (at - _EPOCH) // _ONE_US


def _dumps(obj: Any) -> str:
    # allow_nan=False: NaN is not JSON, and this text goes to the backend as it is.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _stored(row: Sequence[Any]) -> StoredEvent:
    seq, eid, etype, at, data = row
    return StoredEvent(
        seq=seq, id=eid, type=etype, at=datetime.fromisoformat(at), data=json.loads(data)
    )


# SQLite's page cache per connection, in KiB. Its default (2,000 KiB) is filled only as the
# file grows, so a hall's daemon gained memory day after day for its first week or two; the
# writer only touches the right edges of the tables and indexes, and the OS caches the file
# for the readers anyway.
SQLITE_CACHE_KIB = 512


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Per connection, because synchronous, foreign_keys, busy_timeout and cache_size do not
    # persist in the file (journal_mode does, but setting it again is harmless and cheap).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


class Store:
    """The hall's durable event log, outbox, snapshots and meta values."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: Engine | None = None
        self._sql = _AppendSql.for_paramstyle("qmark")  # replaced by open() for the real driver
        self._last_seq = 0
        # Set when an append failed: the cached counter may disagree with the database (a
        # COMMIT whose outcome is unknown, say), so until an append succeeds again it is
        # re-read from there rather than trusted.
        self._stale = False
        # append keeps one connection checked out: a pool checkout and return per command
        # costs about as much as the SQL itself. The lock only matters if someone breaks the
        # single-writer rule or closes the store from another thread.
        self._writer: Connection | None = None
        self._writer_lock = threading.Lock()

    # -- life cycle -----------------------------------------------------------------------

    @staticmethod
    def sqlite_url(path: Path) -> str:
        """The SQLAlchemy URL of an SQLite file (absolute, so a later chdir cannot move it)."""
        return f"sqlite+pysqlite:///{path.expanduser().absolute()}"

    @property
    def url(self) -> str:
        return self._url

    @property
    def engine(self) -> Engine:
        """The open engine, for diagnostics and tests (e.g. checking the SQLite pragmas)."""
        if self._engine is None:
            raise StoreError("the store is not open")
        return self._engine

    def open(self) -> None:
        """Connect, create missing tables and learn the last `seq`."""
        if self._engine is not None:
            return
        try:
            url = make_url(self._url)
            if url.get_backend_name() == "sqlite":
                if url.database and url.database != ":memory:":
                    # A fresh hall's data directory may not exist yet.
                    database = Path(url.database)
                    database.parent.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
                    ensure_private_database(database)
                engine = create_engine(url)
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                # A PostgreSQL restart kills pooled connections; a cheap ping on checkout
                # keeps the next append from failing on one.
                engine = create_engine(url, pool_pre_ping=True)
            metadata.create_all(engine)
            with engine.connect() as conn:
                last = conn.execute(_MAX_SEQ).scalar()
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open the store: {exc}") from exc
        self._engine = engine
        self._sql = _AppendSql.for_paramstyle(engine.dialect.paramstyle)
        self._last_seq = int(last or 0)
        self._stale = False

    def close(self) -> None:
        with self._writer_lock:
            self._drop_writer()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _drop_writer(self) -> None:
        # After a failure the connection may be dead or mid-transaction (and the raw cursor
        # bypassed SQLAlchemy's disconnect detection); a new one is cheaper to trust.
        if self._writer is not None:
            with suppress(SQLAlchemyError):
                self._writer.invalidate()
                self._writer.close()
            self._writer = None

    # -- the event log --------------------------------------------------------------------

    def append(
        self,
        events: Sequence[Event],
        snapshot: Callable[[int], dict[str, Any]] | None = None,
    ) -> list[StoredEvent]:
        """Store the events (and optionally a snapshot of the state after them) atomically.

        Raises StoreError, with nothing committed, if anything goes wrong; the caller should
        then rebuild its state from the store.
        """
        if not events:
            return []
        with self._writer_lock:
            return self._append(events, snapshot)

    def _append(
        self, events: Sequence[Event], snapshot: Callable[[int], dict[str, Any]] | None
    ) -> list[StoredEvent]:
        try:
            if self._writer is None:
                self._writer = self.engine.connect()
            conn = self._writer
            if self._stale:
                self._last_seq = int(conn.execute(_MAX_SEQ).scalar() or 0)
                conn.rollback()  # end the read so the inserts below start a fresh transaction

            # Serialise before the transaction: bad data fails with nothing begun, and the
            # write transaction (SQLite's file lock) is held only for the inserts.
            first = self._last_seq + 1
            stored: list[StoredEvent] = []
            event_rows: list[tuple[int, str, str, str, int, str]] = []
            outbox_rows: list[tuple[int]] = []
            for seq, ev in enumerate(events, start=first):
                eid = str(uuid4())
                event_rows.append(
                    (seq, eid, ev.type, ev.at.isoformat(), _micros(ev.at), _dumps(ev.data))
                )
                outbox_rows.append((seq,))
                stored.append(StoredEvent(seq, eid, ev.type, ev.at, ev.data))
            last = first + len(events) - 1
            snapshot_row = None
            if snapshot is not None:
                snapshot_row = (last, datetime.now(UTC).isoformat(), _dumps(snapshot(last)))

            sql = self._sql
            with conn.begin():
                # Straight to the driver's cursor inside SQLAlchemy's transaction: the Core
                # execute path costs more per statement than SQLite takes to run it.
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                cursor = dbapi.cursor()
                try:
                    cursor.executemany(sql.insert_event, event_rows)
                    cursor.executemany(sql.insert_outbox, outbox_rows)
                    if snapshot_row is not None:
                        cursor.execute(sql.insert_snapshot, snapshot_row)
                finally:
                    cursor.close()
        except Exception as exc:
            # Any failure, a DB error or data that will not serialise, means nothing of the
            # batch is stored; a bare exception escaping here would leave the caller unsure.
            self._stale = True
            self._drop_writer()
            raise StoreError(f"append of {len(events)} event(s) failed: {exc}") from exc
        self._last_seq = last
        self._stale = False
        return stored

    def last_seq(self) -> int:
        """The seq of the last committed event (0 for an empty log)."""
        if self._stale and self._engine is not None:
            try:
                # Stays stale: only a successful append proves the counter right again.
                with self._engine.connect() as conn:
                    self._last_seq = int(conn.execute(_MAX_SEQ).scalar() or 0)
            except SQLAlchemyError:
                pass  # the database is away; the cached value is the best answer we have
        return self._last_seq

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        """(the last seq the snapshot covers, the state it holds), or None if there is none."""
        stmt = (
            select(snapshots_table.c.seq, snapshots_table.c.state)
            .order_by(snapshots_table.c.seq.desc())
            .limit(1)
        )
        with self._reading() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        state = json.loads(row.state)
        return int(row.seq), state

    def events_after(self, seq: int, limit: int | None = None) -> list[StoredEvent]:
        """Events with a seq above `seq`, ascending (what a replay from a snapshot needs)."""
        stmt = select(*_EVENT_COLUMNS).where(events_table.c.seq > seq).order_by(events_table.c.seq)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._reading() as conn:
            return [_stored(r) for r in conn.execute(stmt)]

    def iter_events(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: int = 5000,
    ) -> Iterator[StoredEvent]:
        """Events whose time is in [since, until), ascending seq, fetched `batch` at a time.

        Each batch is its own short query (keyset on seq), so a long export holds no
        connection or lock between batches and never loads the whole history.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        base = select(*_EVENT_COLUMNS)
        if since is not None:
            base = base.where(events_table.c.ts >= _micros(since))
        if until is not None:
            base = base.where(events_table.c.ts < _micros(until))
        after = 0
        while True:
            stmt = base.where(events_table.c.seq > after).order_by(events_table.c.seq).limit(batch)
            with self._reading() as conn:
                rows = conn.execute(stmt).all()
            for row in rows:
                yield _stored(row)
            if len(rows) < batch:
                return
            after = rows[-1][0]

    # -- the outbox -----------------------------------------------------------------------

    def outbox_pending(self, limit: int, after_seq: int = 0) -> list[StoredEvent]:
        """Up to `limit` events not yet acknowledged by the broker, with seq > after_seq."""
        stmt = (
            select(*_EVENT_COLUMNS)
            .join(outbox_table, outbox_table.c.seq == events_table.c.seq)
            .where(outbox_table.c.sent_at.is_(None), outbox_table.c.seq > after_seq)
            .order_by(outbox_table.c.seq)
            .limit(limit)
        )
        with self._reading() as conn:
            return [_stored(r) for r in conn.execute(stmt)]

    def outbox_mark_sent(self, seqs: Sequence[int], at: datetime) -> None:
        """Record the broker's acknowledgement; a row already marked keeps its first time."""
        if not seqs:
            return
        sent = _micros(at)
        params = [{"lo": lo, "hi": hi, "sent": sent} for lo, hi in _runs(seqs)]
        with self._writing() as conn:
            conn.execute(_MARK_SENT, params)

    def outbox_depth(self) -> int:
        """How many events wait for the broker."""
        stmt = (
            select(func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
        )
        with self._reading() as conn:
            return int(conn.execute(stmt).scalar_one())

    def outbox_oldest_pending(self) -> datetime | None:
        """The event time of the oldest event still waiting for the broker, or None."""
        stmt = (
            select(events_table.c.at)
            .join(outbox_table, outbox_table.c.seq == events_table.c.seq)
            .where(outbox_table.c.sent_at.is_(None))
            .order_by(outbox_table.c.seq)
            .limit(1)
        )
        with self._reading() as conn:
            at = conn.execute(stmt).scalar()
        return None if at is None else datetime.fromisoformat(at)

    def prune(self, sent_before: datetime, keep_snapshots: int = 3) -> int:
        """Delete outbox rows acknowledged before `sent_before` and all but the newest
        `keep_snapshots` snapshots; return how many rows (of both) were deleted.

        Events are the hall's history and are never deleted here.
        """
        cutoff = _micros(sent_before)
        with self._writing() as conn:
            # Pending rows have sent_at NULL, which no comparison matches: they are never pruned.
            deleted = conn.execute(
                delete(outbox_table).where(outbox_table.c.sent_at < cutoff)
            ).rowcount
            if keep_snapshots <= 0:
                deleted += conn.execute(delete(snapshots_table)).rowcount
            else:
                oldest_kept = conn.execute(
                    select(snapshots_table.c.seq)
                    .order_by(snapshots_table.c.seq.desc())
                    .limit(1)
                    .offset(keep_snapshots - 1)
                ).scalar()
                if oldest_kept is not None:
                    deleted += conn.execute(
                        delete(snapshots_table).where(snapshots_table.c.seq < oldest_kept)
                    ).rowcount
        return int(deleted)

    # -- meta -----------------------------------------------------------------------------

    def next_boot(self) -> int:
        """Increment and return the boot counter (committed before returning)."""
        with self._writing() as conn:
            value = conn.execute(
                select(meta_table.c.value).where(meta_table.c.key == _BOOT_KEY)
            ).scalar()
            boot = int(value) + 1 if value is not None else 1
            self._put_meta(conn, _BOOT_KEY, str(boot))
        return boot

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            value = conn.execute(select(meta_table.c.value).where(meta_table.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        with self._writing() as conn:
            self._put_meta(conn, key, value)

    def ping(self) -> bool:
        """True if the database answers a trivial query (for /healthz); never raises."""
        engine = self._engine
        if engine is None:
            return False
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar()
        except SQLAlchemyError:
            return False
        return True

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _put_meta(conn: Connection, key: str, value: str) -> None:
        # Update-then-insert keeps this portable; the single writer means no race between them.
        done = conn.execute(
            update(meta_table).where(meta_table.c.key == key).values(value=value)
        ).rowcount
        if not done:
            conn.execute(insert(meta_table).values(key=key, value=value))

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc

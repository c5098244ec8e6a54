"""The event store, on SQLite (a temp file) and on PostgreSQL (a throwaway database)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, delete, insert
from sqlalchemy import event as sqlalchemy_event

from hall_daemon import events as ev
from hall_daemon.events import Event, StoredEvent
from hall_daemon.store import Store, StoreError, events_table

CST = timezone(timedelta(hours=8))
T0 = datetime(2024, 5, 6, 8, 30, tzinfo=CST)


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=pytest.mark.service),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return Store.sqlite_url(tmp_path / "hall.db")
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store(url)
    s.open()
    yield s
    s.close()


def called(i: int, at: datetime | None = None, **extra: Any) -> Event:
    return Event(
        ev.TICKET_CALLED,
        at if at is not None else T0 + timedelta(seconds=i),
        {"number": f"A{i:03d}", "service": "A", "counter": 3, **extra},
    )


def all_events(store: Store) -> list[StoredEvent]:
    return store.events_after(0)


# -- seq and id -------------------------------------------------------------------------


def test_seq_starts_at_one_and_grows_by_one_per_event(store: Store) -> None:
    assert store.last_seq() == 0
    first = store.append([called(1)])
    second = store.append([called(2), called(3), called(4)])
    third = store.append([called(5), called(6)])

    assert [e.seq for e in first + second + third] == [1, 2, 3, 4, 5, 6]
    assert store.last_seq() == 6
    assert [e.seq for e in all_events(store)] == [1, 2, 3, 4, 5, 6]


def test_seq_continues_after_close_and_reopen(url: str) -> None:
    s = Store(url)
    s.open()
    s.append([called(1), called(2)])
    s.close()

    again = Store(url)
    again.open()
    try:
        assert again.last_seq() == 2
        assert [e.seq for e in again.append([called(3)])] == [3]
        assert [e.seq for e in all_events(again)] == [1, 2, 3]
    finally:
        again.close()


def test_ids_are_unique_uuid4s_and_are_what_is_stored(store: Store) -> None:
    appended = store.append([called(i) for i in range(300)])
    appended += store.append([called(i) for i in range(300, 310)])

    ids = [e.id for e in appended]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert [e.id for e in all_events(store)] == ids


def test_empty_append_commits_nothing(store: Store) -> None:
    store.append([called(1)])
    taken: list[int] = []

    def snap(seq: int) -> dict[str, Any]:
        taken.append(seq)
        return {"x": 1}

    assert store.append([], snapshot=snap) == []
    assert store.last_seq() == 1
    assert store.latest_snapshot() is None
    assert taken == []
    assert [e.seq for e in store.append([called(2)])] == [2]


# -- round trips -------------------------------------------------------------------------


def test_time_and_data_round_trip_exactly(store: Store) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    written = [
        Event(
            ev.TICKET_ISSUED,
            datetime(2024, 5, 6, 8, 30, 0, tzinfo=CST),
            {
                "number": "A001",
                "service": "户籍办理",
                "priority": True,
                "channel": "dispenser",
                "ahead": 0,
                "forecast": 12.5,
                "appointment": None,
                "applicant": {
                    "name": "张三",
                    "tags": ["老年人", "残疾人"],
                    "nested": {"a": [1, {}]},
                },
            },
        ),
        Event(ev.TICKET_CALLED, datetime(2024, 5, 6, 8, 31, 2, 123456, tzinfo=CST), {}),
        Event(ev.TICKET_DONE, datetime(2024, 5, 6, 9, 0, tzinfo=shanghai), {"counter": 7}),
        Event(
            ev.DEVICE_FAULT,
            datetime(2024, 5, 5, 20, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            {"detail": '打印机缺纸 \u2014 "quoted" \\ back\nslash', "port": "/dev/ttyUSB0"},
        ),
    ]
    returned = store.append(written)

    for read_back in (all_events(store), list(store.iter_events()), store.outbox_pending(10)):
        assert read_back == returned
        for got, want in zip(read_back, written, strict=True):
            assert got.type == want.type
            assert got.data == want.data
            assert got.at == want.at
            assert got.at.utcoffset() == want.at.utcoffset()
            assert got.at.isoformat() == want.at.isoformat()
            assert got.event == want

    # The contract line of a stored event is the engine's, to the second with the offset.
    line = ev.dumps(all_events(store)[1])
    assert '"at":"2024-05-06T08:31:02+08:00"' in line
    assert ev.loads(ev.dumps(all_events(store)[0])).data["applicant"]["name"] == "张三"


# -- failures ----------------------------------------------------------------------------


def test_unserialisable_data_fails_whole_batch_without_a_gap(store: Store) -> None:
    store.append([called(1)])
    bad = Event(ev.TICKET_CALLED, T0, {"number": "A002", "oops": {1, 2}})

    with pytest.raises(StoreError):
        store.append([called(2), bad])

    assert store.last_seq() == 1
    assert [e.seq for e in all_events(store)] == [1]
    assert store.outbox_depth() == 1
    assert [e.seq for e in store.append([called(3)])] == [2]
    assert [e.data["number"] for e in all_events(store)] == ["A001", "A003"]


def test_nan_and_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        store.append([Event(ev.TICKET_RATED, T0, {"score": float("nan")})])
    with pytest.raises(StoreError):
        store.append([Event(ev.TICKET_CALLED, datetime(2024, 5, 6, 8, 30), {})])
    assert all_events(store) == []
    assert [e.seq for e in store.append([called(1)])] == [1]


def test_database_error_mid_batch_rolls_back_everything(store: Store, url: str) -> None:
    store.append([called(1), called(2)])
    # A row squatting on seq 4 (as a second writer would) makes the third insert of the
    # next batch fail after the first two went in.
    intruder = create_engine(url)
    try:
        with intruder.begin() as conn:
            conn.execute(
                insert(events_table).values(
                    seq=4, id=str(uuid.uuid4()), type="x", at=T0.isoformat(), ts=0, data="{}"
                )
            )

        with pytest.raises(StoreError):
            store.append([called(3), called(4), called(5)], snapshot=lambda seq: {"s": seq})

        assert store.last_seq() == 4  # what is committed: the intruder's row, no more
        assert [e.seq for e in all_events(store)] == [1, 2, 4]
        assert [e.seq for e in store.outbox_pending(10)] == [1, 2]
        assert store.latest_snapshot() is None

        with intruder.begin() as conn:
            conn.execute(delete(events_table).where(events_table.c.seq == 4))
    finally:
        intruder.dispose()

    assert store.last_seq() == 2
    assert [e.seq for e in store.append([called(3)])] == [3]
    assert [e.seq for e in all_events(store)] == [1, 2, 3]
    assert [e.seq for e in store.outbox_pending(10)] == [1, 2, 3]


def test_after_a_failure_numbering_resumes_from_what_is_committed(store: Store, url: str) -> None:
    # As if an earlier COMMIT had landed although the driver reported an error: seq 3 is in
    # the database but not in the store's counter. The primary key refuses the duplicate,
    # and the store then numbers on from the database, not from its stale counter.
    store.append([called(1), called(2)])
    other = create_engine(url)
    try:
        with other.begin() as conn:
            conn.execute(
                insert(events_table).values(
                    seq=3, id=str(uuid.uuid4()), type="x", at=T0.isoformat(), ts=0, data="{}"
                )
            )
    finally:
        other.dispose()

    with pytest.raises(StoreError):
        store.append([called(3)])
    assert [e.seq for e in store.append([called(4)])] == [4]
    assert [e.seq for e in all_events(store)] == [1, 2, 3, 4]


def test_failing_snapshot_stores_nothing(store: Store) -> None:
    store.append([called(1)])

    def broken(seq: int) -> dict[str, Any]:
        raise RuntimeError("state cannot be serialised")

    with pytest.raises(StoreError):
        store.append([called(2)], snapshot=broken)
    assert [e.seq for e in all_events(store)] == [1]
    assert store.latest_snapshot() is None
    assert [e.seq for e in store.append([called(2)])] == [2]


def test_use_before_open_and_after_close_raises_store_error(url: str) -> None:
    s = Store(url)
    with pytest.raises(StoreError):
        s.append([called(1)])
    assert s.ping() is False
    s.open()
    assert s.ping() is True
    s.close()
    assert s.ping() is False
    with pytest.raises(StoreError):
        s.events_after(0)


@pytest.mark.unit
def test_open_fails_with_store_error_when_the_file_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StoreError):
        Store(Store.sqlite_url(blocker / "hall.db")).open()


# -- snapshots ---------------------------------------------------------------------------


def test_snapshot_is_stored_with_its_batch(store: Store) -> None:
    assert store.latest_snapshot() is None
    seen: list[int] = []

    def snap(seq: int) -> dict[str, Any]:
        seen.append(seq)
        return {"covers": seq, "counters": {"3": {"名称": "三号窗口", "open": True}}}

    store.append([called(1), called(2), called(3)], snapshot=snap)
    assert seen == [3]
    assert store.latest_snapshot() == (
        3,
        {"covers": 3, "counters": {"3": {"名称": "三号窗口", "open": True}}},
    )

    store.append([called(4)])
    assert store.latest_snapshot() is not None
    assert store.latest_snapshot() == (3, snap(3))

    store.append([called(5), called(6)], snapshot=lambda seq: {"covers": seq})
    assert store.latest_snapshot() == (6, {"covers": 6})


def test_snapshot_survives_reopen(url: str) -> None:
    s = Store(url)
    s.open()
    s.append([called(1)], snapshot=lambda seq: {"covers": seq})
    s.close()
    s = Store(url)
    s.open()
    try:
        assert s.latest_snapshot() == (1, {"covers": 1})
    finally:
        s.close()


# -- reading ranges ----------------------------------------------------------------------


def test_events_after_returns_ascending_and_honours_limit(store: Store) -> None:
    store.append([called(i) for i in range(1, 11)])
    assert [e.seq for e in store.events_after(0)] == list(range(1, 11))
    assert [e.seq for e in store.events_after(7)] == [8, 9, 10]
    assert [e.seq for e in store.events_after(3, limit=4)] == [4, 5, 6, 7]
    assert store.events_after(10) == []


def test_iter_events_by_time_range_across_batches(store: Store) -> None:
    # Three days, 20 events a day, an hour apart from 08:00.
    day = [T0.replace(hour=8, minute=0) + timedelta(days=d) for d in range(3)]
    batch = [
        Event(ev.TICKET_CALLED, day[d] + timedelta(minutes=30 * i), {"day": d, "i": i})
        for d in range(3)
        for i in range(20)
    ]
    store.append(batch)

    everything = list(store.iter_events(batch=7))
    assert [e.seq for e in everything] == list(range(1, 61))

    second_day = list(store.iter_events(since=day[1], until=day[2], batch=7))
    assert [e.data["day"] for e in second_day] == [1] * 20
    assert [e.seq for e in second_day] == list(range(21, 41))

    # since is inclusive, until exclusive, and the bounds compare instants, not text.
    exact = day[1] + timedelta(minutes=30)
    in_utc = exact.astimezone(UTC)
    assert [e.seq for e in store.iter_events(since=in_utc, until=in_utc)] == []
    assert [e.seq for e in store.iter_events(since=in_utc, until=in_utc + timedelta(0, 1))] == [22]
    assert [e.seq for e in store.iter_events(since=day[2] + timedelta(minutes=570))] == [60]
    assert [e.seq for e in store.iter_events(until=day[0] + timedelta(minutes=1))] == [1]


def test_iter_events_orders_by_seq_even_when_time_goes_backwards(store: Store) -> None:
    store.append([called(1, T0 + timedelta(minutes=10)), called(2, T0), called(3, T0)])
    got = list(store.iter_events(since=T0, until=T0 + timedelta(hours=1), batch=1))
    assert [e.seq for e in got] == [1, 2, 3]


def test_iter_events_streams_lazily(store: Store) -> None:
    store.append([called(i) for i in range(10)])
    it = store.iter_events(batch=3)
    first = next(it)
    # Appended after the first batch was read: a streaming reader still sees it, a reader
    # that loaded everything up front would not.
    store.append([called(10)])
    assert [first.seq] + [e.seq for e in it] == list(range(1, 12))


# -- outbox ------------------------------------------------------------------------------


def test_outbox_pending_mark_depth_and_oldest(store: Store) -> None:
    assert store.outbox_depth() == 0
    assert store.outbox_oldest_pending() is None
    store.append([called(i, T0 + timedelta(minutes=i)) for i in range(1, 8)])

    assert store.outbox_depth() == 7
    assert [e.seq for e in store.outbox_pending(3)] == [1, 2, 3]
    assert [e.seq for e in store.outbox_pending(3, after_seq=5)] == [6, 7]
    assert store.outbox_oldest_pending() == T0 + timedelta(minutes=1)
    assert store.outbox_oldest_pending().utcoffset() == timedelta(hours=8)  # type: ignore[union-attr]

    acked = T0 + timedelta(hours=1)
    store.outbox_mark_sent([1, 2, 4], acked)
    assert store.outbox_depth() == 4
    assert [e.seq for e in store.outbox_pending(10)] == [3, 5, 6, 7]
    assert store.outbox_oldest_pending() == T0 + timedelta(minutes=3)

    store.outbox_mark_sent([3, 5, 6, 7, 99], acked)  # 99 does not exist: ignored
    assert store.outbox_depth() == 0
    assert store.outbox_pending(10) == []
    assert store.outbox_oldest_pending() is None

    store.append([called(8)])
    assert [e.seq for e in store.outbox_pending(10)] == [8]


def test_outbox_survives_reopen(url: str) -> None:
    s = Store(url)
    s.open()
    s.append([called(i) for i in range(1, 6)])
    s.outbox_mark_sent([1, 2], T0)
    s.close()
    s = Store(url)
    s.open()
    try:
        assert [e.seq for e in s.outbox_pending(10)] == [3, 4, 5]
    finally:
        s.close()


def test_mark_sent_handles_thousands_of_seqs(store: Store) -> None:
    store.append([called(i) for i in range(3000)])
    store.outbox_mark_sent(list(range(1, 3001)), T0)
    assert store.outbox_depth() == 0


def test_acks_of_any_size_use_one_statement_text(store: Store) -> None:
    # Every distinct SQL text is a prepared statement in the connection's cache: with one
    # per batch size the daemon grew day after day (bench/rss_bench.py).
    store.append([called(i) for i in range(400)])
    texts: set[str] = set()

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            texts.add(statement)

    sqlalchemy_event.listen(store.engine, "before_cursor_execute", seen)
    seq, left = 1, []
    for n in range(1, 27):  # batches of 1..26 acks, in any order, every third with gaps
        batch = list(range(seq, seq + n))
        acked = batch[::2] if n % 3 == 0 else batch[1::2] + batch[::2]
        store.outbox_mark_sent(acked, T0)
        left += sorted(set(batch) - set(acked))
        seq += n
    assert len(texts) == 1, texts
    assert [e.seq for e in store.outbox_pending(1000)] == left + list(range(seq, 401))


def test_prune_deletes_old_acks_and_snapshots_but_keeps_events(store: Store) -> None:
    for i in range(1, 6):
        store.append([called(2 * i - 1), called(2 * i)], snapshot=lambda seq: {"covers": seq})
    # seqs 1..10; snapshots at 2, 4, 6, 8, 10
    early, late = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    store.outbox_mark_sent([1, 2, 3], early)
    store.outbox_mark_sent([4, 5], late)
    store.outbox_mark_sent([1], late)  # a re-ack keeps the first time

    deleted = store.prune(sent_before=T0 + timedelta(hours=2), keep_snapshots=3)

    assert deleted == 3 + 2  # three outbox rows, two snapshots
    assert [e.seq for e in all_events(store)] == list(range(1, 11))
    assert [e.seq for e in store.outbox_pending(20)] == [6, 7, 8, 9, 10]
    assert store.latest_snapshot() == (10, {"covers": 10})
    assert store.prune(sent_before=T0 + timedelta(hours=2), keep_snapshots=3) == 0

    # Unsent rows are never pruned, however old the cut-off.
    assert store.prune(sent_before=T0 + timedelta(days=365), keep_snapshots=1) == 2 + 2
    assert store.outbox_depth() == 5
    assert store.latest_snapshot() == (10, {"covers": 10})
    assert store.prune(sent_before=T0, keep_snapshots=0) == 1
    assert store.latest_snapshot() is None


# -- meta --------------------------------------------------------------------------------


def test_next_boot_increments_across_reopen(url: str) -> None:
    s = Store(url)
    s.open()
    assert s.next_boot() == 1
    assert s.next_boot() == 2
    s.close()
    s = Store(url)
    s.open()
    try:
        assert s.next_boot() == 3
    finally:
        s.close()


def test_meta_values_persist_and_overwrite(url: str) -> None:
    s = Store(url)
    s.open()
    assert s.get_meta("hall") is None
    s.set_meta("hall", "朝阳区政务服务中心")
    s.set_meta("hall", "海淀区政务服务中心")
    s.set_meta("other", "x")
    s.close()
    s = Store(url)
    s.open()
    try:
        assert s.get_meta("hall") == "海淀区政务服务中心"
        assert s.get_meta("other") == "x"
    finally:
        s.close()


# -- SQLite specifics --------------------------------------------------------------------


@pytest.mark.unit
def test_sqlite_file_uses_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "data" / "hall.db"  # the data directory does not exist yet
    s = Store(Store.sqlite_url(path))
    s.open()
    try:
        s.append([called(1)])
        with s.engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in (
                    "journal_mode",
                    "synchronous",
                    "foreign_keys",
                    "busy_timeout",
                    "cache_size",
                )
            }
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "foreign_keys": 1,
            "busy_timeout": 5000,
            "cache_size": -512,  # KiB: bounded, so the daemon does not grow with the file
        }
    finally:
        s.close()
    # WAL is a property of the file: any other reader sees it too.
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    finally:
        raw.close()


@pytest.mark.unit
def test_sqlite_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = Store.sqlite_url(Path("hall.db"))
    assert url == f"sqlite+pysqlite:///{tmp_path / 'hall.db'}"
    s = Store(url)
    s.open()
    s.close()
    assert (tmp_path / "hall.db").exists()

"""MQTT sync figures against a real local Mosquitto (bench/RESULTS.md).

1. Event -> subscriber latency: a keypad press (the CallNext command a keypad driver submits
   once it has decoded the frame) until a second MQTT client has the event, p50 and p99.
   Presses are spaced out, one at a time, as at a counter.
2. Outbox drain rate after an outage: the broker is stopped, the hall goes on (N events pile
   up in the outbox; a 10-minute outage of a busy hall is a few thousand), the broker comes
   back; time from its return until every event is acknowledged, and until the subscriber
   has them all.

    .venv/bin/python bench/sync_bench.py [--presses 500] [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hall_daemon import commands as c
from hall_daemon.hall import Hall
from sync import SyncHandle, SyncOptions, start_sync
from tests.mqtt_broker import Broker, Msg, Recorder, make_hall, mqtt_config, until

BASE = "hall/demo-hall"
# Production settings, except a quick first reconnect so the drain starts when the broker does.
OPTIONS = SyncOptions(backoff_min_s=0.1, backoff_max_s=0.5)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def latency(
    hall: Hall, rec: Recorder, presses: int, gap_s: float
) -> tuple[list[float], list[float]]:
    """Seconds from submitting a keypad command to the subscriber having its event, and
    the part of it the hall took to commit the event (fsync) before the sync heard of it.
    The subscriber's paho thread stamps arrivals and wakes us (no polling to compete with
    the threads being measured)."""
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[float]] = {}

    def arrived(m: Msg) -> None:
        if m.topic.endswith("/events"):
            seq = json.loads(m.payload)["seq"]
            loop.call_soon_threadsafe(_resolve, seq, m.at)

    def _resolve(seq: int, at: float) -> None:
        fut = waiting.get(seq)
        if fut is not None and not fut.done():
            fut.set_result(at)

    rec.listener = arrived
    await hall.submit(c.OpenCounter(hall.now(), 5))
    for i in range(min(presses + 10, 999)):  # tickets to call (service C: 999 a day)
        await hall.submit(c.TakeTicket(hall.now(), "C", f"bench-{i:017d}"))
    await until(lambda: len(rec.events(f"{BASE}/events")) >= hall.store.last_seq(), 30)
    out: list[float] = []
    commits: list[float] = []
    for _ in range(presses):
        await asyncio.sleep(gap_s)
        # The CallNext's events are the next seqs; the last one is ticket.called.
        fut: asyncio.Future[float] = loop.create_future()
        start = time.perf_counter()
        events = await hall.submit(c.CallNext(hall.now(), 5))
        commits.append(time.perf_counter() - start)
        last = events[-1].seq
        waiting[last] = fut
        for m in rec.on(f"{BASE}/events")[-5:]:  # it may have come before we asked
            if json.loads(m.payload)["seq"] == last:
                _resolve(last, m.at)
        out.append(await asyncio.wait_for(fut, 10) - start)
    rec.listener = None
    return out, commits


async def drain(
    sync: SyncHandle, hall: Hall, broker: Broker, rec: Recorder, n: int
) -> tuple[int, float, float]:
    broker.stop()
    await until(lambda: not sync.stats()["connected"], 10)
    for start in range(0, n, 500):
        await asyncio.gather(
            *(hall.submit(c.TogglePause(hall.now(), 1 + i % 4)) for i in range(start, start + 500))
        )
    depth = sync.stats()["outbox_depth"]
    last = hall.store.last_seq()
    broker.start()
    started = time.perf_counter()
    await until(lambda: sync.stats()["outbox_depth"] == 0, 600)
    acked = time.perf_counter() - started
    # Told by the subscriber's thread, not found by scanning its 20,000 messages: polling
    # that would hold the GIL the threads being measured need.
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def listener(m: Msg) -> None:
        if m.topic.endswith("/events") and json.loads(m.payload)["seq"] >= last:
            loop.call_soon_threadsafe(arrived.set)

    rec.listener = listener
    if not any(json.loads(m.payload)["seq"] >= last for m in rec.on(f"{BASE}/events")[-10:]):
        await asyncio.wait_for(arrived.wait(), 600)
    rec.listener = None
    received = time.perf_counter() - started
    return depth, acked, received


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=500)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between presses")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--inflight",
        type=int,
        default=20,
        help="the broker's max_inflight_messages (MQTT 5 Receive Maximum); Mosquitto's default 20",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        async with contextlib.AsyncExitStack() as stack:
            await measure(args, Path(tmp_dir), stack)


async def measure(args: argparse.Namespace, tmp: Path, stack: contextlib.AsyncExitStack) -> None:
    # Mosquitto's defaults (Receive Maximum 20) but for a persistent subscriber's queue.
    broker = Broker(tmp, inflight=args.inflight)
    stack.callback(broker.kill)  # whatever happens below, no broker is left running
    broker.start()
    rec = Recorder(broker.port, [f"{BASE}/events"], client_id="bench", persistent=True)
    rec.start()
    stack.callback(rec.close)
    hall = make_hall(tmp / "hall.db")
    await hall.start()
    stack.push_async_callback(hall.stop)
    sync = await start_sync(hall, mqtt_config(broker.port), options=OPTIONS)
    stack.push_async_callback(sync.stop)
    await until(lambda: sync.stats()["connected"], 10)
    lat, commits = await latency(hall, rec, args.presses, args.gap)
    ms = [x * 1000 for x in lat]
    commit_ms = [x * 1000 for x in commits]
    print(
        f"event -> subscriber latency over {len(ms)} keypad presses: "
        f"p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms, "
        f"mean {statistics.fmean(ms):.2f} ms, max {max(ms):.2f} ms; of which the "
        f"hall's commit (SQLite, synchronous=FULL): p50 {pct(commit_ms, 50):.2f} ms, "
        f"p99 {pct(commit_ms, 99):.2f} ms"
    )
    depth, acked, received = await drain(sync, hall, broker, rec, args.events)
    print(
        f"outbox drain after an outage: {depth} events acknowledged in {acked:.2f} s "
        f"({depth / acked:.0f} events/s, from the broker's restart, reconnect "
        f"included; {args.inflight} in flight); all at the subscriber after "
        f"{received:.2f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())

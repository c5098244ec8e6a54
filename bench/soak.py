"""The fault and soak run: a compressed hall day with the daemon killed, the broker stopped,
ports unplugged and fed garbage, fuzzed MQTT commands and the hall's day end (the night's
reset and the next day's start) in the middle; then every loss is counted.

    nice -n 10 .venv/bin/python bench/soak.py                 # long form: 50 kill -9s
    .venv/bin/python bench/soak.py --kills 5 --duration 90    # the CI form (tests/test_soak.py)

Real parts throughout: the hardware simulator (hall-daemon simulate) on TCP ports, a relay
per port that can be unplugged and can inject garbage, the real daemon process, a real
Mosquitto and a persistent subscriber recording everything. The daemon's clock runs as
fast as the simulator's (HALL_DAEMON_CLOCK) and passes the hall's reset hour
(`hall.day_reset_hour`) 45 % of the way through, so the day end happens under traffic and
faults: yesterday's tickets are cancelled (`day_end`), counters closed, numbers restart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hall_daemon.app import CLOCK_ENV  # noqa: E402
from hall_daemon.config import load_config  # noqa: E402
from hall_daemon.engine import DAY_STARTED, Engine  # noqa: E402
from hall_daemon.events import loads  # noqa: E402
from tests.daemon_harness import Daemon, free_port, hall_daemon, write_config  # noqa: E402
from tests.mqtt_broker import Broker, Recorder, publish  # noqa: E402

BASE = "hall/demo-hall"
TERMINAL = ("ticket.done", "ticket.no_show", "ticket.cancelled", "ticket.expired")


class PortRelay:
    """127.0.0.1:<port> → the simulator's port. `unplug()` drops the link and refuses new
    ones until `replug()`; `garbage()` writes junk towards the daemon, as a noisy line would."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._open = True
        self._closing = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                daemon_side, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._open:
                daemon_side.close()
                continue
            try:
                device_side = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                daemon_side.close()
                continue
            with self._lock:
                self._pairs.append((daemon_side, device_side))
            for a, b in ((daemon_side, device_side), (device_side, daemon_side)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def unplug(self) -> None:
        self._open = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def replug(self) -> None:
        self._open = True

    def garbage(self, rng: random.Random) -> int:
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        with self._lock:
            pairs = list(self._pairs)
        for daemon_side, _ in pairs:
            with contextlib.suppress(OSError):
                daemon_side.sendall(junk)
        return len(pairs)

    def close(self) -> None:
        self._closing = True
        self.unplug()
        self._listener.close()


def fuzz_command(rec: Recorder, rng: random.Random) -> None:
    """One hostile or broken command, as a confused backend or an attacker would send."""
    names = ["call_next", "take_ticket", "set_notice", "transfer", "nope", "../x", "#"]
    name = rng.choice(names).replace("#", "x")
    kind = rng.randrange(4)
    payload: bytes | dict[str, Any]
    if kind == 0:
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    elif kind == 1:
        payload = {"v": rng.choice([1, 2, "1", None]), "id": rng.choice(["", "x" * 500, 7])}
    elif kind == 2:
        payload = {"v": 1, "id": f"fz{rng.randrange(10**9)}", "counter": rng.choice([-1, 999, "a"])}
    else:
        payload = b'{"v":1,"id":"' + b"\xff" * 10 + b'"}'
    publish(rec, f"{BASE}/cmd/{name}", payload)


@dataclass
class SoakReport:
    faults: Counter[str] = field(default_factory=Counter)
    recovery_s: list[float] = field(default_factory=list)
    events: int = 0
    tickets: int = 0
    sim: dict[str, Any] = field(default_factory=dict)
    losses: int = 0
    problems: list[str] = field(default_factory=list)
    stop_s: float = 0.0
    day_ends: int = 0
    day_end_cancelled: int = 0

    def figures(self) -> str:
        rec = sorted(self.recovery_s)
        p50 = statistics.median(rec) if rec else 0.0
        p99 = rec[min(len(rec) - 1, int(len(rec) * 0.99))] if rec else 0.0
        return "\n".join(
            [
                f"faults injected: {sum(self.faults.values())} ({dict(self.faults)})",
                f"events: {self.events}  tickets: {self.tickets}  "
                f"simulator TICKET replies: {self.sim.get('tickets')}",
                f"day ends: {self.day_ends} ({self.day_end_cancelled} tickets cancelled "
                "with reason day_end)",
                f"losses: {self.losses}",
                f"recovery kill -9 → /healthz 200: p50 {p50:.2f} s, p99 {p99:.2f} s, "
                f"max {max(rec, default=0):.2f} s over {len(rec)} kills",
                f"graceful stop under traffic: {self.stop_s:.2f} s",
                f"problems: {self.problems or 'none'}",
            ]
        )


def _replay_waiting(config_path: Path, export: Path) -> tuple[list[Any], dict[str, int]]:
    config = load_config(config_path)
    engine = Engine(config.to_spec())
    log = [loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    for e in log:
        engine.apply(e.event)
    return log, {s.code: engine.state.waiting(s.code) for s in config.services}


def check_tickets(log: list[Any], report: SoakReport) -> None:
    """Every ticket is issued once and ends at most once; every ticket of a day that ended
    has exactly one terminal state. Numbers restart at each `hall.day_started`, so a ticket
    is (hall day, number): terminal events name the number of the day they belong to (the
    day end's cancellations come before the new day's `hall.day_started`)."""
    day = 0
    current: dict[str, tuple[int, str]] = {}
    issued: Counter[tuple[int, str]] = Counter()
    ends: Counter[tuple[int, str]] = Counter()
    for e in log:
        if e.type == DAY_STARTED:
            day += 1
            current = {}
        elif e.type == "ticket.issued":
            key = (day, e.data["number"])
            issued[key] += 1
            current[e.data["number"]] = key
        elif e.type in TERMINAL:
            ref = current.get(e.data["number"])
            if ref is None:
                report.problems.append(f"{e.type} for {e.data['number']} not issued that day")
                continue
            ends[ref] += 1
            if e.data.get("reason") == "day_end":
                report.day_end_cancelled += 1
    report.tickets = sum(issued.values())
    report.day_ends = max(day - 1, 0)  # the first `hall.day_started` opens the log's first day
    dup = [k for k, n in issued.items() if n > 1]
    if dup:
        report.problems.append(f"tickets issued twice: {dup[:5]}")
    twice = [k for k, n in ends.items() if n > 1]
    if twice:
        report.problems.append(f"tickets ending twice: {twice[:5]}")
    open_after = [k for k in issued if k[0] < day and ends[k] == 0]
    if open_after:
        report.problems.append(f"tickets of an ended day left open: {open_after[:5]}")


def hall_clock(duration: float, speed: float, reset_hour: int, tz: Any) -> str:
    """HALL_DAEMON_CLOCK for a day end 45 % of the way through the run, at `speed`."""
    today = datetime.now(tz).date()
    reset = datetime.combine(today, datetime.min.time().replace(hour=reset_hour), tz)
    start = reset - timedelta(seconds=0.45 * duration * speed)
    return f"{time.time():.3f}={start.isoformat()}x{speed:g}"


def run_soak(work: Path, *, kills: int, duration: float, speed: float, seed: int) -> SoakReport:
    rng = random.Random(seed)
    report = SoakReport()
    work.mkdir(parents=True, exist_ok=True)
    sim_dir, daemon_dir = work / "sim", work / "daemon"
    sim_dir.mkdir(exist_ok=True)
    daemon_dir.mkdir(exist_ok=True)
    dispenser, bus = free_port(), free_port()
    relays = [PortRelay(dispenser), PortRelay(bus)]
    broker = Broker(work, "broker").start()
    web = free_port()
    mqtt = {r"(?m)^  port: 1883": f"  port: {broker.port}"}
    sim_config = write_config(
        sim_dir,
        web_port=free_port(),
        **{
            r"127\.0\.0\.1:7001": f"127.0.0.1:{dispenser}",
            r"127\.0\.0\.1:7002": f"127.0.0.1:{bus}",
        },
        **mqtt,
    )
    config = write_config(
        daemon_dir,
        web_port=web,
        **{
            r"127\.0\.0\.1:7001": f"127.0.0.1:{relays[0].port}",
            r"127\.0\.0\.1:7002": f"127.0.0.1:{relays[1].port}",
        },
        **mqtt,
    )
    rec = Recorder(broker.port, [f"{BASE}/#"], client_id="soak-recorder", persistent=True).start()
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "hall_daemon", "simulate", "-c", str(sim_config)),
            *("--speed", str(speed), "--start", "08:30", "--seed", str(seed)),
            *("--duration", str(duration), "--garbage-rate", "0.01", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    spec = load_config(config).to_spec()
    clock = hall_clock(duration, speed, spec.day_reset_hour, spec.tz())
    daemon = Daemon(config, web, env={CLOCK_ENV: clock})
    try:
        daemon.start()
        # The day's faults, at random moments in its first 85 %.
        plan: list[tuple[float, str]] = [
            (rng.uniform(2, duration * 0.85), "kill") for _ in range(kills)
        ]
        plan.append((rng.uniform(0.2, 0.4) * duration, "broker_stop"))
        plan += [(rng.uniform(0.1, 0.8) * duration, f"unplug{i}") for i in range(len(relays))]
        plan += [(rng.uniform(0.05, 0.85) * duration, f"garbage{i % 2}") for i in range(10)]
        plan += [(rng.uniform(0.05, 0.85) * duration, "fuzz") for _ in range(20)]
        plan.sort()
        started = time.monotonic()
        broker_back_at: float | None = None
        for at, fault in plan:
            while time.monotonic() - started < at:
                if broker_back_at is not None and time.monotonic() >= broker_back_at:
                    broker.start()
                    broker_back_at = None
                time.sleep(0.05)
            if fault == "kill":
                assert daemon.proc is not None
                daemon.proc.kill()
                daemon.proc.wait()
                t0 = time.monotonic()
                daemon.start(timeout=60)
                report.recovery_s.append(time.monotonic() - t0)
            elif fault == "broker_stop":
                if broker_back_at is not None:
                    continue
                broker.stop()
                broker_back_at = time.monotonic() + max(3.0, duration * 0.1)
            elif fault.startswith("unplug"):
                relay = relays[int(fault[-1])]
                relay.unplug()
                time.sleep(2.0)
                relay.replug()
            elif fault.startswith("garbage"):
                relays[int(fault[-1])].garbage(rng)
            elif fault == "fuzz":
                if not broker.running:
                    continue
                fuzz_command(rec, rng)
            report.faults[fault.rstrip("0123456789")] += 1
        if broker_back_at is not None:
            while time.monotonic() < broker_back_at:
                time.sleep(0.05)
            broker.start()
        out, _ = sim.communicate(timeout=duration + 60)
        report.sim = json.loads(out[out.index("{") :]) if "{" in out else {}

        # Let the outbox drain to the subscriber, then compare the live state with the log.
        deadline = time.monotonic() + 60
        last = -1
        while time.monotonic() < deadline:
            status, health = daemon.get("/healthz")
            seqs = {e["seq"] for e in rec.events(f"{BASE}/events")}
            last = max(seqs, default=0)
            if status == 200 and seqs and len(seqs) == last == health["seq"]:
                break
            time.sleep(0.5)
        status, queues = daemon.get("/api/queues")
        if status != 200:
            report.problems.append(f"/api/queues answered {status}")

        # Graceful stop under (a burst of) traffic: SIGTERM must exit 0 and leave `stopped`.
        for _ in range(5):
            fuzz_command(rec, rng)
        t0 = time.monotonic()
        code = daemon.stop(timeout=15)
        report.stop_s = time.monotonic() - t0
        if code != 0:
            report.problems.append(f"SIGTERM exit code {code}")
        deadline = time.monotonic() + 10
        while rec.status() != "stopped" and time.monotonic() < deadline:
            time.sleep(0.1)
        if rec.status() != "stopped":
            report.problems.append(f"status on the broker is {rec.status()!r}, not 'stopped'")

        export = work / "events.jsonl"
        done = hall_daemon("events", "export", "-c", str(config), "-o", str(export))
        if done.returncode != 0:
            report.problems.append(f"events export failed: {done.stderr}")
            return report
        log, waiting = _replay_waiting(config, export)
        report.events = len(log)
        if [e.seq for e in log] != list(range(1, len(log) + 1)):
            report.problems.append("the event log has gaps")
        published = {e["seq"] for e in rec.events(f"{BASE}/events")}
        missing = set(range(1, len(log) + 1)) - published
        report.losses += len(missing)
        if missing:
            report.problems.append(f"{len(missing)} events never reached the subscriber")
        check_tickets(log, report)
        if report.day_ends < 1:
            report.problems.append("no day end happened during the run")
        acked = int(report.sim.get("tickets", 0))
        if acked > report.tickets:  # a ticket the dispenser printed that the log does not hold
            report.losses += acked - report.tickets
            report.problems.append(
                f"{acked - report.tickets} dispensed tickets missing from the log"
            )
        live = {s["service"]: s["waiting"] for s in queues.get("services", [])} if queues else {}
        if live != waiting:
            report.problems.append(f"/api/queues {live} != replayed log {waiting}")
        text = daemon.log_text()
        if "Traceback" in text:
            report.problems.append(f"{text.count('Traceback')} tracebacks in the daemon log")
        return report
    finally:
        sim.kill()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
        rec.close()
        broker.kill()
        for r in relays:
            r.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--duration", type=float, default=600.0, help="real seconds of traffic")
    parser.add_argument("--speed", type=float, default=48.0, help="8 h in 10 min")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="soak-")))
    args = parser.parse_args()
    print(
        f"soak: {args.kills} kills, {args.duration:.0f} s at x{args.speed:g}, seed {args.seed}",
        flush=True,
    )
    report = run_soak(
        args.work, kills=args.kills, duration=args.duration, speed=args.speed, seed=args.seed
    )
    print(report.figures())
    raise SystemExit(1 if report.problems or report.losses else 0)


if __name__ == "__main__":
    main()

"""Hardware simulator: the hall's dispensers, keypads, evaluators and window screens.

It plays the devices of config.yaml over the bytes of serial-protocols.md, as the *server*
side of each port, so the daemon connects to it exactly as it would to a ser2net box:

- every port whose URL is ``socket://127.0.0.1:<n>`` (or ``localhost``) is listened on with
  TCP (port 0 picks a free port; `Simulator.endpoints` says which);
- with ``--pty DIR`` every port becomes a pty pair instead (a real tty for the daemon's serial
  code), ``DIR/<port name>`` being the path the daemon opens.

Dispensers (line protocol) say HELLO and then send TAKE for applicants arriving as a
non-homogeneous Poisson process (`arrival_rate`: morning and afternoon peaks, a lunch dip),
retrying a lost reply with the same request id. Each keypad is played by a clerk who calls,
recalls, serves, transfers, suspends, pauses for lunch and asks for a rating; the
counter's evaluator answers the host's prompt with a score. Screens record their text.

Two clocks: human behaviour (arrivals, service times, lunch) runs on the simulated clock,
compressed by ``--speed``; protocol timers (300 ms keypad retransmission, 2 s reply timeout,
30 s PING) are the devices' firmware and stay in real seconds, or a fast simulation would
retransmit before the daemon could possibly have answered.

    python -m drivers.simulator -c config.yaml --speed 60 --seed 1 --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import select
import signal
import sys
import time
import tty
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from drivers import bus68, lineproto
from drivers.bus68 import (
    DEVICE_FUNCTIONS,
    Bus68Decoder,
    Display,
    Frame,
    Key,
    KeyPress,
    ProtocolError,
    Rating,
)
from drivers.lineproto import Line, LineDecoder, LineError, Take
from hall_daemon.config import DeviceConfig, HallConfig, PortConfig
from hall_daemon.waits import wait_first

log = logging.getLogger("drivers.simulator")

__all__ = [
    "DEFAULT_TRAFFIC",
    "SimClock",
    "SimSettings",
    "SimStats",
    "Simulator",
    "TrafficProfile",
    "add_arguments",
    "arrival_rate",
    "listen_address",
    "main",
    "next_arrival",
    "run_from_args",
    "run_simulator",
    "settings_from_args",
]

FIRMWARE = "1.0"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DAY = 24 * 3600.0
# Paper roll: a dispenser says LOW this many tickets before the roll ends.
PAPER_LOW_MARK = 20
RATING_WEIGHTS = {1: 2, 2: 3, 3: 10, 4: 30, 5: 55}  # percent; halls see mostly 4s and 5s


# -- the simulated clock -----------------------------------------------------------------------


class SimClock:
    """Simulated seconds since midnight of day 0, running `speed` times faster than real time."""

    def __init__(
        self, start: float, speed: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed {speed} must be positive")
        self.speed = speed
        self._start = start
        self._timer = timer
        self._t0 = timer()

    def now(self) -> float:
        return self._start + (self._timer() - self._t0) * self.speed

    def hour(self) -> float:
        """Time of day in hours, 0 <= hour < 24."""
        return (self.now() % DAY) / 3600.0

    def day(self) -> int:
        return int(self.now() // DAY)

    def real(self, sim_seconds: float) -> float:
        return max(sim_seconds, 0.0) / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real(sim_seconds))

    async def sleep_until(self, sim_time: float) -> None:
        await asyncio.sleep(self.real(sim_time - self.now()))

    def label(self) -> str:
        t = self.now()
        day, rest = divmod(int(t), int(DAY))
        h, rest = divmod(rest, 3600)
        m, s = divmod(rest, 60)
        return f"{h:02d}:{m:02d}:{s:02d}" + (f"+{day}d" if day else "")


def parse_clock(text: str) -> float:
    """Seconds after midnight of a time of day written HH:MM."""
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"not a time of day HH:MM: {text!r}") from None
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"not a time of day HH:MM: {text!r}")
    return h * 3600.0 + m * 60.0


# -- arrivals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficProfile:
    """The shape of a hall's day: applicants per hour as a function of the time of day.

    Heights are fractions of `peak_per_hour`; peaks are Gaussian bumps (centre hour, width in
    hours, height) on a flat base, and the lunch window multiplies everything by `lunch_factor`
    (the public comes less when half the counters are at lunch).
    """

    peak_per_hour: float = 60.0
    opens: float = 8.5
    closes: float = 17.5
    base: float = 0.3
    morning: tuple[float, float, float] = (10.0, 0.8, 0.7)
    afternoon: tuple[float, float, float] = (15.0, 0.8, 0.55)
    lunch: tuple[float, float] = (12.0, 13.0)
    lunch_factor: float = 0.5

    def max_rate(self) -> float:
        """An upper bound of `arrival_rate` over the day (for thinning)."""
        return self.peak_per_hour * (self.base + self.morning[2] + self.afternoon[2])


DEFAULT_TRAFFIC = TrafficProfile()


def arrival_rate(hour: float, profile: TrafficProfile = DEFAULT_TRAFFIC) -> float:
    """Applicants per hour arriving at `hour` (time of day, wraps at 24)."""
    hour %= 24.0
    if not profile.opens <= hour < profile.closes:
        return 0.0
    level = profile.base
    for centre, width, height in (profile.morning, profile.afternoon):
        level += height * math.exp(-0.5 * ((hour - centre) / width) ** 2)
    if profile.lunch[0] <= hour < profile.lunch[1]:
        level *= profile.lunch_factor
    return profile.peak_per_hour * level


def next_arrival(
    rng: random.Random, now: float, profile: TrafficProfile = DEFAULT_TRAFFIC
) -> float:
    """The simulated time (seconds) of the next arrival after `now`, by thinning
    (Lewis & Shedler): candidates at the bound rate, each kept with probability rate/bound."""
    bound = profile.max_rate()
    if bound <= 0 or profile.opens >= profile.closes:
        return math.inf
    t = now
    # A profile that is zero all day despite a positive bound must not loop forever.
    horizon = now + 7 * DAY
    while t < horizon:
        t += rng.expovariate(bound / 3600.0)
        if rng.random() * bound < arrival_rate(t / 3600.0, profile):
            return t
    return math.inf


def lognormal_minutes(rng: random.Random, mean: float, sigma: float = 0.5) -> float:
    """A service time in simulated seconds with the given mean in minutes."""
    mu = math.log(mean) - sigma * sigma / 2
    return rng.lognormvariate(mu, sigma) * 60.0


def rating_score(rng: random.Random) -> int:
    scores = list(RATING_WEIGHTS)
    return rng.choices(scores, weights=[RATING_WEIGHTS[s] for s in scores])[0]


# -- settings and statistics -------------------------------------------------------------------


@dataclass(frozen=True)
class SimSettings:
    speed: float = 1.0
    start: float = 8.5 * 3600  # simulated clock at start, seconds after midnight
    seed: int | None = None  # None: a random seed, reported in the statistics
    garbage_rate: float = 0.0  # probability of junk bytes before a frame or line we send
    drop_acks: float = 0.0  # probability of ignoring (losing) a frame or line from the host
    checksum_rate: float = 0.5  # fraction of TAKE lines sent with *HH
    priority_rate: float = 0.08
    show_rate: float = 0.9  # an applicant called turns up
    transfer_rate: float = 0.03
    suspend_rate: float = 0.02
    # Mean service minutes by service code; "*" for every service not named. Unset services
    # get 4, 5, 6, 4, ... minutes in config order.
    service_minutes: Mapping[str, float] = field(default_factory=dict)
    # Relative weights of services at the dispenser; None: how many counters serve each.
    mix: Mapping[str, float] | None = None
    traffic: TrafficProfile = DEFAULT_TRAFFIC
    pty_dir: Path | None = None
    # Firmware timers, real seconds (see the module docstring).
    ack_timeout: float = 0.3
    retransmits: int = 3
    reply_timeout: float = 2.0
    line_retries: int = 3
    ping_interval: float = 30.0


@dataclass
class SimStats:
    seed: int = 0
    connections: int = 0
    # dispensers
    arrivals: int = 0
    takes: int = 0  # TAKE requests (first attempts)
    tickets: int = 0  # TICKET replies
    replies: int = 0  # replies matched to a request, any kind
    errors: Counter[str] = field(default_factory=Counter)  # ERR replies by code
    retries: int = 0  # requests re-sent with the same id (timeout or ERR 500)
    gave_up: int = 0  # requests that got no reply after every retry
    unmatched_replies: int = 0  # late or duplicate replies, or replies to nothing
    reply_checksum_mismatch: int = 0  # reply with/without *HH unlike its request
    status_pushes: int = 0
    pings: int = 0
    paper: Counter[str] = field(default_factory=Counter)
    lines_sent: int = 0
    lines_received: int = 0
    bad_lines: int = 0
    # bus
    keys: Counter[str] = field(default_factory=Counter)  # presses by key (not retransmissions)
    calls_seen: int = 0  # keypad LCDs showing a new current ticket
    ratings_sent: int = 0
    ratings_declined: int = 0
    prompts: int = 0
    beeps: int = 0
    screen_texts: int = 0
    retransmits: int = 0
    unacked: int = 0  # device frames never echoed after every retransmission
    echoes_received: int = 0
    echoes_sent: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bad_frames: int = 0  # framing errors and frames whose content the contract forbids
    frames_for_others: int = 0  # host frames to addresses nobody here plays
    unexpected_frames: int = 0  # device frames that echo nothing we sent
    # faults injected
    dropped: int = 0
    garbage_bursts: int = 0
    task_errors: int = 0
    last_screen_text: dict[str, str] = field(default_factory=dict)  # "0x41/0" -> text

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            if isinstance(value, Counter):
                out[name] = dict(sorted(value.items()))
            elif isinstance(value, dict):
                out[name] = dict(value)
            else:
                out[name] = value
        return out


# -- connections -------------------------------------------------------------------------------


class Conn(Protocol):
    """One byte stream to the daemon."""

    async def read(self) -> bytes:
        """Whatever arrived; b"" once the daemon is gone."""
        ...

    async def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _StreamConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(4096)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


class _FdConn:
    """Our end of a pty pair (a character device asyncio's streams do not open)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._reader = asyncio.StreamReader()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)
        self._closed = False

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            # EIO on the master: the daemon closed its side of the pty.
            data = b""
        if data:
            self._reader.feed_data(data)
        else:
            self._loop.remove_reader(self._fd)
            self._reader.feed_eof()

    async def read(self) -> bytes:
        return await self._reader.read(4096)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise ConnectionError("pty closed")
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                # The pty's buffer is full until the daemon reads; wait rather than spin.
                await asyncio.sleep(0.01)
                continue
            view = view[n:]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            os.close(self._fd)


def listen_address(url: str) -> tuple[str, int] | None:
    """(host, port) to listen on for a ``socket://127.0.0.1:<n>`` URL; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "socket" or parts.hostname not in LOCAL_HOSTS:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return None
    return ("127.0.0.1" if parts.hostname == "localhost" else parts.hostname, port)


async def _finished(future: asyncio.Future[Any], timeout: float | None) -> bool:
    """Whether `future` is done within `timeout` seconds; it is never cancelled.

    Not asyncio.wait_for: in Python 3.11 it can swallow the caller's cancellation when the
    future completes at the same moment, which left a cancelled session's tasks running."""
    if future.done():
        return True
    done, _ = await asyncio.wait([future], timeout=timeout)
    return bool(done)


class _Tasks:
    """The tasks of one connection's session: all cancelled when the daemon goes away."""

    def __init__(self, stats: SimStats) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = stats

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionError):
            self._stats.task_errors += 1
            log.error("simulator task failed", exc_info=exc)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- a port and its devices --------------------------------------------------------------------


class _Player:
    """Plays the devices of one port over whatever connection the daemon makes to it."""

    def __init__(self, sim: Simulator, port: PortConfig) -> None:
        self.sim = sim
        self.port = port
        self.stats = sim.stats
        self.clock = sim.clock
        self.settings = sim.settings
        self.faults = sim.rng("faults", port.name)
        self.conn: Conn | None = None

    def rng(self, *key: object) -> random.Random:
        return self.sim.rng(self.port.name, *key)

    async def session(self, conn: Conn) -> None:
        raise NotImplementedError

    def busy(self) -> bool:
        """Whether an exchange with the host is in hand (a request awaiting its reply)."""
        return False

    def lost(self) -> bool:
        """--drop-acks: this frame or line from the host never arrived."""
        if self.settings.drop_acks and self.faults.random() < self.settings.drop_acks:
            self.stats.dropped += 1
            return True
        return False

    async def _write(self, data: bytes, junk: bytes) -> None:
        conn = self.conn
        if conn is None:
            raise ConnectionError("the daemon is not connected")
        # One write, so junk and frame are never split by another device's frame.
        await conn.write(junk + data)


# -- dispensers (line protocol) ----------------------------------------------------------------


@dataclass
class _Pending:
    request_id: int | None
    checksummed: bool
    reply: asyncio.Future[Line]


class DispenserPlayer(_Player):
    def __init__(self, sim: Simulator, port: PortConfig, device: DeviceConfig) -> None:
        super().__init__(sim, port)
        self.device_id = device.id or port.name
        # Two streams: arrivals run in their own task, and sharing one generator would make
        # each request's draws depend on how the tasks interleave.
        self._rng = self.rng("dispenser", self.device_id)
        self._arrival_rng = self.rng("arrivals", self.device_id)
        self._next_id = 0
        self._pending: _Pending | None = None
        self._lock = asyncio.Lock()
        self._last_sent = 0.0
        # The roll in the printer at start is part used, so a demo sees PAPER LOW sooner.
        self.paper_left = self._rng.randint(3 * PAPER_LOW_MARK, 400)
        self._refill_at: float | None = None
        self.statuses: dict[str, tuple[int, int]] = {}
        codes = [s.code for s in sim.config.services]
        weights = [self._weight(code) for code in codes]
        if not any(weights):
            weights = [1.0] * len(codes)
        self._codes, self._weights = codes, weights

    def busy(self) -> bool:
        return self._lock.locked()

    def _weight(self, code: str) -> float:
        mix = self.settings.mix
        if mix is not None:
            return float(mix.get(code, 0.0))
        # Load in proportion to capacity keeps every queue moving in a long demo.
        return float(sum(code in c.services for c in self.sim.config.counters))

    async def session(self, conn: Conn) -> None:
        self.conn = conn
        self._pending = None
        self._last_sent = time.monotonic()  # or the first PING would race the HELLO
        tasks = _Tasks(self.stats)
        try:
            tasks.spawn(self._behave())
            tasks.spawn(self._pinger())
            await self._read_loop(conn)
        finally:
            await tasks.cancel_all()
            self.conn = None

    async def _read_loop(self, conn: Conn) -> None:
        decoder = LineDecoder()
        while data := await conn.read():
            for item in decoder.feed(data):
                if isinstance(item, LineError):
                    self.stats.bad_lines += 1
                    log.warning("%s: bad line from the host: %s", self.device_id, item.reason)
                    continue
                self.stats.lines_received += 1
                if not self.lost():
                    self._on_line(item)

    def _on_line(self, line: Line) -> None:
        words = line.words
        if words and words[0] == "STATUS":
            # Recorded, never answered: the contract has no reply to a push.
            self.stats.status_pushes += 1
            if len(words) == 4 and words[2].isdigit() and words[3].isdigit():
                self.statuses[words[1]] = (int(words[2]), int(words[3]))
            log.debug("%s: %s", self.device_id, " ".join(words))
            return
        pending = self._pending
        if pending is None or pending.reply.done() or line.request_id != pending.request_id:
            self.stats.unmatched_replies += 1
            log.debug("%s: unmatched reply %s", self.device_id, " ".join(words))
            return
        if line.checksummed != pending.checksummed:
            self.stats.reply_checksum_mismatch += 1
        pending.reply.set_result(line)

    async def _send_line(self, payload: bytes) -> None:
        junk = b""
        if self.settings.garbage_rate and self.faults.random() < self.settings.garbage_rate:
            # Bytes 80..BF alone are never valid UTF-8, so the host drops the junk line
            # without answering it (an answer would look like a reply to our request).
            n = self.faults.randint(1, 12)
            junk = bytes(self.faults.randint(0x80, 0xBF) for _ in range(n)) + b"\n"
            self.stats.garbage_bursts += 1
        self.stats.lines_sent += 1
        self._last_sent = time.monotonic()
        await self._write(payload, junk)

    async def request(
        self, words: Sequence[str], request_id: int | None = None, checksum: bool = False
    ) -> Line | None:
        """Send a request and wait for its reply, re-sending the same bytes (same request id)
        after each timeout or ERR 500, `line_retries` times; None if no reply ever came, or
        if the simulator is closing (nothing new is started then)."""
        if self.sim.closing:
            return None
        async with self._lock:
            payload = lineproto.encode_line(words, request_id, checksum)
            loop = asyncio.get_running_loop()
            attempts = 1 + self.settings.line_retries
            for attempt in range(attempts):
                # A fresh future per attempt only after a 500: a late reply to an earlier
                # attempt answers the retry as well, being the same request.
                if self._pending is None or self._pending.reply.done():
                    self._pending = _Pending(request_id, checksum, loop.create_future())
                reply_future = self._pending.reply
                if attempt:
                    self.stats.retries += 1
                    log.info("%s: retry %s", self.device_id, payload.decode().rstrip())
                await self._send_line(payload)
                if not await _finished(reply_future, self.settings.reply_timeout):
                    continue
                reply = reply_future.result()
                self.stats.replies += 1
                if reply.words[:1] == ("ERR",):
                    code = reply.words[1] if len(reply.words) > 1 else "?"
                    self.stats.errors[code] += 1
                    if code == lineproto.UNCACHED_CODE and attempt + 1 < attempts:
                        await asyncio.sleep(self.settings.reply_timeout / 4)
                        continue
                return reply
            self._pending = None
            self.stats.gave_up += 1
            log.warning("%s: no reply to %s", self.device_id, payload.decode().rstrip())
            return None

    def _request_id(self) -> int:
        self._next_id = self._next_id % lineproto.MAX_REQUEST_ID + 1
        return self._next_id

    async def _behave(self) -> None:
        reply = await self.request(("HELLO", self.device_id, "dispenser", FIRMWARE))
        if reply is not None and reply.words != ("OK",):
            log.warning("%s: HELLO answered %s", self.device_id, " ".join(reply.words))
        arrivals: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        tasks = _Tasks(self.stats)
        tasks.spawn(self._arrivals(arrivals))
        try:
            while True:
                service, priority = await arrivals.get()
                await self._paper()
                await self._take(service, priority)
        finally:
            await tasks.cancel_all()

    async def _arrivals(self, out: asyncio.Queue[tuple[str, bool]]) -> None:
        rng = self._arrival_rng
        t = self.clock.now()
        while True:
            # Absolute times, so time spent serving one applicant does not thin the process.
            t = next_arrival(rng, t, self.settings.traffic)
            if math.isinf(t):
                return
            await self.clock.sleep_until(t)
            self.stats.arrivals += 1
            service = rng.choices(self._codes, weights=self._weights)[0]
            out.put_nowait((service, rng.random() < self.settings.priority_rate))

    async def _take(self, service: str, priority: bool) -> None:
        if self.sim.closing:
            return
        rid = self._request_id()
        checksum = self._rng.random() < self.settings.checksum_rate
        self.stats.takes += 1
        reply = await self.request(lineproto.request_words(Take(service, priority)), rid, checksum)
        if reply is None:
            return
        words = reply.words
        if words[:1] == ("TICKET",) and len(words) >= 3:
            self.stats.tickets += 1
            self.paper_left -= 1
            self.sim.note_ticket(words[1], words[2])
            log.info(
                "%s %s: TAKE %s%s #%d -> %s",
                self.clock.label(),
                self.device_id,
                service,
                " PRIORITY" if priority else "",
                rid,
                " ".join(words),
            )
        else:
            log.info(
                "%s %s: TAKE %s #%d -> %s",
                self.clock.label(),
                self.device_id,
                service,
                rid,
                " ".join(words),
            )

    async def _paper(self) -> None:
        """The roll runs low, staff change it a while later; out of paper, applicants wait."""
        if self.paper_left <= PAPER_LOW_MARK and self._refill_at is None:
            self._refill_at = self.clock.now() + self._rng.uniform(5, 25) * 60
            await self._say_paper("LOW")
        if self.paper_left <= 0:
            await self._say_paper("OUT")
        if self._refill_at is not None and (
            self.paper_left <= 0 or self.clock.now() >= self._refill_at
        ):
            await self.clock.sleep_until(self._refill_at)
            self.paper_left = self._rng.randint(300, 500)
            self._refill_at = None
            await self._say_paper("OK")

    async def _say_paper(self, state: str) -> None:
        self.stats.paper[state] += 1
        log.info("%s %s: PAPER %s", self.clock.label(), self.device_id, state)
        await self.request(("PAPER", state))

    async def _pinger(self) -> None:
        interval = self.settings.ping_interval
        while True:
            due = self._last_sent + interval - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
                continue
            self.stats.pings += 1
            reply = await self.request(("PING",))
            if reply is not None and reply.words != ("PONG",):
                log.warning("%s: PING answered %s", self.device_id, " ".join(reply.words))


# -- the counter bus (protocol 68) -------------------------------------------------------------


class _BusDevice:
    def __init__(self, bus: BusPlayer, device: DeviceConfig) -> None:
        assert device.address is not None  # the config requires one on a bus68 port
        self.bus = bus
        self.address = device.address
        self.counter = device.counter
        self.kind = device.kind
        self.seq = 0
        self._expect: Frame | None = None
        self._acked: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def transmit(self, frame: Frame) -> bool:
        """Send a device frame; re-send the same bytes every `ack_timeout` until echoed, at
        most `retransmits` times. False if the host never echoed it."""
        settings = self.bus.settings
        async with self._lock:
            self._expect = frame
            self._acked = asyncio.get_running_loop().create_future()
            try:
                for attempt in range(1 + settings.retransmits):
                    if attempt:
                        self.bus.stats.retransmits += 1
                        log.debug("bus %#04x: retransmit seq %d", self.address, frame.data[0])
                    await self.bus.send(frame)
                    if await _finished(self._acked, settings.ack_timeout):
                        return True
                self.bus.stats.unacked += 1
                log.warning("bus %#04x: no echo for %s", self.address, bus68.encode(frame).hex())
                return False
            finally:
                self._expect = None
                self._acked = None

    def on_echo(self, frame: Frame) -> bool:
        if frame == self._expect and self._acked is not None and not self._acked.done():
            self._acked.set_result(None)
            return True
        return False


class Keypad(_BusDevice):
    def __init__(self, bus: BusPlayer, device: DeviceConfig) -> None:
        super().__init__(bus, device)
        self.waiting: int | None = None
        self.ticket: int | None = None
        self.display_known = False
        self.generation = 0  # DISPLAY frames received
        self.changed = asyncio.Event()

    async def press(self, key: Key, digits: str = "") -> bool:
        if self.bus.sim.closing:
            return False
        self.bus.stats.keys[key.name] += 1
        frame = bus68.build(KeyPress(self.address, self.next_seq(), digits, key))
        return await self.transmit(frame)

    def on_display(self, message: Display) -> None:
        if message.ticket is not None and message.ticket != self.ticket:
            self.bus.stats.calls_seen += 1
        self.waiting, self.ticket = message.waiting, message.ticket
        self.display_known = True
        self.generation += 1
        self.changed.set()

    def on_beep(self) -> None:
        self.bus.stats.beeps += 1
        self.changed.set()


class Evaluator(_BusDevice):
    def __init__(self, bus: BusPlayer, device: DeviceConfig) -> None:
        super().__init__(bus, device)
        self._rng = bus.rng("evaluator", self.address)
        self.rating = False  # an applicant is deciding; a repeated prompt changes nothing
        self.done = asyncio.Event()

    def on_prompt(self) -> None:
        self.bus.stats.prompts += 1
        if not self.rating:
            self.rating = True
            self.bus.spawn(self._rate())

    async def _rate(self) -> None:
        try:
            await self.bus.clock.sleep(self._rng.uniform(5, 20))
            if self.bus.sim.closing:
                return
            if self._rng.random() < 0.9:
                score = rating_score(self._rng)
                frame = bus68.build(Rating(self.address, self.next_seq(), score))
                self.bus.stats.ratings_sent += 1
                log.info("%s counter %s: rating %d", self.bus.clock.label(), self.counter, score)
                await self.transmit(frame)
            else:
                self.bus.stats.ratings_declined += 1
        finally:
            self.rating = False
            self.done.set()


class Clerk:
    """The person at a counter, pressing the counter's keypad."""

    def __init__(
        self, bus: BusPlayer, keypad: Keypad, evaluator: Evaluator | None, lunch: bool
    ) -> None:
        self.bus = bus
        self.keypad = keypad
        self.evaluator = evaluator
        self.clock = bus.clock
        self.settings = bus.settings
        self.counter = keypad.counter
        self._rng = bus.rng("clerk", keypad.address)
        services = next((c.services for c in bus.sim.config.counters if c.id == self.counter), ())
        self.services: tuple[str, ...] = services
        self.lunch: tuple[float, float] | None = None
        if lunch:
            start = self._rng.uniform(11.75, 12.25)
            self.lunch = (start, start + self._rng.uniform(50, 70) / 60)
        self.lunch_day = -1
        self.paused = False
        self.current: int | None = None
        self.suspended: list[float] = []  # when each suspended applicant is back, sim time

    def _log(self, what: str) -> None:
        log.info("%s counter %s: %s", self.clock.label(), self.counter, what)

    async def press(self, key: Key, digits: str = "") -> bool:
        return await self.keypad.press(key, digits)

    def _real(self, sim_seconds: float, floor: float) -> float:
        # Waits for the host are protocol latency: never shorter than `floor` real seconds.
        return max(self.clock.real(sim_seconds), floor)

    async def _wait_change(self, sim_seconds: float, floor: float = 0.05) -> None:
        kp = self.keypad
        kp.changed.clear()
        await wait_first(kp.changed, timeout=self._real(sim_seconds, floor))

    def _in_lunch(self) -> bool:
        if self.lunch is None:
            return False
        return self.lunch[0] <= self.clock.hour() < self.lunch[1]

    async def run(self) -> None:
        started = time.monotonic()
        last_probe = -math.inf
        while True:
            if self._in_lunch() and (self.paused or self.lunch_day != self.clock.day()):
                await self._take_lunch()
                continue
            if self.paused:
                # Back from lunch (or reconnected after it): open the counter again.
                if await self.press(Key.PAUSE):
                    self.paused = False
                    self._log("open again")
                else:
                    await asyncio.sleep(1.0)
                continue
            kp = self.keypad
            if self.suspended and self.suspended[0] <= self.clock.now():
                await self._finish()
                self.suspended.pop(0)
                self._log("calls back a suspended ticket")
                await self._call(Key.CONFIRM, "3")
                continue
            probe = (
                not kp.display_known
                and time.monotonic() - started > 3.0
                and time.monotonic() - last_probe > self._real(120, 3.0)
            )
            if (kp.waiting or 0) > 0 or probe:
                if probe:
                    last_probe = time.monotonic()
                await self._call(Key.NEXT)
                continue
            if self.current is not None:
                await self._finish()
                continue
            await self._wait_change(60)

    async def _finish(self) -> None:
        if self.current is not None:
            await self.press(Key.DONE)
            self.current = None

    async def _call(self, key: Key, digits: str = "") -> None:
        kp = self.keypad
        generation, before = kp.generation, kp.ticket
        ok = await self.press(key, digits)
        self.current = None  # NEXT finished it, and CONFIRM 03 came after a DONE
        if not ok:
            await asyncio.sleep(1.0)  # the host is not listening; do not hammer it
            return
        ticket = await self._called(generation, before)
        if ticket is None:
            # The LCD promised work but nobody was called: wait for it to change.
            await self._wait_change(60, floor=0.5)
            return
        await self._attend(ticket)

    async def _called(self, generation: int, before: int | None) -> int | None:
        """The ticket the host called after a key press, from the LCD's right three digits.

        The first DISPLAY after the press that shows a different ticket; failing that within
        the timeout, whatever the last DISPLAY since the press showed (the same number called
        again, or blank: nobody)."""
        kp = self.keypad
        deadline = time.monotonic() + max(2.0, self.settings.reply_timeout)
        while True:
            if kp.generation > generation and kp.ticket != before:
                return kp.ticket
            left = deadline - time.monotonic()
            if left <= 0:
                return kp.ticket if kp.generation > generation else None
            kp.changed.clear()
            await wait_first(kp.changed, timeout=left)

    async def _attend(self, ticket: int) -> None:
        rng, clock, settings = self._rng, self.clock, self.settings
        self.current = ticket
        service = self.bus.sim.guess_service(ticket, self.services)
        self._log(f"calls {ticket:03d} ({service})")
        if rng.random() >= settings.show_rate:
            for _ in range(2):
                await clock.sleep(rng.uniform(30, 60))
                await self.press(Key.RECALL)
            await clock.sleep(rng.uniform(20, 40))
            await self.press(Key.CONFIRM, "6")
            self._log(f"{ticket:03d} did not come")
            self.current = None
            return
        recalls = 0 if rng.random() < 0.8 else rng.choice((1, 2))
        for _ in range(recalls):
            await clock.sleep(rng.uniform(30, 60))
            await self.press(Key.RECALL)
        await clock.sleep(rng.uniform(15, 45))  # walking up to the counter
        duration = lognormal_minutes(rng, self.bus.sim.service_minutes(service))
        r = rng.random()
        targets = [n for code, n in self.bus.sim.service_numbers.items() if code != service]
        if r < settings.transfer_rate and targets:
            await clock.sleep(duration * 0.3)
            target = rng.choice(targets)
            await self.press(Key.TRANSFER, str(target))
            self._log(f"transfers {ticket:03d} to service {target}")
            self.current = None
            return
        if r < settings.transfer_rate + settings.suspend_rate:
            await clock.sleep(duration * 0.3)
            await self.press(Key.CONFIRM, "0")
            self.suspended.append(clock.now() + rng.uniform(10, 30) * 60)
            self._log(f"suspends {ticket:03d} (missing papers)")
            self.current = None
            return
        await clock.sleep(duration)
        ev = self.evaluator
        if ev is not None:
            ev.done.clear()
            if await self.press(Key.RATE):
                await wait_first(ev.done, timeout=self._real(40, 3.0))
        # The ticket stays current until the next NEXT (or DONE) finishes it.

    async def _take_lunch(self) -> None:
        assert self.lunch is not None
        self.lunch_day = self.clock.day()
        await self._finish()
        if not self.paused:
            if not await self.press(Key.PAUSE):
                await asyncio.sleep(1.0)
                return
            self.paused = True
            self._log("pauses for lunch")
        end = self.clock.day() * DAY + self.lunch[1] * 3600
        await self.clock.sleep_until(end)


class BusPlayer(_Player):
    def __init__(self, sim: Simulator, port: PortConfig) -> None:
        super().__init__(sim, port)
        self.keypads: dict[int, Keypad] = {}
        self.evaluators: dict[int, Evaluator] = {}
        self.screens: dict[int, DeviceConfig] = {}
        self.devices: dict[int, _BusDevice] = {}
        for device in port.devices:
            if device.address is None:
                continue
            if device.kind == "keypad":
                self.keypads[device.address] = self.devices[device.address] = Keypad(self, device)
            elif device.kind == "evaluator":
                ev = Evaluator(self, device)
                self.evaluators[device.address] = self.devices[device.address] = ev
            elif device.kind == "screen":
                self.screens[device.address] = device
        by_counter = {ev.counter: ev for ev in self.evaluators.values()}
        playable = sorted(
            (k for k in self.keypads.values() if k.counter is not None),
            key=lambda k: (k.counter or 0, k.address),
        )
        # Every second counter goes to lunch, so half the hall stays open.
        self.clerks = [
            Clerk(self, kp, by_counter.get(kp.counter), lunch=i % 2 == 1)
            for i, kp in enumerate(playable)
        ]
        self.texts: dict[tuple[int, int], str] = {}
        self._tasks: _Tasks | None = None

    def busy(self) -> bool:
        return any(d.busy for d in self.devices.values())

    def addresses(self) -> set[int]:
        return set(self.devices) | set(self.screens)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tasks is None:
            coro.close()
            return
        self._tasks.spawn(coro)

    async def send(self, frame: Frame) -> None:
        junk = b""
        if self.settings.garbage_rate and self.faults.random() < self.settings.garbage_rate:
            n = self.faults.randint(1, 8)
            junk = bytes(self.faults.randrange(256) for _ in range(n))
            self.stats.garbage_bursts += 1
        self.stats.frames_sent += 1
        await self._write(bus68.encode(frame), junk)

    async def session(self, conn: Conn) -> None:
        self.conn = conn
        tasks = self._tasks = _Tasks(self.stats)
        try:
            for clerk in self.clerks:
                tasks.spawn(clerk.run())
            decoder = Bus68Decoder()
            bad_before = 0
            while data := await conn.read():
                for frame in decoder.feed(data):
                    await self._on_frame(frame)
                if decoder.stats.frames_bad != bad_before:
                    self.stats.bad_frames += decoder.stats.frames_bad - bad_before
                    bad_before = decoder.stats.frames_bad
        finally:
            self._tasks = None
            await tasks.cancel_all()
            self.conn = None
            for ev in self.evaluators.values():
                ev.rating = False

    async def _on_frame(self, frame: Frame) -> None:
        self.stats.frames_received += 1
        if self.lost():
            return
        address = frame.address
        if frame.function in DEVICE_FUNCTIONS:
            device = self.devices.get(address)
            if device is not None and device.on_echo(frame):
                self.stats.echoes_received += 1
            else:
                # A second echo of a retransmitted frame, or a device we do not play.
                self.stats.unexpected_frames += 1
            return
        if address != bus68.BROADCAST and address not in self.addresses():
            self.stats.frames_for_others += 1
            return
        try:
            message = bus68.parse(frame)
        except ProtocolError as exc:
            # Not acknowledged: the host sees the device as unresponsive, which is what a
            # real device does with a frame it cannot make sense of.
            self.stats.bad_frames += 1
            log.warning("bus %#04x: host frame not allowed (%s): %s", address, exc.reason, frame)
            return
        if address != bus68.BROADCAST:
            # Broadcasts are never answered, or every device would talk at once.
            self.stats.echoes_sent += 1
            await self.send(frame)
        self._dispatch(address, message)

    def _dispatch(self, address: int, message: bus68.Message) -> None:
        def targets(kind: dict[int, Any]) -> list[Any]:
            if address == bus68.BROADCAST:
                return list(kind.values())
            return [kind[address]] if address in kind else []

        match message:
            case bus68.Display():
                for keypad in targets(self.keypads):
                    keypad.on_display(message)
            case bus68.Beep():
                for keypad in targets(self.keypads):
                    keypad.on_beep()
            case bus68.EvalPrompt():
                for ev in targets(self.evaluators):
                    ev.on_prompt()
            case bus68.Text(_, line, text):
                for screen in targets(self.screens):
                    self._on_text(screen, line, text)
            case _:
                pass

    def _on_text(self, screen: DeviceConfig, line: int, text: str) -> None:
        assert screen.address is not None
        self.stats.screen_texts += 1
        self.texts[(screen.address, line)] = text
        self.stats.last_screen_text[f"{screen.address:#04x}/{line}"] = text
        log.info("%s screen %#04x line %d: %s", self.clock.label(), screen.address, line, text)


# -- the simulator -----------------------------------------------------------------------------


class _PortRunner:
    """The one live connection of a port; a new connection from the daemon replaces the old
    (like ser2net's kickolduser: a half-open TCP connection must not lock the daemon out)."""

    def __init__(self, sim: Simulator, player: _Player) -> None:
        self.sim = sim
        self.player = player
        self.task: asyncio.Task[Any] | None = None

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.attach(_StreamConn(reader, writer))

    async def attach(self, conn: Conn) -> None:
        """Play the port over `conn` until the daemon goes away or a newer connection comes.

        The session runs in a task of its own: asyncio's stream server logs an error when the
        task it started for a connection ends cancelled."""
        old = self.task
        if old is not None and not old.done():
            old.cancel()
            await asyncio.wait([old])
        task = asyncio.create_task(self._session(conn))
        self.task = task
        try:
            await asyncio.wait([task])
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait([task])
            if self.task is task:
                self.task = None

    async def _session(self, conn: Conn) -> None:
        self.sim.stats.connections += 1
        name = self.player.port.name
        log.info("port %s: the daemon connected", name)
        try:
            await self.player.session(conn)
        except (ConnectionError, OSError) as exc:
            log.info("port %s: connection lost: %s", name, exc)
        except Exception:
            self.sim.stats.task_errors += 1
            log.exception("port %s: simulator failed", name)
        finally:
            conn.close()
        log.info("port %s: the daemon disconnected", name)

    async def close(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])


class Simulator:
    """The hall's devices, for the daemon to connect to. `start`, then `stop` (or `run`)."""

    def __init__(self, config: HallConfig, settings: SimSettings | None = None) -> None:
        self.config = config
        self.settings = settings or SimSettings()
        seed = self.settings.seed
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.stats = SimStats(seed=self.seed)
        self.clock = SimClock(self.settings.start, self.settings.speed)
        self.service_numbers = config.service_numbers()
        self._issued: OrderedDict[int, list[str]] = OrderedDict()
        self._runners: dict[str, _PortRunner] = {}
        self._servers: list[asyncio.Server] = []
        self._pty_tasks: list[asyncio.Task[None]] = []
        self._ptys: list[tuple[int, Path]] = []  # master, link
        self.closing = False  # stop() has begun: devices start no new exchange
        self.endpoints: dict[str, str] = {}  # port name -> where the daemon connects
        self.skipped: dict[str, str] = {}  # port name -> why it is not played
        for port in config.ports:
            player = self._player(port)
            if player is not None:
                self._runners[port.name] = _PortRunner(self, player)

    def rng(self, *key: object) -> random.Random:
        # One generator per device, so a device's choices do not depend on how the others'
        # events interleave.
        return random.Random(":".join(map(str, (self.seed, *key))))

    def _player(self, port: PortConfig) -> _Player | None:
        if port.protocol == "bus68":
            return BusPlayer(self, port)
        dispensers = [d for d in port.devices if d.kind == "dispenser"]
        if not dispensers:
            self.skipped[port.name] = "no dispenser on this line port"
            return None
        if len(dispensers) > 1 or len(port.devices) > 1:
            log.warning("port %s: playing only dispenser %s", port.name, dispensers[0].id)
        return DispenserPlayer(self, port, dispensers[0])

    # Shared knowledge: the numbers the dispensers handed out, so a clerk who sees "012" on the
    # LCD knows which service's time to take (the LCD shows no prefix).
    def note_ticket(self, number: str, service: str) -> None:
        digits = number.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        if not digits.isdigit():
            return
        n = int(digits)
        self._issued.setdefault(n, []).append(service)
        self._issued.move_to_end(n)
        while len(self._issued) > 2000:
            self._issued.popitem(last=False)

    def guess_service(self, ticket: int, services: Sequence[str]) -> str:
        issued = self._issued.get(ticket, [])
        for code in services:
            if code in issued:
                return code
        if services:
            return services[0]
        return self.config.services[0].code

    def service_minutes(self, code: str) -> float:
        minutes = self.settings.service_minutes
        if code in minutes:
            return minutes[code]
        if "*" in minutes:
            return minutes["*"]
        index = next((i for i, s in enumerate(self.config.services) if s.code == code), 0)
        return 4.0 + index % 3

    async def start(self) -> None:
        pty_dir = self.settings.pty_dir
        if pty_dir is not None:
            pty_dir.mkdir(parents=True, exist_ok=True)
        for name, runner in self._runners.items():
            port = runner.player.port
            if pty_dir is not None:
                link = pty_dir / name
                master = self._open_pty(link)
                self._ptys.append((master, link))
                self.endpoints[name] = str(link)
                self._pty_tasks.append(asyncio.create_task(self._serve_pty(runner, master, link)))
                continue
            address = listen_address(port.url)
            if address is None:
                self.skipped[name] = f"{port.url} is not socket://127.0.0.1:<port>"
                continue
            server = await asyncio.start_server(runner.accept, *address)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
            self.endpoints[name] = f"socket://{bound[0]}:{bound[1]}"
        for name, why in self.skipped.items():
            log.info("port %s not simulated: %s", name, why)

    @staticmethod
    def _open_pty(link: Path) -> int:
        """A pty pair whose slave `link` names; its master, for `_serve_pty`."""
        master, slave = os.openpty()
        try:
            slave_name = os.ttyname(slave)
        finally:
            # Until the daemon opens it there must be no open slave, or POLLHUP never shows.
            os.close(slave)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(slave_name)
        return master

    async def _settle(self, timeout: float = 2.0) -> None:
        """Let the exchanges in hand finish, as a hall closing its doors would: a TAKE the
        host has already answered with a ticket reaches the dispenser's printer, a key press
        gets its echo. Bounded: a host that stopped answering does not hold the stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(r.player.busy() for r in self._runners.values()):
            await asyncio.sleep(0.02)

    async def _serve_pty(self, runner: _PortRunner, master: int, link: Path) -> None:
        """Play the port each time the daemon opens the pty's slave.

        The simulator holds the master for its whole life, so the path stays valid however
        often the daemon closes and reopens it. Not socat: socat ends a pair when the daemon
        closes its side, and a daemon reopening the link before socat has finished exiting
        hangs in open()."""
        os.set_blocking(master, False)
        poller = select.poll()
        poller.register(master, select.POLLIN)
        while True:
            # POLLHUP on the master: nobody has the slave open (socat's wait-slave test).
            if any(ev & select.POLLHUP for _, ev in poller.poll(0)):
                await asyncio.sleep(0.1)
                continue
            # The slave's termios reset on its last close; raw before a byte is written, or
            # the line discipline echoes the devices' own frames back as "acks". Then give
            # the daemon time to finish opening: pyserial flushes input at the end of open.
            tty.setraw(master)
            await asyncio.sleep(0.3)
            await runner.attach(_FdConn(os.dup(master)))
            # Let the hangup show before polling again, or the old session looks alive.
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.closing = True
        await self._settle()
        for server in self._servers:
            server.close()
        for task in self._pty_tasks:
            task.cancel()
        await asyncio.gather(*self._pty_tasks, return_exceptions=True)
        for runner in self._runners.values():
            await runner.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._pty_tasks.clear()
        # Here rather than in _serve_pty: a task cancelled before it ever ran has no finally.
        for master, link in self._ptys:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.close(master)
        self._ptys.clear()

    async def run(
        self, duration: float | None = None, stop: asyncio.Event | None = None
    ) -> dict[str, Any]:
        """Start, play until `duration` real seconds pass or `stop` is set, stop; the stats."""
        stop = stop or asyncio.Event()
        await self.start()
        try:
            await wait_first(stop, timeout=duration)
        finally:
            await self.stop()
        return self.statistics()

    def statistics(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out["sim_time"] = self.clock.label()
        return out


# -- command line ------------------------------------------------------------------------------


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _clock(text: str) -> float:
    try:
        return parse_clock(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mapping(text: str) -> dict[str, float]:
    """A number for every service ({"*": 5}), or CODE=N,CODE=N for each."""
    try:
        if "=" not in text:
            return {"*": _positive(text)}
        out: dict[str, float] = {}
        for item in text.split(","):
            code, _, value = item.partition("=")
            out[code.strip()] = _positive(value)
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or CODE=N,CODE=N: {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    """The simulator's options, for `python -m drivers.simulator` and `hall-daemon simulate`
    (config=False when the caller adds its own -c/--config)."""
    if config:
        parser.add_argument("-c", "--config", required=True, help="the hall's config.yaml")
    parser.add_argument(
        "--speed", type=_positive, default=1.0, help="simulated seconds per real second (60)"
    )
    parser.add_argument(
        "--start", type=_clock, default=8.5 * 3600, help="simulated clock at start, HH:MM (08:30)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default: random, reported)")
    parser.add_argument("--duration", type=_positive, help="stop after this many real seconds")
    parser.add_argument(
        "--peak-per-hour", type=_positive, default=60.0, help="arrivals per hour at the peak"
    )
    parser.add_argument(
        "--service-minutes",
        type=_mapping,
        default={},
        help="mean service minutes: N, or CODE=N,... (default 4, 5, 6 in service order)",
    )
    parser.add_argument(
        "--mix", type=_mapping, help="service weights CODE=N,... (default: counters serving it)"
    )
    parser.add_argument(
        "--checksum-rate", type=_fraction, default=0.5, help="TAKE lines with *HH (0.5)"
    )
    parser.add_argument("--priority-rate", type=_fraction, default=0.08, help="PRIORITY (0.08)")
    parser.add_argument(
        "--garbage-rate", type=_fraction, default=0.0, help="junk bytes before a frame (0)"
    )
    parser.add_argument(
        "--drop-acks", type=_fraction, default=0.0, help="host frames/lines ignored (0)"
    )
    parser.add_argument(
        "--pty", type=Path, metavar="DIR", help="pty pairs in DIR instead of sockets"
    )
    parser.add_argument("--json", action="store_true", help="statistics as one JSON line")


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    mix = args.mix
    return SimSettings(
        speed=args.speed,
        start=args.start,
        seed=args.seed,
        garbage_rate=args.garbage_rate,
        drop_acks=args.drop_acks,
        checksum_rate=args.checksum_rate,
        priority_rate=args.priority_rate,
        service_minutes=args.service_minutes,
        mix=mix,
        traffic=TrafficProfile(peak_per_hour=args.peak_per_hour),
        pty_dir=args.pty.absolute() if args.pty else None,
    )


async def run_simulator(
    config: HallConfig,
    settings: SimSettings,
    duration: float | None = None,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Play the hall until `duration` or SIGINT/SIGTERM; the statistics."""
    sim = Simulator(config, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await sim.start()
        for name, where in sim.endpoints.items():
            out(f"port {name}: the daemon connects to {where}")
        for name, why in sim.skipped.items():
            out(f"port {name}: not simulated ({why})")
        out(f"simulated clock {sim.clock.label()}, speed {settings.speed:g}, seed {sim.seed}")
        await wait_first(stop, timeout=duration)
    finally:
        await sim.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    return sim.statistics()


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for `hall-daemon simulate` (args from a parser given `add_arguments`)."""
    from hall_daemon.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = settings_from_args(args)

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        stats = asyncio.run(run_simulator(config, settings, args.duration, say))
    except (OSError, RuntimeError) as exc:
        # A port already in use (another simulator, or the daemon itself).
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(stats, ensure_ascii=False), flush=True)
    else:
        print("simulator statistics:", flush=True)
        print(json.dumps(stats, ensure_ascii=False, indent=2), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.simulator",
        description="Play a hall's dispensers, keypads, evaluators and screens for the daemon.",
    )
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The voice output: bus events -> one play queue -> one worker thread -> speakers or folder.

The event loop only decides: it turns ticket.called / ticket.recalled into announcements,
queues them, drops the ones that waited too long, keeps quiet hours, picks the volume and
reports faults. Everything that blocks (espeak-ng, sox, reading the voice pack, writing
WAVs, running the player) happens on one worker thread, one announcement at a time, so
announcements never overlap and a slow speaker never delays a keypad.

ticket.resumed is not announced: the engine follows it with a ticket.called for the same
ticket, which is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import time as clock_time
from pathlib import Path
from typing import Any, TypeVar

from hall_daemon.backoff import Backoff
from hall_daemon.commands import ReportDevice
from hall_daemon.config import HallConfig, TimeRange
from hall_daemon.events import (
    REPLAY_REQUESTED,
    TICKET_CALLED,
    TICKET_RECALLED,
    StoredEvent,
)
from hall_daemon.hall import Hall
from hall_daemon.model import DomainError

from .audio import duration_s, wav_bytes
from .output import FolderOutput, Output, OutputFault, PlayerOutput
from .phrase import Announcement, Clip, Lang, PhraseBuilder
from .render import Renderer
from .tts import PARALLEL, ClipCache, Espeak, TtsError
from .voicepack import VoicePack

log = logging.getLogger(__name__)
T = TypeVar("T")

ANNOUNCED = {TICKET_CALLED: "called", TICKET_RECALLED: "recalled"}
DEVICE = "voice"  # the name device.fault events and the status page give the voice output
WARM_BATCH = PARALLEL  # clips per warm-up step, one round of espeak-ng runs: what a call may wait
LATENCY_SAMPLES = 1000


@dataclass(slots=True)
class _Job:
    announcement: Announcement
    received: float  # time.monotonic() when the call reached the voice output


@dataclass(slots=True)
class _Outcome:
    handed: float | None = None  # time.monotonic() when the first sample was handed over
    error: str | None = None
    duration_s: float = 0.0
    synthesized: int = 0  # espeak-ng runs this call needed (0: all cached)
    missing: list[Clip] = field(default_factory=list)  # clips to make once the hall is quiet


def _within(window: TimeRange, now: clock_time) -> bool:
    if window.start < window.end:
        return window.start <= now < window.end
    return now >= window.start or now < window.end  # spans midnight (22:00 to 07:00)


def make_output(config: HallConfig, scratch: Path) -> Output:
    """The configured output: a folder of WAVs or a player command (WAVs in `scratch`)."""
    voice = config.voice
    if voice.output == "folder":
        # config.py insists on a folder while voice is enabled; a disabled one needs none.
        return FolderOutput(voice.folder or config.state_dir / "voice")
    return PlayerOutput(voice.player, scratch)


class VoiceHandle:
    """The running voice output. Create it with `start_voice`."""

    def __init__(
        self,
        hall: Hall,
        config: HallConfig,
        *,
        cache_dir: Path | None = None,
        output: Output | None = None,
        tts: Espeak | None = None,
        prewarm: bool = True,
    ) -> None:
        self.hall = hall
        self.voice = config.voice
        self.enabled = config.voice.enabled
        cache_dir = cache_dir if cache_dir is not None else config.state_dir / "voice-cache"
        self.builder = PhraseBuilder(config)
        self.cache = ClipCache(cache_dir / "clips")
        voices: dict[Lang, str] = {"zh": self.voice.tts.zh_voice, "en": self.voice.tts.en_voice}
        self.renderer = Renderer(voices, self.cache, tts)  # worker thread only
        self.output = output or make_output(config, cache_dir / "play")
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="voice")
        self._task: asyncio.Task[None] | None = None
        self._prewarm = prewarm
        self._started_consuming = False
        self._warm: list[Clip] = self.builder.vocabulary() if prewarm else []
        self._playing: _Job | None = None
        self._stopping = False
        self._reports: set[asyncio.Task[None]] = set()
        self._reported: tuple[str, str] | None = None
        self._last_at: dict[str, tuple[int, str]] = {}  # number -> (counter, service), replay
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.played = 0
        self.dropped = 0
        self.quiet = 0
        self.faults = 0
        self.last_error = ""
        self.ok = True

    def reload(self, config: HallConfig) -> None:
        """Templates, repeat, quiet hours, volume and max delay from a re-read config.yaml
        (SIGHUP); clips for new wording are rendered on first use."""
        self.voice = config.voice
        self.builder = PhraseBuilder(config)

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.enabled:
            log.info("voice: disabled in config")
            return
        unknown = self.builder.unknown_characters()
        if unknown:
            log.warning(
                "voice: no pinyin in broadcast/pinyin.py for %s; espeak-ng's own dictionary "
                "reads them (check with: espeak-ng -v %s -x TEXT, or record them in a voice pack)",
                "".join(unknown),
                self.voice.tts.zh_voice,
            )
        if "pinyin" not in self.voice.tts.zh_voice.lower():
            log.warning(
                "voice: tts.zh_voice %s is given pinyin; only a pinyin voice such as "
                "cmn-latn-pinyin reads it as Mandarin",
                self.voice.tts.zh_voice,
            )
        self.hall.bus.subscribe(DEVICE, self._on_event, maxsize=256)
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="voice")
        log.info("voice: %s output to %s", self.output.kind, self.output.port)

    async def stop(self) -> None:
        """Stop taking calls, cut off what is playing, and end the worker thread."""
        if self._stopping:
            return
        self._stopping = True
        if self._queue:
            log.info("voice: stopping; %d queued call(s) not said", len(self._queue))
            self._queue.clear()
        self.output.abort()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # The worker may still be finishing a job (abort makes that quick): wait for it
        # without blocking the loop.
        await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown, True)
        if self._reports:
            await asyncio.wait(self._reports, timeout=2.0)
        self._playing = None

    # -- what others call ----------------------------------------------------------------
    def replay(self, number: str) -> bool:
        """Say a ticket's call again (the admin page). False if the ticket is not at a
        counter and was not called since start-up."""
        if not self.enabled or self._stopping:
            return False
        number = number.strip().upper()
        ticket = self.hall.state.tickets.get(number)
        if ticket is not None and ticket.counter is not None:
            where: tuple[int, str] | None = (ticket.counter, ticket.service)
        else:
            where = self._last_at.get(number)
        if where is None:
            return False
        counter, service = where
        data = {"number": number, "counter": counter, "service": service}
        self._enqueue(_Job(self.builder.announcement("replay", data), time.monotonic()))
        return True

    def say_number(self, number: str) -> bool:
        """Say "please note your number" for a ticket whose receipt did not print. False if
        the voice is off or stopping."""
        if not self.enabled or self._stopping:
            return False
        announcement = self.builder.number_notice(number.strip().upper())
        self._enqueue(_Job(announcement, time.monotonic()))
        return True

    def stats(self) -> dict[str, Any]:
        """For the status page: queue, counts, faults, cache and call latency."""
        if not self.enabled:
            return {"enabled": False}
        lat = sorted(self._latencies)
        return {
            "enabled": True,
            "output": self.output.kind,
            "port": self.output.port,
            "ok": self.ok,
            "queue": len(self._queue),
            "playing": self._playing.announcement.describe() if self._playing else None,
            "played": self.played,
            "dropped": self.dropped,
            "quiet": self.quiet,
            "faults": self.faults,
            "last_error": self.last_error,
            "warm": self._started_consuming and not self._warm,
            "cache": {
                "clips": len(self.cache),  # in memory
                "memory_kib": self.cache.held_bytes // 1024,
                "hits": self.cache.hits,
                "disk_hits": self.cache.disk_hits,
                "misses": self.cache.misses,
                "synthesized": self.renderer.synthesized,
            },
            "latency_ms": {
                "count": len(lat),
                "p50": round(1000 * _percentile(lat, 0.50), 1) if lat else None,
                "p95": round(1000 * _percentile(lat, 0.95), 1) if lat else None,
            },
        }

    def latencies(self) -> list[float]:
        """Seconds from each call's event to its first sample handed over, oldest first."""
        return list(self._latencies)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every call so far has been said (or dropped) and any change of the
        output's health recorded in the hall; False on timeout."""
        deadline = time.monotonic() + timeout
        await self.hall.bus.drain(timeout)
        while self._queue or self._playing is not None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=max(0.0, deadline - time.monotonic()))
        return not self._reports

    async def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the start-up warm-up has made every clip a call can need (the voice
        pack loaded, the cache filled); False on timeout. Calls are said before that too,
        only each sentence is synthesized whole then."""
        deadline = time.monotonic() + timeout
        while self.enabled and (self._warm or not self._started_consuming):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def clear_cache(self, disk: bool = False) -> None:
        """Forget synthesized clips (after a voice change; the cold-cache benchmark)."""
        await self._in_worker(self._clear, disk)

    def _clear(self, disk: bool) -> None:
        self.cache.clear(disk)

    # -- the loop side -------------------------------------------------------------------
    async def _on_event(self, event: StoredEvent) -> None:
        if event.type == REPLAY_REQUESTED and not self._stopping:
            # The admin page asked (logged as an event): say the call once more.
            if not self.replay(str(event.data.get("number", ""))):
                log.info("voice: cannot replay %s: not at a counter", event.data.get("number"))
            return
        kind = ANNOUNCED.get(event.type)
        if kind is None or self._stopping:
            return
        received = time.monotonic()
        try:
            announcement = self.builder.announcement(kind, event.data)
        except (KeyError, ValueError) as exc:
            log.warning("voice: cannot announce event %d (%s): %s", event.seq, event.type, exc)
            return
        self._last_at[announcement.number] = (announcement.counter, announcement.service)
        if len(self._last_at) > 5000:  # a day's tickets at most; never grows without bound
            self._last_at.pop(next(iter(self._last_at)))
        self._enqueue(_Job(announcement, received))

    def _enqueue(self, job: _Job) -> None:
        # A recall joins the end of the queue like any call: it never cuts off or jumps
        # ahead of announcements already waiting.
        self._queue.append(job)
        self._wake.set()

    async def _supervise(self) -> None:
        pauses = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                pause = pauses.next_delay()
                log.exception("voice: play queue failed; restarting it in %.1f s", pause)
                await asyncio.sleep(pause)

    async def _consume(self) -> None:
        if self.voice.voice_pack is not None and not self._started_consuming:
            await self._load_pack(self.voice.voice_pack)
        self._started_consuming = True
        while True:
            if not self._queue:
                if self._warm:
                    await self._warm_step()
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self._queue.popleft()
            self._playing = job
            try:
                await self._say(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in rendering: log it, count it, next call
                log.exception("voice: %s failed", job.announcement.describe())
                self._failed(job, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._playing = None

    async def _say(self, job: _Job) -> None:
        announcement = job.announcement
        waited = time.monotonic() - job.received
        if waited > self.voice.max_delay_s:
            self.dropped += 1
            log.warning(
                "voice: dropped %s after %.1f s in the queue (max_delay_s %g): too late to "
                "send anyone to that counter",
                announcement.describe(),
                waited,
                self.voice.max_delay_s,
            )
            return
        local = self.hall.now().astimezone(self.hall.spec.tz()).time()
        quiet = next((w for w in self.voice.quiet_hours if _within(w, local)), None)
        percent = next((w.percent for w in self.voice.volume if _within(w, local)), 100)
        if quiet is not None or percent == 0:
            self.quiet += 1
            log.info(
                "voice: not saying %s: %s at %s",
                announcement.describe(),
                "quiet hours" if quiet is not None else "volume 0%",
                local.strftime("%H:%M"),
            )
            return
        outcome = await self._in_worker(self._play, job, percent)
        if outcome.missing and self._prewarm:
            # Said whole this time; make its clips while the hall is quiet, for the next call.
            self._warm = outcome.missing + self._warm
        if outcome.handed is not None:
            self._latencies.append(outcome.handed - job.received)
        if outcome.error is not None:
            self._failed(job, outcome.error)
            return
        self.played += 1
        self.ok = True
        log.info(
            "voice: said %s (%.1f s, first sample %.0f ms after the event, %d espeak-ng run(s))",
            announcement.describe(),
            outcome.duration_s,
            1000 * ((outcome.handed or job.received) - job.received),
            outcome.synthesized,
        )
        self._report("online", "")

    def _failed(self, job: _Job, error: str) -> None:
        self.faults += 1
        self.last_error = error
        self.ok = False
        log.warning(
            "voice: %s not said: %s; going on with the next call",
            job.announcement.describe(),
            error,
        )
        self._report("fault", error)

    def _report(self, state: str, detail: str) -> None:
        """Tell the hall (device.fault / device.online, the status page) when the voice
        output's health changes; the engine logs an event only on a change."""
        detail = detail[:200]
        if self.hall.state.devices.get(DEVICE) == (state, detail) or self._reported == (
            state,
            detail,
        ):
            return
        self._reported = (state, detail)
        task = asyncio.get_running_loop().create_task(self._submit_report(state, detail))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _submit_report(self, state: str, detail: str) -> None:
        command = ReportDevice(
            self.hall.now(),
            DEVICE,
            self.output.port,
            "speaker",
            "online" if state == "online" else "fault",
            detail,
        )
        try:
            await self.hall.submit(command)
        except DomainError as exc:  # the hall is stopping or its store is down: try next time
            self._reported = None
            log.warning("voice: could not record device %s: %s", state, exc)

    async def _warm_step(self) -> None:
        batch, self._warm = self._warm[:WARM_BATCH], self._warm[WARM_BATCH:]
        try:
            await self._in_worker(self.renderer.prepare, batch)
        except TtsError as exc:
            # Every call will fail the same way and report it; warming further is futile.
            log.warning("voice: cannot prepare clips: %s", exc)
            self._warm = []
        if not self._warm:
            log.info(
                "voice: ready; %d clips in memory (%d KiB, the rest on disk), %d synthesized",
                len(self.cache),
                self.cache.held_bytes // 1024,
                self.renderer.synthesized,
            )

    async def _load_pack(self, path: Path) -> None:
        try:
            pack = await self._in_worker(VoicePack.load, path)
        except OSError as exc:
            log.warning("voice: %s; using espeak-ng for every clip", exc)
            return
        await self._in_worker(self.renderer.set_pack, pack)
        missing = await self._in_worker(pack.missing, self.builder.vocabulary())
        log.info("voice: voice pack %s: %d clips", path, len(pack))
        if missing:
            names = ", ".join(f"{c.lang}/{c.key}" for c in missing[:12])
            more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
            log.warning("voice: voice pack lacks %s%s; espeak-ng says those", names, more)

    # -- the worker side -----------------------------------------------------------------
    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _play(self, job: _Job, percent: int) -> _Outcome:
        """On the worker thread: render (synthesizing what is missing) and play."""
        announcement = job.announcement
        before = self.renderer.synthesized
        try:
            missing = self.renderer.missing(announcement.clips())
            pcm = self.renderer.render(announcement, percent)
        except TtsError as exc:
            return _Outcome(error=f"speech synthesis failed: {exc}")
        synthesized = self.renderer.synthesized - before
        length = duration_s(pcm)
        number = re.sub(r"[^A-Za-z0-9]", "", announcement.number)
        name = f"{announcement.kind}-{number}-c{announcement.counter}"
        try:
            handed = self.output.deliver(wav_bytes(pcm), name, length)
        except OutputFault as exc:
            return _Outcome(exc.handed, exc.detail, length, synthesized, missing)
        return _Outcome(handed, None, length, synthesized, missing)


def _percentile(ordered: list[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


async def start_voice(
    hall: Hall,
    config: HallConfig,
    *,
    cache_dir: Path | None = None,
    output: Output | None = None,
    tts: Espeak | None = None,
    prewarm: bool = True,
) -> VoiceHandle:
    """Start announcing the hall's calls as config.yaml's voice section says.

    Call it after `hall.start()` and stop it (`await handle.stop()`) before `hall.stop()`.
    Clips are cached under `cache_dir` (default <state_dir>/voice-cache); `output`, `tts`
    and `prewarm=False` are for tests and the benchmark.
    """
    handle = VoiceHandle(hall, config, cache_dir=cache_dir, output=output, tts=tts, prewarm=prewarm)
    await handle.start()
    return handle

"""Voice calls: from the call event to the first sample handed to the player.

    .venv/bin/python bench/voice_bench.py [--calls 200]

A real hall (hall_daemon.Hall on a throwaway SQLite store, config.yaml's services and
counters) takes a ticket and calls it, `--calls` times, one call at a time so each starts
on an idle queue (the figure is how fast a call starts, not how long a queue is). The player
is `cat` (it reads the WAV as aplay would, without needing a sound card); "handed" is the
moment it was started on the complete file (folder output: the file renamed into place).

- warm: the daemon's normal state, every clip cached (synthesized at start-up).
- cold: the clip cache emptied, in memory and on disk, before every call: each call
  synthesizes its ~15 clips with espeak-ng first (the first call after installation).

Two intervals are reported: event -> handed (the voice output's own latency, from the bus
delivering the committed ticket.called) and submit -> handed (including the hall's commit).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broadcast import start_voice  # noqa: E402
from broadcast.output import FolderOutput, Output, PlayerOutput  # noqa: E402
from hall_daemon import commands as c  # noqa: E402
from hall_daemon.config import HallConfig, load_config  # noqa: E402
from hall_daemon.hall import Hall  # noqa: E402
from hall_daemon.store import Store  # noqa: E402


class TimedPlayer(PlayerOutput):
    """The real player output, remembering when each announcement was handed over."""

    def __init__(self, argv: tuple[str, ...], scratch: Path) -> None:
        super().__init__(argv, scratch)
        self.handed: list[float] = []

    def deliver(self, wav: bytes, name: str, duration_s: float) -> float:
        handed = super().deliver(wav, name, duration_s)
        self.handed.append(handed)
        return handed


class TimedFolder(FolderOutput):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.handed: list[float] = []

    def deliver(self, wav: bytes, name: str, duration_s: float) -> float:
        handed = super().deliver(wav, name, duration_s)
        self.handed.append(handed)
        return handed


@dataclass
class Figures:
    event: tuple[float, float, float]  # p50, p95, max in ms: event -> handed
    submit: tuple[float, float, float]  # the same from the CallNext submit
    runs: float  # espeak-ng runs per call


def percentiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return 1000 * q[49], 1000 * q[94], 1000 * max(values)


async def run(config: HallConfig, calls: int, cold: bool, kind: str, tmp: Path) -> Figures:
    hall = Hall(config.to_spec(), Store(Store.sqlite_url(tmp / "hall.db")))
    await hall.start()
    output: TimedPlayer | TimedFolder
    output = TimedPlayer(("cat",), tmp / "play") if kind == "player" else TimedFolder(tmp / "out")
    sink: Output = output
    voice = await start_voice(hall, config, cache_dir=tmp / "cache", output=sink, prewarm=not cold)
    if not cold and not await voice.wait_ready(timeout=120):
        raise RuntimeError("the voice output did not finish its warm-up")
    counters = [(cc.id, cc.services[0]) for cc in config.counters]
    submit_to_handed: list[float] = []
    synthesized = 0
    try:
        for i in range(calls):
            counter, service = counters[i % len(counters)]
            await hall.submit(c.TakeTicket(hall.now(), service, f"bench-{i}"))
            if cold:
                await voice.clear_cache(disk=True)
            before = voice.renderer.synthesized
            started = time.monotonic()
            await hall.submit(c.CallNext(hall.now(), counter))
            if not await voice.drain(timeout=30):
                raise RuntimeError("the voice output did not finish a call within 30 s")
            submit_to_handed.append(output.handed[-1] - started)
            synthesized += voice.renderer.synthesized - before
        stats = voice.stats()
        event_to_handed = voice.latencies()[-calls:]
    finally:
        await voice.stop()
        await hall.stop()
    if stats["played"] != calls or stats["faults"]:
        raise RuntimeError(f"not every call was played: {stats}")
    return Figures(percentiles(event_to_handed), percentiles(submit_to_handed), synthesized / calls)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    base = load_config(REPO / "config.yaml")
    print(f"voice: call event -> first sample handed to the player, {args.calls} calls each")
    print(
        f"{'output':<8}{'cache':<6}{'event p50':>11}{'p95':>9}{'max':>10}"
        f"{'submit p50':>12}{'p95':>9}{'tts runs':>10}"
    )
    for kind, cold in (("player", False), ("player", True), ("folder", False)):
        with tempfile.TemporaryDirectory(prefix="voice-bench-") as name:
            tmp = Path(name)
            voice = base.voice.model_copy(update={"output": kind, "folder": tmp / "out"})
            config = base.model_copy(update={"voice": voice, "state_dir": tmp})
            r = await run(config, args.calls, cold, kind, tmp)
        e50, e95, emax = r.event
        s50, s95, _ = r.submit
        print(
            f"{kind:<8}{'cold' if cold else 'warm':<6}{e50:>9.1f}ms{e95:>7.1f}ms{emax:>8.1f}ms"
            f"{s50:>10.1f}ms{s95:>7.1f}ms{r.runs:>10.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())

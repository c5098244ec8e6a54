"""Voice calls with espeak-ng really synthesizing: a real hall, real events, real WAVs.

The hall is hall_daemon's Hall on a throwaway SQLite store with config.yaml's services and
counters; commands (TakeTicket, CallNext, Recall) produce the events the voice announces.
Clips synthesized by one test are cached for the next (a session-wide cache folder), so the
whole file costs a few seconds of CPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broadcast import VoiceHandle, audio, start_voice
from broadcast.output import Output, PlayerOutput
from broadcast.phrase import PhraseBuilder
from broadcast.tts import Espeak
from hall_daemon import commands as c
from hall_daemon.admin.status import AdminHandles, status_view
from hall_daemon.config import HallConfig, TimeRange, VolumeWindow, load_config
from hall_daemon.hall import Hall
from hall_daemon.store import Store

pytestmark = pytest.mark.service

# `make test` installs espeak-ng (scripts/setup.sh); without it these tests must fail, not skip.
assert shutil.which("espeak-ng"), "espeak-ng is missing: run scripts/setup.sh (make test does)"

REPO = Path(__file__).resolve().parents[1]
BASE = load_config(REPO / "config.yaml")
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=TZ)  # a Friday morning
PINYIN_VOICE = BASE.voice.tts.zh_voice


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voice-cache")


def hall_config(tmp_path: Path, **voice: Any) -> HallConfig:
    settings = {"output": "folder", "folder": tmp_path / "voice", **voice}
    return BASE.model_copy(
        update={"voice": BASE.voice.model_copy(update=settings), "state_dir": tmp_path / "state"}
    )


@dataclass
class Rig:
    hall: Hall
    voice: VoiceHandle
    folder: Path
    at: datetime

    async def call(self, service: str, counter: int) -> str:
        """Take a ticket and call it at `counter`; return its number."""
        self.at += timedelta(seconds=1)
        taken = await self.hall.submit(c.TakeTicket(self.at, service, f"tok-{self.at.timestamp()}"))
        await self.hall.submit(c.CallNext(self.at, counter))
        return str(taken[0].data["number"])

    def wavs(self) -> list[Path]:
        return sorted(self.folder.glob("*.wav"))


@pytest.fixture
async def rig(tmp_path: Path, clip_cache: Path) -> AsyncIterator[Callable[..., Any]]:
    """rig(clock=T0, sink=None, cache=clip_cache, prewarm=True, tts=None, **voice settings)."""
    made: list[Rig] = []

    async def make(
        clock: datetime = T0,
        sink: Output | None = None,
        cache: Path | None = None,
        prewarm: bool = True,
        tts: Espeak | None = None,
        **voice: Any,
    ) -> Rig:
        config = hall_config(tmp_path, **voice)
        hall = Hall(
            config.to_spec(), Store(Store.sqlite_url(tmp_path / "hall.db")), clock=lambda: clock
        )
        await hall.start()
        handle = await start_voice(
            hall,
            config,
            cache_dir=cache or clip_cache,
            output=sink,
            tts=tts,
            prewarm=prewarm,
        )
        if prewarm:  # calls said from cached clips, the daemon's normal state
            assert await handle.wait_ready()
        r = Rig(hall, handle, tmp_path / "voice", clock)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.voice.stop()
        await r.hall.stop()


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, audio.RATE)
        pcm = w.readframes(w.getnframes())
        # Not truncated: the file holds every frame its header promises.
        assert len(pcm) == 2 * w.getnframes()
        assert path.stat().st_size == 44 + len(pcm)
    return pcm


def espeak_seconds(voice: str, text: str) -> float:
    """How long espeak-ng takes to say `text` in one go: the yardstick for plausible length."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", "--", text], capture_output=True, check=True
    ).stdout
    return audio.duration_s(audio.trim(audio.parse_wav(wav)[3]))


def player_script(folder: Path) -> tuple[str, ...]:
    """A stand-in for aplay that copies each WAV it is given into `folder`, logs when it ran,
    takes as long as `folder/delay` says, and fails (exit 1) while `folder/broken` exists."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "player.sh"
    script.write_text(
        "#!/bin/sh\n"
        'dir="$(dirname "$0")"\n'
        'if [ -e "$dir/broken" ]; then echo "cannot open audio device hw:0" >&2; exit 1; fi\n'
        'echo "start $(date +%s.%N)" >> "$dir/log"\n'
        'cp "$1" "$dir/played-$(date +%s%N).wav"\n'
        'sleep "$(cat "$dir/delay" 2>/dev/null || echo 0.05)"\n'
        'echo "end $(date +%s.%N)" >> "$dir/log"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return (str(script),)


def device_events(hall: Hall) -> list[tuple[str, str]]:
    return [
        (e.type, str(e.data.get("detail", "")))
        for e in hall.store.events_after(0)
        if e.type.startswith("device.") and e.data.get("device") == "voice"
    ]


# -- a call, two calls, a recall -------------------------------------------------------------


async def test_a_call_produces_a_complete_plausible_wav_with_the_chime_first(rig: Any) -> None:
    r: Rig = await rig()
    number = await r.call("A", 3)
    assert await r.voice.drain()
    [wav] = r.wavs()
    assert f"called-{number}-c3" in wav.name
    pcm = read_wav(wav)

    chime = audio.chime()
    assert pcm.startswith(chime), "the announcement starts with the chime"
    speech = pcm[len(chime) :]
    # Plausible length: the chime, then each sentence `repeat` times, about as long as
    # espeak-ng takes to say the same sentences in one go (clips are joined with short
    # gaps), and surely not a fraction of it (truncated) or many times it.
    builder = PhraseBuilder(BASE)
    zh, en = builder.announcement(
        "called", {"number": number, "service": "A", "counter": 3}
    ).sentences
    said = espeak_seconds(PINYIN_VOICE, " ".join(c.tts for c in zh)) + espeak_seconds(
        "en", " ".join(c.tts for c in en)
    )
    repeat = BASE.voice.repeat
    assert 0.8 * repeat * said < audio.duration_s(speech) < 1.6 * repeat * said + 2.0
    # Not silence: speech fills most of it, as loud as espeak-ng speaks.
    voiced = sum(end - start for start, end in audio.voiced_spans(speech))
    assert voiced > 0.6 * repeat * said
    assert audio.rms(speech) > 1000
    # Not cut short: the second saying is as long and as loud as the first, and speech runs
    # on to within the tail silence of the end.
    spans = audio.voiced_spans(speech)
    middle = len(speech) // 2 - len(speech) // 2 % 2
    first, second = speech[:middle], speech[middle:]
    assert abs(audio.rms(first) - audio.rms(second)) < 0.2 * audio.rms(first)
    assert audio.duration_s(speech) - spans[-1][1] < 0.6


async def test_two_calls_10_ms_apart_are_two_complete_announcements_in_order(
    rig: Any, tmp_path: Path
) -> None:
    played = tmp_path / "player"
    script = player_script(played)
    (played / "delay").write_text("0.3")  # the second call comes while the first plays
    r: Rig = await rig(output="player", player=script)
    await r.hall.submit(c.TakeTicket(T0, "A", "t1"))
    await r.hall.submit(c.TakeTicket(T0, "A", "t2"))
    await r.hall.submit(c.CallNext(T0, 1))
    await asyncio.sleep(0.01)
    await r.hall.submit(c.CallNext(T0 + timedelta(milliseconds=10), 2))
    assert await r.voice.drain()

    log = (played / "log").read_text().split()
    times = [float(t) for t in log[1::2]]
    assert log[0::2] == ["start", "end", "start", "end"]
    assert times == sorted(times), "the second announcement began after the first ended"
    first, second = (read_wav(p) for p in sorted(played.glob("played-*.wav")))
    assert abs(audio.duration_s(first) - audio.duration_s(second)) < 0.3  # both whole
    assert first.startswith(audio.chime()) and second.startswith(audio.chime())
    stats = r.voice.stats()
    assert (stats["played"], stats["dropped"], stats["faults"]) == (2, 0, 0)
    # In order: A001 to counter 1, then A002 to counter 2 (the counters' digits differ).
    one = r.voice.renderer.pieces(PhraseBuilder(BASE).sentence("zh", "A001", 1, "A")[-2])[0][1]
    assert one in first and one not in second


async def test_a_recall_says_the_call_again(rig: Any) -> None:
    r: Rig = await rig()
    number = await r.call("B", 4)
    assert await r.voice.drain()
    await r.hall.submit(c.Recall(r.at + timedelta(seconds=30), 4))
    assert await r.voice.drain()
    called, recalled = r.wavs()
    assert f"called-{number}-c4" in called.name and f"recalled-{number}-c4" in recalled.name
    assert read_wav(called) == read_wav(recalled)
    assert r.voice.replay(number)
    assert await r.voice.drain()
    assert f"replay-{number}-c4" in r.wavs()[-1].name
    assert not r.voice.replay("Z999")


# -- queue rules -----------------------------------------------------------------------------


async def test_a_call_that_waited_too_long_is_dropped_with_a_log_line(
    rig: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    played = tmp_path / "player"
    script = player_script(played)
    (played / "delay").write_text("1.0")  # each announcement takes a second to play
    r: Rig = await rig(output="player", player=script, max_delay_s=0.5)
    caplog.set_level(logging.INFO, logger="broadcast")
    await r.call("A", 1)
    await r.call("A", 2)  # waits about a second behind the first: too late
    assert await r.voice.drain()
    stats = r.voice.stats()
    assert (stats["played"], stats["dropped"]) == (1, 1)
    assert any("dropped called A002 -> counter 2" in m for m in caplog.messages)
    (played / "delay").write_text("0")
    await r.call("A", 3)  # the queue carries on
    assert await r.voice.drain()
    assert r.voice.stats()["played"] == 2


async def test_nothing_is_said_in_quiet_hours(rig: Any) -> None:
    lunch = TimeRange.model_validate({"from": "12:00", "to": "13:30"})
    r: Rig = await rig(clock=T0.replace(hour=12, minute=30), quiet_hours=(lunch,))
    await r.call("A", 1)
    assert await r.voice.drain()
    assert r.wavs() == []
    assert r.voice.stats()["quiet"] == 1


async def test_the_volume_follows_the_time_of_day(rig: Any) -> None:
    morning = VolumeWindow.model_validate({"from": "08:30", "to": "10:00", "percent": 50})
    r: Rig = await rig(volume=(morning,))
    number = await r.call("A", 1)
    assert await r.voice.drain()
    [wav] = r.wavs()
    builder = PhraseBuilder(BASE)
    full = r.voice.renderer.render(
        builder.announcement("called", {"number": number, "service": "A", "counter": 1}), 100
    )
    assert abs(audio.rms(read_wav(wav)) / audio.rms(full) - 0.5) < 0.02


# -- faults ----------------------------------------------------------------------------------


async def test_a_broken_player_is_reported_and_the_next_call_still_plays(
    rig: Any, tmp_path: Path
) -> None:
    played = tmp_path / "player"
    script = player_script(played)
    (played / "broken").touch()
    r: Rig = await rig(output="player", player=script)
    await r.call("A", 1)
    assert await r.voice.drain()
    await r.hall.bus.drain()
    stats = r.voice.stats()
    assert stats["faults"] == 1 and stats["ok"] is False
    assert "exited with status 1: cannot open audio device hw:0" in stats["last_error"]
    assert r.hall.state.devices["voice"][0] == "fault"
    assert device_events(r.hall)[-1][0] == "device.fault"
    # What the admin's status page is sent: the voice row and the devices list say so.
    page = status_view(
        r.hall, AdminHandles(voice=r.voice), notice_default="", disk={}, loop_lag_s=0.0
    )
    assert page["voice"]["ok"] is False and page["voice"]["faults"] == 1
    assert "cannot open audio device" in page["voice"]["last_error"]
    assert any(d["device"] == "voice" and d["state"] == "fault" for d in page["devices"])

    (played / "broken").unlink()  # the speaker is plugged back in
    await r.call("A", 2)
    assert await r.voice.drain()
    assert r.voice.stats()["played"] == 1 and r.voice.stats()["ok"] is True
    assert len(list(played.glob("played-*.wav"))) == 1
    assert device_events(r.hall)[-1][0] == "device.online"


async def test_a_missing_player_program_is_a_fault_not_a_crash(rig: Any) -> None:
    r: Rig = await rig(output="player", player=("/nonexistent/aplay", "-q"))
    await r.call("A", 1)
    await r.call("A", 2)
    assert await r.voice.drain()
    stats = r.voice.stats()
    assert stats["faults"] == 2 and "cannot run player /nonexistent/aplay" in stats["last_error"]
    assert [t for t, _ in device_events(r.hall)] == ["device.fault"]  # once, not per call


async def test_a_hung_player_is_killed_and_reported(rig: Any, tmp_path: Path) -> None:
    played = tmp_path / "player"
    script = player_script(played)
    (played / "delay").write_text("600")  # a player stuck on a blocked sound device
    short = BASE.voice.templates.model_copy(update={"zh": "{number}", "en": "{number}"})
    hung = PlayerOutput(script, tmp_path / "scratch", grace_s=0.3)
    r: Rig = await rig(sink=hung, templates=short, repeat=1)
    started = time.monotonic()
    await r.call("A", 1)
    assert await r.voice.drain()
    assert time.monotonic() - started < 10
    assert "still running 0.3 s after the announcement ended; killed" in r.voice.last_error
    assert r.voice.stats()["faults"] == 1
    assert device_events(r.hall)[-1][0] == "device.fault"
    assert "end" not in (played / "log").read_text()  # killed, with the sleep it started


async def test_speech_that_cannot_be_synthesized_is_a_fault(rig: Any, tmp_path: Path) -> None:
    r: Rig = await rig(cache=tmp_path / "empty", tts=Espeak("/nonexistent/espeak-ng"))
    await r.call("A", 1)
    assert await r.voice.drain()
    assert r.voice.stats()["faults"] == 1
    assert "speech synthesis failed: cannot run /nonexistent/espeak-ng" in r.voice.last_error


# -- the worker thread -----------------------------------------------------------------------


class _ThreadSpy(Espeak):
    def __init__(self, seen: set[str]) -> None:
        super().__init__()
        self.seen = seen

    def synthesize(self, items: Sequence[tuple[str, str]]) -> list[bytes]:
        self.seen.add(threading.current_thread().name)
        return super().synthesize(items)


class _RecordingFolder:
    kind = "folder"
    port = "spy"

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def deliver(self, wav: bytes, name: str, duration_s: float) -> float:
        self.seen.add(threading.current_thread().name)
        return time.monotonic()

    def abort(self) -> None:
        pass


async def test_synthesis_and_playback_happen_on_one_worker_thread(rig: Any, tmp_path: Path) -> None:
    seen: set[str] = set()
    r: Rig = await rig(cache=tmp_path / "cold", tts=_ThreadSpy(seen), sink=_RecordingFolder(seen))
    await r.call("A", 1)
    await r.call("C", 5)
    assert await r.voice.drain()
    assert r.voice.renderer.synthesized > 0
    assert len(seen) == 1 and threading.current_thread().name not in seen


async def test_the_event_loop_keeps_serving_while_a_long_announcement_is_synthesized(
    rig: Any, tmp_path: Path
) -> None:
    # A long English sentence, never synthesized before (own cache, no warm-up): espeak-ng
    # needs a good fraction of a second for it while the loop must keep its 5 ms beat.
    text = " ".join(
        f"Number {{number}}, please go to counter {{counter}}; notice {i}: please have your "
        "identity card and the filled-in application form ready before you come."
        for i in range(48)  # 24 took 0.24 s on a fast machine: too short to tell a stall
    )
    r: Rig = await rig(
        cache=tmp_path / "cold",
        prewarm=False,
        repeat=1,
        templates=BASE.voice.templates.model_copy(update={"en": text}),
    )
    lag = 0.0
    done = asyncio.Event()

    async def beat() -> None:
        nonlocal lag
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lag = max(lag, time.perf_counter() - before - 0.005)

    ticker = asyncio.create_task(beat())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await r.call("A", 1)
    assert await r.voice.drain()
    busy = time.perf_counter() - started
    done.set()
    await ticker
    [wav] = r.wavs()
    assert audio.duration_s(read_wav(wav)) > 240  # it was long
    assert busy > 0.25  # and took its time to make
    # Had the synthesis run on the loop, the loop would have stalled for most of `busy`; on
    # the worker thread it keeps its beat (some leeway for a CPU shared with other work).
    assert lag < max(0.1, busy / 4), f"the loop stalled {lag * 1000:.0f} ms in {busy:.2f} s"
    print(f"busy {busy:.2f} s, worst loop lag {lag * 1000:.1f} ms")


# -- what the Mandarin voice really says -----------------------------------------------------


def phonemes(voice: str, text: str) -> str:
    return subprocess.run(
        ["espeak-ng", "-q", "-x", "-v", voice, "--", text],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_mandarin_announcement_carries_mandarin_syllables_not_english_letter_names() -> None:
    builder = PhraseBuilder(BASE)
    zh, _ = builder.announcement(
        "called", {"number": "A012", "service": "A", "counter": 3}
    ).sentences
    said = phonemes(PINYIN_VOICE, " ".join(clip.tts for clip in zh))
    # qǐng A líng yī èr hào dào sān hào chuāng kǒu bàn lǐ, with Mandarin tones (35, 55, 51...)
    for syllable in ("l'i35N", "j'i55", "'@r51", "s'a55n", "X'Au51", "ts.hw'A55N", "tS;h'i21N"):
        assert syllable in said, f"{syllable} missing from {said!r}"
    assert "(en)" not in said, f"espeak-ng switched to English: {said!r}"
    # What the issue warns of: the plain cmn voice reads the characters as English letters.
    assert "(en)" in phonemes("cmn", "请A012号到3号窗口办理")


def test_no_clip_of_the_hall_is_read_by_the_english_letter_reader() -> None:
    vocabulary = [clip for clip in PhraseBuilder(BASE).vocabulary() if clip.lang == "zh"]
    said = phonemes(PINYIN_VOICE, ", ".join(clip.tts for clip in vocabulary))
    assert "(en)" not in said


# -- voice packs -----------------------------------------------------------------------------

VOICEPACK = [sys.executable, "-m", "broadcast.voicepack"]


@pytest.fixture(scope="session")
def built_pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A default pack made by the real command, once for the session: (folder, its output)."""
    pack = tmp_path_factory.mktemp("voicepack") / "pack"
    # RuntimeWarning as an error: runpy warns if the package imported the module it runs.
    env = {**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"}
    built = subprocess.run(
        [*VOICEPACK, "build", str(pack)], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert built.returncode == 0, built.stderr
    return pack, built.stdout


def test_voicepack_build_writes_a_default_pack_that_covers_the_example_hall(
    built_pack: tuple[Path, str],
) -> None:
    pack, said = built_pack
    assert "files written" in said
    for clip in ("chime.wav", "zh/零.wav", "zh/号窗口办理.wav", "en/please go to counter.wav"):
        assert (pack / clip).is_file(), clip
    assert (pack / "manifest.json").is_file()
    checked = subprocess.run(
        [*VOICEPACK, "check", str(pack), "--config", "config.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 needed clip(s) missing" in checked.stdout


async def test_a_call_with_a_voice_pack_needs_no_synthesis(
    rig: Any, tmp_path: Path, built_pack: tuple[Path, str]
) -> None:
    r: Rig = await rig(cache=tmp_path / "cold", voice_pack=built_pack[0])
    await r.call("C", 6)
    assert await r.voice.drain()
    [wav] = r.wavs()
    pcm = read_wav(wav)
    assert audio.rms(pcm) > 1000
    assert pcm.startswith(audio.read_pcm((built_pack[0] / "chime.wav").read_bytes()))
    assert r.voice.renderer.synthesized == 0

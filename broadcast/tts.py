"""Text to speech with espeak-ng, and the cache of what it has said.

espeak-ng runs as a subprocess (argv, never a shell; the text comes after ``--`` so nothing
in it can be taken for an option) and writes a WAV to its stdout. It is fast (about 10 ms for
a clip on a small PC) but a cold call needs a dozen clips, so the clips of one call are
synthesized by several processes at once. pyttsx3 is not used: it drives the same espeak-ng
library, must be kept on one thread, and adds nothing for offline WAV output.

Clips are kept in memory and on disk (under the state directory), keyed by engine, voice,
speed and text, so after the first start-up the daemon never synthesizes a clip twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from .audio import AudioError, parse_wav, read_pcm, trim, wav_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what a cached clip holds changes (trimming, format)
SPEED_WPM = 160  # a little slower than espeak-ng's 175: halls echo, and the old must follow
PARALLEL = 6  # espeak-ng processes at once for one call's missing clips
TIMEOUT_S = 20.0  # a synthesis that takes longer is stuck


class TtsError(RuntimeError):
    """The text could not be spoken (espeak-ng missing, unknown voice, no audio)."""


class Espeak:
    """espeak-ng through its command line."""

    def __init__(self, program: str = "espeak-ng", speed: int = SPEED_WPM) -> None:
        self.program = program
        self.speed = speed

    def name(self, voice: str) -> str:
        """What identifies this engine's output for `voice` in a cache key."""
        return f"{self.program}|{voice}|{self.speed}"

    def argv(self, voice: str, text: str) -> list[str]:
        # -b 1: the text is UTF-8 whatever the locale (systemd services often run with C).
        return [self.program, "-v", voice, "-s", str(self.speed), "-b", "1", "--stdout", "--", text]

    def synthesize(self, items: Sequence[tuple[str, str]]) -> list[bytes]:
        """(voice, text) pairs -> their PCM, trimmed, in the common format; raises TtsError.

        Up to PARALLEL processes run at once: the work is in the processes, this thread only
        waits for them, so one worker thread still does all the synthesis.
        """
        results: list[bytes] = []
        for start in range(0, len(items), PARALLEL):
            batch = items[start : start + PARALLEL]
            procs: list[tuple[subprocess.Popen[bytes], str, str]] = []
            try:
                for voice, text in batch:
                    procs.append((self._spawn(voice, text), voice, text))
                for proc, voice, text in procs:
                    results.append(self._collect(proc, voice, text))
            finally:
                for proc, _, _ in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        return results

    def _spawn(self, voice: str, text: str) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self.argv(voice, text),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise TtsError(f"cannot run {self.program}: {exc.strerror or exc}") from exc

    def _collect(self, proc: subprocess.Popen[bytes], voice: str, text: str) -> bytes:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise TtsError(f"{self.program} took over {TIMEOUT_S:.0f} s for {text!r}") from None
        if proc.returncode != 0:
            why = err.decode("utf-8", "replace").strip().splitlines()
            raise TtsError(
                f"{self.program} -v {voice} failed (status {proc.returncode})"
                + (f": {why[0]}" if why else "")
            )
        try:
            channels, width, rate, pcm = parse_wav(out)
        except AudioError as exc:
            raise TtsError(f"{self.program} -v {voice} gave no usable WAV: {exc}") from None
        if (channels, width) != (1, 2):
            raise TtsError(f"{self.program} gave {channels} channel(s) of {8 * width}-bit audio")
        if rate != 22050:
            raise TtsError(f"{self.program} gave {rate} Hz audio, expected 22050 Hz")
        clip = trim(pcm)
        if not clip:
            raise TtsError(f"{self.program} -v {voice} said nothing for {text!r}")
        return clip


class ClipCache:
    """Synthesized clips by key: the most recent in memory, all of them on disk.

    Memory holds at most `memory_bytes` of PCM (the least recently said go first): a hall's
    whole vocabulary is several MB, a read from the disk cache (in the OS page cache after
    the first call) costs tens of microseconds, and the daemon runs for years on small
    machines. Without a directory everything stays in memory: there is nowhere else.

    Used from the voice worker thread only; the lock covers the statistics that the status
    page reads from the event loop.
    """

    def __init__(self, directory: Path | None, memory_bytes: int = 1 << 20) -> None:
        self.directory = directory
        self.memory_bytes = memory_bytes
        self._held = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(f"{CACHE_VERSION}|{key}".encode()).hexdigest()[:40]
        return self.directory / f"{digest}.wav"

    def get(self, key: str) -> bytes | None:
        pcm = self._memory.get(key)
        if pcm is not None:
            self._memory.move_to_end(key)
            with self._lock:
                self.hits += 1
            return pcm
        path = self._path(key)
        if path is not None:
            try:
                pcm = read_pcm(path.read_bytes())
            except (OSError, AudioError):
                pcm = None  # not there, or a torn write: synthesize it again
            if pcm:
                self._remember(key, pcm)
                with self._lock:
                    self.disk_hits += 1
                return pcm
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, pcm: bytes) -> None:
        self._remember(key, pcm)
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(f".{os.getpid()}.part")
            part.write_bytes(wav_bytes(pcm))
            os.replace(part, path)  # readers never see half a clip
        except OSError as exc:
            # A full or read-only disk costs speed at the next start, not a call.
            log.warning("voice: cannot write clip cache %s: %s", path, exc)

    def _remember(self, key: str, pcm: bytes) -> None:
        old = self._memory.pop(key, None)
        self._held += len(pcm) - (len(old) if old is not None else 0)
        self._memory[key] = pcm
        if self.directory is None:
            return
        while self._held > self.memory_bytes and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            self._held -= len(dropped)

    def clear(self, disk: bool = False) -> None:
        """Forget the clips (memory; and on disk if `disk`), e.g. after a voice change."""
        self._memory.clear()
        self._held = 0
        if disk and self.directory is not None and self.directory.is_dir():
            for path in self.directory.glob("*.wav"):
                path.unlink(missing_ok=True)

    def __len__(self) -> int:
        """Clips held in memory (the disk holds every clip ever made)."""
        return len(self._memory)

    @property
    def held_bytes(self) -> int:
        return self._held

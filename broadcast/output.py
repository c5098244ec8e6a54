"""Where announcements go: a player program (the hall's speakers) or a folder of WAV files.

Both are called on the voice worker thread, one announcement at a time, and block until the
announcement is done with: a player until it exits (so announcements never overlap), a
folder until the file is in place. Each returns the moment the first sample was handed over
(the player started on a complete file; the file renamed into the folder), which is what
the latency figure measures. A failure raises OutputFault; the caller reports it and goes
on with the next call.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

PLAYER_GRACE_S = 15.0  # a player still running this long after the audio's end is hung
FOLDER_KEEP = 500  # WAV files kept in the output folder (about 200 MB); the oldest go


class OutputFault(Exception):
    """The announcement could not be played. `handed` is set if the player had started."""

    def __init__(self, detail: str, handed: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.handed = handed


class Output(Protocol):
    kind: str  # "player" or "folder"
    port: str  # what device.fault names as the port: the program or the folder

    def deliver(self, wav: bytes, name: str, duration_s: float) -> float:
        """Play or store one announcement; return time.monotonic() of the hand-over."""
        ...

    def abort(self) -> None:
        """Stop what is playing (shutdown). Called from another thread."""
        ...


class PlayerOutput:
    """Runs ``argv + [wav path]`` for each announcement, without a shell, and waits for it."""

    kind = "player"

    def __init__(
        self, argv: tuple[str, ...], scratch: Path, grace_s: float = PLAYER_GRACE_S
    ) -> None:
        if not argv:
            raise ValueError("the player command is empty")
        self.argv = argv
        self.grace_s = grace_s
        self.port = argv[0]
        self.scratch = scratch
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()  # set from the loop's thread by abort()
        self._serial = itertools.count(1)

    def deliver(self, wav: bytes, name: str, duration_s: float) -> float:
        # The file is complete before the player starts: players read WAVs from the start.
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
            path = self.scratch / f"playing-{os.getpid()}-{next(self._serial)}.wav"
            path.write_bytes(wav)
        except OSError as exc:
            raise OutputFault(f"cannot write the announcement to {self.scratch}: {exc}") from exc
        try:
            return self._run(path, duration_s)
        finally:
            path.unlink(missing_ok=True)

    def _run(self, path: Path, duration_s: float) -> float:
        with self._lock:
            if self._stopped.is_set():
                raise OutputFault("voice output stopped")
            try:
                # New session: a Ctrl-C meant for the daemon does not cut a call off midway;
                # shutdown stops the player through abort() instead.
                proc = subprocess.Popen(
                    [*self.argv, str(path)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                raise OutputFault(
                    f"cannot run player {self.argv[0]}: {exc.strerror or exc}"
                ) from exc
            handed = time.monotonic()
            self._proc = proc
        try:
            _, err = proc.communicate(timeout=duration_s + self.grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.communicate()
            raise OutputFault(
                f"player {self.argv[0]} still running {self.grace_s:g} s after the "
                "announcement ended; killed",
                handed,
            ) from None
        finally:
            with self._lock:
                self._proc = None
        if self._stopped.is_set():
            return handed
        if proc.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            why = f": {lines[-1][:160]}" if lines else ""
            if proc.returncode < 0:
                status = f"killed by signal {-proc.returncode}"
            else:
                status = f"exited with status {proc.returncode}"
            raise OutputFault(f"player {self.argv[0]} {status}{why}", handed)
        return handed

    def abort(self) -> None:
        with self._lock:
            self._stopped.set()
            proc = self._proc
        if proc is not None:
            _kill_group(proc, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the player and whatever it started (its own session, so its own group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):  # it ended meanwhile
        os.killpg(proc.pid, sig)


class FolderOutput:
    """Writes each announcement as a WAV file into a folder (the demo, tests, or a PA system
    that picks files up). Names sort in the order the announcements were made."""

    kind = "folder"

    def __init__(self, folder: Path, keep: int = FOLDER_KEEP) -> None:
        self.folder = folder
        self.port = str(folder)
        self.keep = keep
        self._serial = itertools.count(1)
        self._since_prune = 0

    def deliver(self, wav: bytes, name: str, duration_s: float) -> float:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
        final = self.folder / f"{stamp}-{next(self._serial):04d}-{name}.wav"
        # Written under a name no *.wav watcher picks up, then renamed: a reader of the folder
        # sees a complete file or none.
        part = self.folder / f".{final.stem}.part"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            part.write_bytes(wav)
            os.replace(part, final)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise OutputFault(f"cannot write to {self.folder}: {exc.strerror or exc}") from exc
        handed = time.monotonic()
        self._since_prune += 1
        if self._since_prune >= 50:
            self._since_prune = 0
            self._prune()
        return handed

    def _prune(self) -> None:
        """Keep the folder from filling the disk in a demo left running for weeks."""
        try:
            files = sorted(p for p in self.folder.glob("*.wav") if p.name[:8].isdigit())
            for old in files[: max(0, len(files) - self.keep)]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("voice: cannot prune %s: %s", self.folder, exc)

    def abort(self) -> None:
        pass  # writing a file takes milliseconds: nothing to stop

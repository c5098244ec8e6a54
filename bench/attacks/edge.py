"""The serial line and the config file as an attacker uses them (issue 17: the edge inputs).

- garbage: a dispenser pours endless lines, random bytes and over-long lines at a real daemon
  with a PING between each batch: bytes sent, bad lines the daemon counted, pings answered,
  log bytes written, RSS before and after.
- take flood: 5,000 `TAKE A` at once while a keypad presses NEXT: how many got a ticket, the
  daily limit, or busy; requests left unanswered; the keypad's ack time; /healthz meanwhile.
- keypad flood: keypad 2 sends 4,000 presses and bad frames; how long its neighbour's NEXT
  took to be acted on.
- config: `hall-daemon check-config` on the example, an alias bomb and a 50 MB file: seconds,
  peak RSS and the line it printed.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drivers.bus68 import Key
from tests.daemon_harness import REPO
from tests.edge_harness import EdgeHall, key_frame, line
from tests.test_attack_edge import garbage_lines
from tests.test_config_hostile import alias_bomb, hall

ROUNDS = 50
TAKES = 5000


def garbage(edge: EdgeHall) -> dict[str, object]:
    wire = edge.dispenser
    rss_before, log_before = edge.rss_kb(), edge.log_bytes()
    rng = random.Random(17)
    sent = 0
    for n in range(ROUNDS):
        batch = b"\xff" * 200_000 + b"\n" + garbage_lines(rng, 200) + b"x" * 201 + b"\n"
        batch += line(f"PING #{n + 1}")
        wire.send(batch)
        sent += len(batch)
    wire.wait_for(f"PONG #{ROUNDS}\n".encode(), timeout=60)
    pongs = sum(wire.has(f"PONG #{n + 1}\n".encode()) for n in range(ROUNDS))
    return {
        "bytes_sent": sent,
        "bad_lines_counted": int(edge.metric("hall_device_frames_bad_total", port="dispenser")),
        "pings_answered": f"{pongs}/{ROUNDS}",
        "log_bytes": edge.log_bytes() - log_before,
        "rss_mb_before": round(rss_before / 1024, 1),
        "rss_mb_after": round(edge.rss_kb() / 1024, 1),
    }


def take_flood(edge: EdgeHall) -> dict[str, object]:
    wire = edge.dispenser
    wire.received.clear()
    log_before = edge.log_bytes()
    started = time.monotonic()
    # Ids the garbage round's PINGs did not use: a repeated id would get the PONG again.
    wire.send(b"".join(line(f"TAKE A #{n}") for n in range(100_001, 100_001 + TAKES)))
    press = key_frame(1, 1, Key.NEXT)
    pressed = time.monotonic()
    edge.bus.send(press)
    edge.bus.wait_for(press, timeout=5)
    ack_s = time.monotonic() - pressed
    healthz_s = edge.healthz_s()
    deadline = time.monotonic() + 120
    while _answered(wire.text()) < TAKES and time.monotonic() < deadline:
        time.sleep(0.1)
    replies = wire.text().splitlines()
    return {
        "takes_sent": TAKES,
        "tickets": sum(r.startswith("TICKET") for r in replies),
        "daily_limit": sum(r.startswith("ERR 429") for r in replies),
        "busy": sum(r.startswith("ERR 500 busy") for r in replies),
        "unanswered": TAKES - _answered(wire.text()),
        "all_answered_s": round(time.monotonic() - started, 2),
        "keypad_ack_ms": round(ack_s * 1000, 1),
        "healthz_ms_during": round(healthz_s * 1000, 1),
        "log_bytes": edge.log_bytes() - log_before,
    }


def _answered(text: str) -> int:
    return sum(r.startswith(("TICKET", "ERR")) for r in text.splitlines())


def keypad_flood(edge: EdgeHall) -> dict[str, object]:
    rng = random.Random(6)
    frames = bytearray()
    for n in range(4000):
        frames += key_frame(2, n, rng.choice(list(Key)))
        if n % 10 == 0:
            frames += bytes([0x68, 0x04, 0x04, 0x68, 0x02, 0x01, n & 0xFF, 0x0C, 0x00, 0x16])
    for n in range(1, 6):
        edge.dispenser.send(line(f"TAKE B #{90_000 + n}"))
    edge.dispenser.wait_for(b"#90005\n")
    edge.bus.send(bytes(frames))
    started = time.monotonic()
    edge.bus.send(key_frame(4, 1, Key.NEXT))
    while edge.counter_ticket(4) is None and time.monotonic() - started < 10:
        time.sleep(0.02)
    return {
        "frames_sent": 4000 + 400,
        "neighbour_called_ms": round((time.monotonic() - started) * 1000),
        "neighbour_called": edge.counter_ticket(4),
    }


def check_config(tmp: Path) -> dict[str, object]:
    files = {
        "example": (REPO / "config.yaml").read_bytes(),
        "alias_bomb": alias_bomb().encode(),
        "file_50mb": hall().encode() + b"#" * 50 * 2**20,
    }
    figures: dict[str, object] = {}
    for name, data in files.items():
        path = tmp / f"{name}.yaml"
        path.write_bytes(data)
        started = time.monotonic()
        command = [sys.executable, "-m", "hall_daemon", "check-config", str(path)]
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *command],
            capture_output=True,
            text=True,
            timeout=120,
        )
        *said, peak_kb = done.stderr.strip().splitlines()
        said = [s for s in said if not s.startswith("Command exited")]  # time's own line
        figures[name] = {
            "exit": done.returncode,
            "seconds": round(time.monotonic() - started, 2),
            "peak_rss_mb": round(int(peak_kb) / 1024, 1),
            "says": " ".join(said).replace(str(tmp) + "/", ""),
        }
    return figures


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, object] = {"config": check_config(Path(tmp))}
        edge = EdgeHall(Path(tmp)).start()
        try:
            figures["garbage"] = garbage(edge)
            figures["take_flood"] = take_flood(edge)
            figures["keypad_flood"] = keypad_flood(edge)
        finally:
            edge.stop()
    return figures

"""Per-device health as the status page shows it and the hall logs it (device.* events)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

UNKNOWN = "unknown"  # not heard since the daemon started; never reported to the hall


@dataclass
class DeviceHealth:
    id: str  # the name in ReportDevice and device.* events
    kind: str
    port: str
    address: int | None = None  # bus68 only
    counter: int | None = None
    state: str = UNKNOWN  # as last reported to the hall: online, offline or fault
    detail: str = ""
    last_seen: float | None = None  # time.monotonic()
    frames_good: int = 0
    frames_bad: int = 0  # well framed, but content the contract does not allow
    retransmissions: int = 0  # repeats of a frame or request id already handled
    refused: int = 0  # commands the hall refused (DomainError)
    unresponsive: int = 0  # times it did not echo a host frame after the retries
    responsive: bool = True  # False until its next message after it stopped echoing

    def heard(self, now: float) -> None:
        self.last_seen = now

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        return {
            "id": self.id,
            "kind": self.kind,
            "port": self.port,
            "address": self.address,
            "counter": self.counter,
            "state": self.state,
            "online": self.state == "online",
            "detail": self.detail,
            "last_seen_s_ago": None
            if self.last_seen is None
            else round(max(now - self.last_seen, 0.0), 1),
            "frames_good": self.frames_good,
            "frames_bad": self.frames_bad,
            "retransmissions": self.retransmissions,
            "refused": self.refused,
            "unresponsive": self.unresponsive,
            "responsive": self.responsive,
        }

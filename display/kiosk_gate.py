"""Who may issue tickets from /kiosk, and how fast.

Only the kiosks the hall listed in config.yaml (`kiosks:`), known by their address or by the
key their browser sends in the X-Kiosk-Key header; by default only this PC. Each kiosk has a
ticket rate that an applicant at the screen never reaches and a script always does, and
refused check-in codes are limited per kiosk and for the whole hall, each taken before the
code is looked up and given back when it was right, so that guessing codes is hopeless.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from hall_daemon.admin.ratelimit import TokenBuckets, client_key
from hall_daemon.checkin_brake import CheckInBrake
from hall_daemon.config import HallConfig, KioskConfig, RateLimit

log = logging.getLogger(__name__)

KEY_HEADER = "X-Kiosk-Key"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    slug: str
    message: str
    retry_after_s: float = 0.0

    def headers(self) -> dict[str, str]:
        if self.retry_after_s <= 0:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


NOT_A_KIOSK = Refusal(
    403,
    "not-a-kiosk",
    "only the hall's kiosks issue tickets here; this machine is not one of the "
    "kiosks in config.yaml (kiosks:)",
)


def _buckets(limit: RateLimit, max_clients: int = 4096) -> TokenBuckets:
    return TokenBuckets(limit.burst, limit.every_s, max_clients)


class KioskGate:
    def __init__(
        self,
        config: HallConfig,
        clock: Callable[[], float] = time.monotonic,
        codes: CheckInBrake | None = None,
    ) -> None:
        """`codes`: the hall's one brake on wrong check-in codes, shared with the dispensers."""
        self.clock = clock
        self._networks: list[tuple[IpNetwork, str]] = []
        self._keys: list[tuple[bytes, str]] = []
        for kiosk in config.kiosks:
            self._add(kiosk)
        if config.web.public_url and "kiosks" not in config.model_fields_set:
            log.warning(
                "kiosks: not set, so this PC (127.0.0.1, ::1) is the only kiosk; if %s "
                "reaches the daemon through a proxy on this PC, every visitor comes from "
                "127.0.0.1 and could issue tickets: list the kiosks in config.yaml",
                config.web.public_url,
            )
        self.tickets = _buckets(config.kiosk_limits.tickets)
        self.codes = codes or CheckInBrake(config.kiosk_limits, clock)
        self.not_a_kiosk = 0

    def _add(self, kiosk: KioskConfig) -> None:
        if kiosk.address is not None:
            self._networks.append((ipaddress.ip_network(kiosk.address), kiosk.id))
            return
        try:
            key = kiosk.read_key()
        except (OSError, UnicodeDecodeError) as exc:
            # check-config read it; if it has gone since, that kiosk alone stays out.
            log.error("kiosk %s: cannot read its key file %s: %s", kiosk.id, kiosk.key_file, exc)
            return
        self._keys.append((key.encode(), kiosk.id))

    def client(self, request: web.Request) -> str | Refusal:
        """Who the limits count this request as, or the refusal: a kiosk known by its key
        is the same kiosk from any address; one known by address is that address."""
        offered = request.headers.get(KEY_HEADER)
        if offered is not None:
            kiosk_id = self._kiosk_with_key(offered.strip().encode())
            return kiosk_id if kiosk_id is not None else self._refused()
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return self._refused()
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        kiosk_id = next((kid for net, kid in self._networks if address in net), None)
        if kiosk_id is None:
            return self._refused()
        return f"{kiosk_id}@{client_key(request.remote)}"

    def _kiosk_with_key(self, offered: bytes) -> str | None:
        found = None
        for key, kiosk_id in self._keys:  # every key compared: no early exit to time
            if hmac.compare_digest(key, offered):
                found = kiosk_id
        return found

    def _refused(self) -> Refusal:
        self.not_a_kiosk += 1
        return NOT_A_KIOSK

    def take_ticket(self, client: str) -> Refusal | None:
        wait = self.tickets.take(client, self.clock())
        if wait <= 0:
            return None
        return Refusal(429, "too-many-tickets", "tickets are issued more slowly than that", wait)

    def take_code(self, client: str) -> Refusal | None:
        """Counts a check-in as refused before its code is looked up; `code_accepted`
        gives it back."""
        wait = self.codes.take(f"kiosk:{client}")
        if wait <= 0:
            return None
        message = "too many wrong codes: try again later, or ask at a counter"
        return Refusal(429, "too-many-codes", message, wait)

    def code_accepted(self, client: str) -> None:
        self.codes.give_back(f"kiosk:{client}")

    def stats(self) -> dict[str, int]:
        return {
            "not_a_kiosk": self.not_a_kiosk,
            "tickets_refused": self.tickets.refused,
            "codes_refused": self.codes.refused,
        }

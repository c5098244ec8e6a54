"""What the engine knows of the hall: its services and counters, and the domain errors.

These are plain frozen dataclasses so the engine can be built and tested without YAML;
hall_daemon.config turns a validated config.yaml into a `HallSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class OpeningWindow:
    """Open from `start` to `end` local time on the given ISO weekdays (1 = Monday)."""

    start: time
    end: time
    weekdays: frozenset[int] = frozenset(range(1, 8))

    def contains(self, local: datetime) -> bool:
        return local.isoweekday() in self.weekdays and self.start <= local.time() < self.end


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    code: str
    name: str
    prefix: str
    number: int  # the keypad's TRANSFER number for this service
    name_en: str = ""
    hours: tuple[OpeningWindow, ...] = ()  # empty: always open
    daily_limit: int = 999
    mean_service_s: float = 300.0  # the forecaster's prior until history teaches it better

    def is_open(self, local: datetime) -> bool:
        return not self.hours or any(w.contains(local) for w in self.hours)


@dataclass(frozen=True, slots=True)
class CounterSpec:
    id: int
    name: str
    services: tuple[str, ...]  # service codes in order of preference
    name_en: str = ""


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str = "weighted-wait"
    priority_streak_limit: int = 3  # after this many priority calls in a row, take a normal ticket
    preference_decay: float = 0.5  # a ticket of the k-th preferred service counts decay**k
    no_show_after_recalls: int = 3  # a recall beyond this many is a no-show; 0 = never automatic
    checkin_early_s: int = 1800  # an appointment can be checked in this long before its start


@dataclass(frozen=True, slots=True)
class HallSpec:
    services: tuple[ServiceSpec, ...]
    counters: tuple[CounterSpec, ...]
    timezone: str = "Asia/Shanghai"
    day_reset_hour: int = 4
    policy: PolicySpec = field(default_factory=PolicySpec)

    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone)

    def business_day(self, at: datetime) -> date:
        """The hall day `at` belongs to: numbers restart at `day_reset_hour` local time.

        Total: a time at the calendar's edge (year 1 or 9999 with an offset) belongs to its
        first or last day instead of raising, so no value in a log can stop a day reset."""
        try:
            local = at.astimezone(self.tz())
            return (local - timedelta(hours=self.day_reset_hour)).date()
        except OverflowError:
            return date.max if at.year > 1 else date.min


class DomainError(Exception):
    """A command that cannot apply. `code` follows the line protocol's error codes."""

    code = 409
    slug = "conflict"

    def __init__(self, message: str, slug: str | None = None) -> None:
        super().__init__(message)
        if slug is not None:
            self.slug = slug
        # Events the engine applied before it refused (a new hall day began): store them too.
        self.events: list[Any] = []

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(DomainError):
    code = 404
    slug = "not-found"


class Invalid(DomainError):
    code = 400
    slug = "invalid"


class Conflict(DomainError):
    code = 409
    slug = "conflict"


class LimitReached(DomainError):
    code = 429
    slug = "daily-limit"

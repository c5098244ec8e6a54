"""The 7-day outlook (错峰): expected arrivals and wait per service, hour by hour.

From history by weekday and hour, each weekday's figure shrunk towards the same hour on all
days (a weekday seen on few days borrows from the others). The current hour of today uses
the live forecast instead. Same shape as sync/payloads.outlook_placeholder.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, Protocol

from ..model import ServiceSpec
from ..state import HallState
from .closed_form import Forecast
from .learn import Learned

OUTLOOK_DAYS = 7
METHOD = "weekday-hour-history"
SHRINK_DAYS = 2.0  # a weekday's own mean counts as much as the all-days mean after 2 such days
SPREAD = (0.5, 1.6)  # the historical wait's 80 % band, relative (waits are right-skewed)


class _Live(Protocol):
    def __call__(self, state: HallState, service: str, ahead: int, now: datetime) -> Forecast: ...


def _open_in_hour(spec: ServiceSpec, day: datetime, hour: int) -> bool:
    if not spec.hours:
        return True
    start = time(hour)
    end = time(hour + 1) if hour < 23 else time.max
    return any(
        day.isoweekday() in w.weekdays and w.start < end and w.end > start
        for w in spec.hours
        if w.start < w.end
    )


def _smoothed(cells: list[list[float]], days: list[int], wd: int, hour: int) -> float | None:
    total_days = sum(days)
    if total_days == 0:
        return None
    per_all = sum(cells[d][hour] for d in range(7)) / total_days
    n = days[wd]
    per_wd = cells[wd][hour] / n if n else per_all
    return (n * per_wd + SHRINK_DAYS * per_all) / (n + SHRINK_DAYS)


def _mean_wait(learned: Learned, code: str, wd: int, hour: int) -> float | None:
    cells = learned.waits[code]
    n_all = sum(cells[d][hour][0] for d in range(7))
    if n_all == 0:
        return None
    mean_all = sum(cells[d][hour][1] for d in range(7)) / n_all
    n, total = cells[wd][hour]
    mean_wd = total / n if n else mean_all
    k = 10.0  # tickets
    return (n * mean_wd + k * mean_all) / (n + k)


def build_outlook(state: HallState, learned: Learned, live: _Live, now: datetime) -> dict[str, Any]:
    tz = state.spec.tz()
    local = now.astimezone(tz)
    days_seen = [len(d) for d in learned.days]
    out_days = []
    for offset in range(OUTLOOK_DAYS):
        day = local + timedelta(days=offset)
        wd = day.weekday()
        first = local.hour if offset == 0 else 0
        hours = []
        for hour in range(first, 24):
            services = []
            for code, spec in state.services.items():
                if not _open_in_hour(spec, day, hour):
                    continue
                crowd = _smoothed(learned.arrivals[code], days_seen, wd, hour)
                if offset == 0 and hour == local.hour:
                    f = live(state, code, state.ahead_if_issued(code, False), now)
                else:
                    w = _mean_wait(learned, code, wd, hour)
                    if w is None:
                        f = live(state, code, state.ahead_if_issued(code, False), now)
                    else:
                        f = {
                            "wait_s": round(w),
                            "p10_s": round(w * SPREAD[0]),
                            "p90_s": round(w * SPREAD[1]),
                            "method": METHOD,
                        }
                expected = None if crowd is None else round(crowd)
                services.append({"service": code, "crowd": expected, "forecast": f})
            if services:
                hours.append({"hour": hour, "services": services})
        out_days.append({"date": day.date().isoformat(), "hours": hours})
    return {"method": METHOD, "days": out_days}

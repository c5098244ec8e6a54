"""Efficiency statistics (效率统计): the hall's stored events in, figures out.

Pure: no I/O, no clock, no asyncio. `summarize_day` turns one hall day's events into one
record per ticket plus hourly cells; `build_report` combines the days of a period with the
days before it (for the historical best of the same weekday and hour) into the figures the
admin page, its JSON API and its CSV export show.

What the events mean here (engine.py):
- wait: `ticket.issued` → the ticket's first `ticket.called`, counted for the service and
  counter of that first call;
- handling: the start of the final visit at a counter (its `ticket.serving`, else the call
  that began it) → `ticket.done`, counted for the service and counter that finished it;
- a ticket issued in the period and neither done, a no-show nor cancelled by its end is
  "unfinished" (the engine cancels those with reason `day_end` the next morning, outside
  the day's time range);
- a transfer (一票到底) counts for the service it left and the counter that sent it on.

Percentiles interpolate linearly between order statistics (numpy's default), so the p90 of
60, 120, 180, 240, 300 s is 276 s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

import numpy as np

from . import events as ev
from .engine import DAY_STARTED
from .events import StoredEvent
from .model import HallSpec

SERVED = "served"
NO_SHOW = "no_show"
CANCELLED = "cancelled"
UNFINISHED = "unfinished"

HALL = "hall"
LOOKBACK_WEEKS = 8  # the historical best looks this many same weekdays back
Z_LIMIT = 3.0  # |robust z| above this flags a ticket or a counter
COUNTER_MIN_EFFECT = 0.25  # and a counter must also be this much slower or faster than expected
MIN_MODEL_TICKETS = 30  # fewer served tickets than this: no regression, say so
MAD_FLOOR = 0.05  # log-seconds: identical times must not make every small deviation "far"
MAX_LISTED_OUTLIERS = 200


def service_scope(code: str) -> str:
    return f"s:{code}"


def counter_scope(counter: int) -> str:
    return f"c:{counter}"


class TicketRecord(NamedTuple):
    """One ticket's day, as the statistics need it (times in seconds, hours local)."""

    day: date
    number: str
    service: str  # as issued
    issued_hour: int
    priority: bool
    channel: str
    first_service: str | None  # when first called
    first_counter: int | None
    wait_s: float | None
    outcome: str  # served / no_show / cancelled / unfinished
    end_service: str | None
    end_counter: int | None
    end_hour: int | None
    handle_s: float | None  # only for served tickets
    handle_hour: int | None  # local hour the final visit at the counter began
    transfers: tuple[tuple[str, int | None], ...]  # (service left, counter that sent it)
    rating: int | None
    rating_service: str | None
    rating_counter: int | None


class HourCell(NamedTuple):
    issued: int
    served: int
    wait_sum: float
    wait_n: int


# scope ("hall", "s:A", "c:3") → local hour → cell
Hourly = dict[str, dict[int, HourCell]]


@dataclass(frozen=True, slots=True)
class ScopeFigures:
    """A scope's counts and samples for one day, or summed over a period."""

    counts: tuple[int, ...]  # in COUNTS order
    waits: np.ndarray
    handles: np.ndarray
    stars: tuple[int, ...]  # how many ratings of 1..5

    def row(self) -> dict[str, Any]:
        n = sum(self.stars)
        mean = round(sum((i + 1) * k for i, k in enumerate(self.stars)) / n, 2) if n else None
        return {
            **dict(zip(COUNTS, self.counts, strict=True)),
            "wait": distribution(self.waits),
            "handle": distribution(self.handles),
            "ratings": {"n": n, "mean": mean, "dist": list(self.stars)},
        }


@dataclass(frozen=True, slots=True)
class ModelColumns:
    """The served tickets' columns for the handling-time regression."""

    refs: np.ndarray  # index into the day's (or period's) tickets
    handle: np.ndarray  # seconds
    service: np.ndarray  # str
    hour: np.ndarray  # int
    counter: np.ndarray  # int

    @classmethod
    def of(cls, records: Sequence[TicketRecord]) -> ModelColumns:
        idx = [
            i for i, r in enumerate(records) if r.handle_s is not None and r.end_counter is not None
        ]
        pick = [records[i] for i in idx]
        return cls(
            np.asarray(idx, dtype=np.int64),
            np.asarray([r.handle_s for r in pick], dtype=float),
            np.asarray([r.end_service or r.service for r in pick], dtype=str),
            np.asarray([-1 if r.handle_hour is None else r.handle_hour for r in pick], np.int64),
            np.asarray([r.end_counter for r in pick], dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[tuple[ModelColumns, int]]) -> ModelColumns:
        """Join days' columns; each part's refs are shifted by its offset."""
        if not parts:
            return cls.of([])
        return cls(
            np.concatenate([p.refs + off for p, off in parts]),
            np.concatenate([p.handle for p, _ in parts]),
            np.concatenate([p.service for p, _ in parts]),
            np.concatenate([p.hour for p, _ in parts]),
            np.concatenate([p.counter for p, _ in parts]),
        )


@dataclass(frozen=True, slots=True)
class DaySummary:
    day: date
    tickets: tuple[TicketRecord, ...]
    hourly: Hourly
    figures: dict[str, ScopeFigures] = field(default_factory=dict)
    model: ModelColumns | None = None

    @property
    def active(self) -> bool:
        """Did the hall issue anything this day (days it was shut give no 'best')."""
        return bool(self.tickets)


def day_bounds(spec: HallSpec, day: date) -> tuple[datetime, datetime]:
    """The hall day's time range [start, end): from the reset hour to the next one."""
    tz = spec.tz()
    start = datetime.combine(day, time(spec.day_reset_hour), tz)
    end = datetime.combine(day + timedelta(days=1), time(spec.day_reset_hour), tz)
    return start, end


# -- one day ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Open:
    """A ticket while its day is being read."""

    number: str
    service: str
    issued_at: datetime
    issued_hour: int
    priority: bool
    channel: str
    current_service: str
    first_service: str | None = None
    first_counter: int | None = None
    wait_s: float | None = None
    visit_start: datetime | None = None  # the current visit's call, then its serving
    visit_hour: int | None = None
    outcome: str = UNFINISHED
    end_service: str | None = None
    end_counter: int | None = None
    end_hour: int | None = None
    handle_s: float | None = None
    handle_hour: int | None = None
    transfers: list[tuple[str, int | None]] = field(default_factory=list)
    rating: int | None = None
    rating_service: str | None = None
    rating_counter: int | None = None

    def record(self, day: date) -> TicketRecord:
        return TicketRecord(
            day,
            self.number,
            self.service,
            self.issued_hour,
            self.priority,
            self.channel,
            self.first_service,
            self.first_counter,
            self.wait_s,
            self.outcome,
            self.end_service,
            self.end_counter,
            self.end_hour,
            self.handle_s,
            self.handle_hour,
            tuple(self.transfers),
            self.rating,
            self.rating_service,
            self.rating_counter,
        )


def summarize_day(spec: HallSpec, day: date, events: Iterable[StoredEvent]) -> DaySummary:
    """One hall day's events (its time range, in seq order) → its ticket records.

    Events about tickets issued before the range (yesterday's `day_end` cancellations at
    the reset hour) are ignored; a `hall.day_started` starts the day's numbering afresh.
    """
    tz = spec.tz()
    tickets: dict[str, _Open] = {}
    done: list[_Open] = []
    for e in events:
        kind = e.type
        if kind == DAY_STARTED:
            done.extend(tickets.values())
            tickets = {}
            continue
        if not kind.startswith("ticket."):
            continue
        d = e.data
        if kind == ev.TICKET_ISSUED:
            at = e.at
            tickets[d["number"]] = _Open(
                d["number"],
                d["service"],
                at,
                at.astimezone(tz).hour,
                bool(d.get("priority")),
                str(d.get("channel", "")),
                d["service"],
            )
            continue
        t = tickets.get(d.get("number", ""))
        if t is None:
            continue
        if kind == ev.TICKET_CALLED:
            t.visit_start, t.visit_hour = e.at, e.at.astimezone(tz).hour
            if t.first_counter is None:
                t.first_service, t.first_counter = t.current_service, d["counter"]
                t.wait_s = (e.at - t.issued_at).total_seconds()
        elif kind == ev.TICKET_SERVING:
            t.visit_start, t.visit_hour = e.at, e.at.astimezone(tz).hour
        elif kind == ev.TICKET_DONE:
            t.outcome, t.end_service, t.end_counter = SERVED, t.current_service, d["counter"]
            t.end_hour = e.at.astimezone(tz).hour
            if t.visit_start is not None:
                t.handle_s = (e.at - t.visit_start).total_seconds()
                t.handle_hour = t.visit_hour
        elif kind == ev.TICKET_NO_SHOW:
            t.outcome, t.end_service, t.end_counter = NO_SHOW, t.current_service, d["counter"]
            t.end_hour = e.at.astimezone(tz).hour
        elif kind == ev.TICKET_CANCELLED:
            # The engine's own end-of-day sweep is not somebody cancelling: left unfinished.
            if d.get("reason") != "day_end":
                t.outcome, t.end_service = CANCELLED, t.current_service
                t.end_counter = d.get("counter")
                t.end_hour = e.at.astimezone(tz).hour
        elif kind == ev.TICKET_TRANSFERRED:
            t.transfers.append((d["from"], d.get("counter")))
            t.current_service = d["to"]
            t.visit_start = t.visit_hour = None
        elif kind == ev.TICKET_SUSPENDED:
            t.visit_start = t.visit_hour = None
        elif kind == ev.TICKET_RATED:
            t.rating, t.rating_service, t.rating_counter = (
                int(d["score"]),
                d.get("service"),
                d.get("counter"),
            )
    done.extend(tickets.values())
    records = tuple(t.record(day) for t in done)
    return DaySummary(day, records, hourly_cells(records), tally(records), ModelColumns.of(records))


def hourly_cells(records: Iterable[TicketRecord]) -> Hourly:
    """Issued (by issue hour), served (by hour done), wait (by issue hour) per scope."""
    acc: dict[str, dict[int, list[float]]] = {}

    def add(scope: str, hour: int, slot: int, value: float = 1.0) -> None:
        cell = acc.setdefault(scope, {}).setdefault(hour, [0, 0, 0.0, 0])
        cell[slot] += value
        if slot == 2:
            cell[3] += 1

    for r in records:
        add(HALL, r.issued_hour, 0)
        add(service_scope(r.service), r.issued_hour, 0)
        if r.outcome == SERVED and r.end_hour is not None:
            add(HALL, r.end_hour, 1)
            add(service_scope(r.end_service or r.service), r.end_hour, 1)
            if r.end_counter is not None:
                add(counter_scope(r.end_counter), r.end_hour, 1)
        if r.wait_s is not None:
            add(HALL, r.issued_hour, 2, r.wait_s)
            add(service_scope(r.first_service or r.service), r.issued_hour, 2, r.wait_s)
            if r.first_counter is not None:
                add(counter_scope(r.first_counter), r.issued_hour, 2, r.wait_s)
    return {
        scope: {h: HourCell(int(c[0]), int(c[1]), float(c[2]), int(c[3])) for h, c in hours.items()}
        for scope, hours in acc.items()
    }


# -- figures ------------------------------------------------------------------------------


def distribution(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """n, mean, median, p90 (seconds, to 0.1 s); None where there is nothing to measure."""
    a = np.asarray(values, dtype=float)
    if not a.size:
        return {"n": 0, "mean": None, "median": None, "p90": None}
    return {
        "n": int(a.size),
        "mean": round(float(a.mean()), 1),
        "median": round(float(np.median(a)), 1),
        "p90": round(float(np.percentile(a, 90)), 1),
    }


COUNTS = ("issued", "called", "served", "no_show", "cancelled", "transferred", "unfinished")
_ISSUED, _CALLED, _SERVED, _NO_SHOW, _CANCELLED, _TRANSFERRED, _UNFINISHED = range(7)
_OUTCOME_SLOT = {SERVED: _SERVED, NO_SHOW: _NO_SHOW, CANCELLED: _CANCELLED}


@dataclass(slots=True)
class _Tally:
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTS))
    waits: list[float] = field(default_factory=list)
    handles: list[float] = field(default_factory=list)
    stars: list[int] = field(default_factory=lambda: [0] * 5)

    def freeze(self) -> ScopeFigures:
        return ScopeFigures(
            tuple(self.counts),
            np.asarray(self.waits, dtype=float),
            np.asarray(self.handles, dtype=float),
            tuple(self.stars),
        )


def tally(records: Iterable[TicketRecord]) -> dict[str, ScopeFigures]:
    """Counts and samples per scope ("hall", "s:<code>", "c:<id>")."""
    out: dict[str, _Tally] = {}

    def get(scope: str) -> _Tally:
        t = out.get(scope)
        if t is None:
            t = out[scope] = _Tally()
        return t

    hall = get(HALL)
    for r in records:
        svc = get(service_scope(r.service))
        hall.counts[_ISSUED] += 1
        svc.counts[_ISSUED] += 1
        if r.first_counter is not None:
            first = [hall, get(service_scope(r.first_service or r.service))]
            first.append(get(counter_scope(r.first_counter)))
            for t in first:
                t.counts[_CALLED] += 1
                if r.wait_s is not None:
                    t.waits.append(r.wait_s)
        end = [hall, get(service_scope(r.end_service or r.service))]
        if r.end_counter is not None:
            end.append(get(counter_scope(r.end_counter)))
        slot = _OUTCOME_SLOT.get(r.outcome, _UNFINISHED)
        for t in end:
            t.counts[slot] += 1
            if r.handle_s is not None:
                t.handles.append(r.handle_s)
        for left, counter in r.transfers:
            hall.counts[_TRANSFERRED] += 1
            get(service_scope(left)).counts[_TRANSFERRED] += 1
            if counter is not None:
                get(counter_scope(counter)).counts[_TRANSFERRED] += 1
        if r.rating is not None and 1 <= r.rating <= 5:
            rated = [hall, get(service_scope(r.rating_service or r.end_service or r.service))]
            if r.rating_counter is not None:
                rated.append(get(counter_scope(r.rating_counter)))
            for t in rated:
                t.stars[r.rating - 1] += 1
    return {scope: t.freeze() for scope, t in out.items()}


def merge_figures(days: Sequence[Mapping[str, ScopeFigures]]) -> dict[str, ScopeFigures]:
    """A period's figures from its days': counts added, samples joined."""
    scopes: dict[str, list[ScopeFigures]] = {}
    for d in days:
        for scope, f in d.items():
            scopes.setdefault(scope, []).append(f)
    out = {}
    for scope, fs in scopes.items():
        if len(fs) == 1:
            out[scope] = fs[0]
            continue
        out[scope] = ScopeFigures(
            tuple(int(x) for x in np.sum([f.counts for f in fs], axis=0)),
            np.concatenate([f.waits for f in fs]),
            np.concatenate([f.handles for f in fs]),
            tuple(int(x) for x in np.sum([f.stars for f in fs], axis=0)),
        )
    return out


_EMPTY = _Tally().freeze()


# -- the historical best of the same weekday and hour --------------------------------------


def past_same_weekdays(day: date, weeks: int = LOOKBACK_WEEKS) -> list[date]:
    return [day - timedelta(days=7 * k) for k in range(1, weeks + 1)]


@dataclass(slots=True)
class _Best:
    """The benchmark for a scope: per hour, then summed over the period."""

    served: dict[int, int] = field(default_factory=dict)
    wait_num: dict[int, float] = field(default_factory=dict)
    wait_den: dict[int, int] = field(default_factory=dict)


# scope → hour → (most served, lowest mean wait or None) over a day's past same weekdays
PastBest = dict[str, dict[int, tuple[int, float | None]]]


def best_of(past: Sequence[DaySummary]) -> PastBest:
    """The most served and the lowest mean wait per scope and hour over these days (days
    the hall issued nothing are not history)."""
    out: PastBest = {}
    for p in past:
        if not p.active:
            continue
        for scope, hours in p.hourly.items():
            dst = out.setdefault(scope, {})
            for h, c in hours.items():
                wait = c.wait_sum / c.wait_n if c.wait_n else None
                old = dst.get(h)
                if old is None:
                    dst[h] = (c.served, wait)
                    continue
                best_wait = (
                    old[1] if wait is None else wait if old[1] is None else min(old[1], wait)
                )
                dst[h] = (max(old[0], c.served), best_wait)
    return out


def historical_best(
    days: Sequence[DaySummary],
    history: Mapping[date, DaySummary],
    weeks: int = LOOKBACK_WEEKS,
    bests: Mapping[date, PastBest] | None = None,
) -> dict[str, _Best]:
    """For each day of the period and each hour: the most served and the lowest mean wait
    of the same weekday and hour over the `weeks` weeks before that day. Over a period,
    served bests add up and wait bests are weighted by the period's own waited tickets in
    that hour, so the benchmark has the period's own mix of weekdays and hours. `bests`
    may hold `best_of` a day's past already (the caller's cache)."""
    out: dict[str, _Best] = {}
    for d in days:
        table = bests.get(d.day) if bests is not None else None
        if table is None:
            table = best_of([history[p] for p in past_same_weekdays(d.day, weeks) if p in history])
        for scope, hours in table.items():
            mine = d.hourly.get(scope, {})
            b = out.setdefault(scope, _Best())
            for h, (served, wait) in hours.items():
                b.served[h] = b.served.get(h, 0) + served
                own = mine.get(h)
                if wait is not None and own is not None and own.wait_n:
                    b.wait_num[h] = b.wait_num.get(h, 0.0) + wait * own.wait_n
                    b.wait_den[h] = b.wait_den.get(h, 0) + own.wait_n
    return out


def _best_figures(best: _Best | None) -> dict[str, Any]:
    if best is None:
        return {"served": None, "mean_wait": None}
    den = sum(best.wait_den.values())
    return {
        "served": sum(best.served.values()),
        "mean_wait": round(sum(best.wait_num.values()) / den, 1) if den else None,
    }


# -- outliers -----------------------------------------------------------------------------


class _OneHot:
    """The design matrix of an intercept plus one-hot factors (first level of each dropped),
    kept as level codes: X'WX and X'Wy are co-occurrence counts (bincount), so a month of
    tickets never becomes a dense n × p matrix and the solve is a small p × p one."""

    def __init__(self, factors: Sequence[np.ndarray]) -> None:
        self.n = len(factors[0]) if factors else 0
        self.codes: list[np.ndarray] = []
        self.levels: list[int] = []
        for col in factors:
            levels, codes = np.unique(np.asarray(col), return_inverse=True)
            self.codes.append(codes.astype(np.int64).reshape(-1))
            self.levels.append(int(levels.size))
        self.features = 1 + sum(k - 1 for k in self.levels)

    def fit(self, y: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
        """Weighted least squares (w is 0/1: in or out); per factor, the effect of each level
        (0 for the dropped first level) after the intercept, which comes first on its own."""
        sizes = [1, *self.levels]
        offsets = np.cumsum([0, *sizes])
        full = int(offsets[-1])
        gram = np.zeros((full, full))
        rhs = np.zeros(full)
        codes = [np.zeros(self.n, np.int64), *self.codes]
        wy = w * y
        for i, (ci, li) in enumerate(zip(codes, sizes, strict=True)):
            rhs[offsets[i] : offsets[i + 1]] = np.bincount(ci, weights=wy, minlength=li)
            for j in range(i, len(codes)):
                cj, lj = codes[j], sizes[j]
                block = np.bincount(ci * lj + cj, weights=w, minlength=li * lj).reshape(li, lj)
                gram[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]] = block
                gram[offsets[j] : offsets[j + 1], offsets[i] : offsets[i + 1]] = block.T
        keep = [0] + [int(offsets[i]) + k for i in range(1, len(sizes)) for k in range(1, sizes[i])]
        beta_kept, *_ = np.linalg.lstsq(gram[np.ix_(keep, keep)], rhs[keep], rcond=None)
        beta = np.zeros(full)
        beta[keep] = beta_kept
        return [beta[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]

    def predict(self, effects: list[np.ndarray]) -> np.ndarray:
        out = np.full(self.n, float(effects[0][0]))
        for codes, eff in zip(self.codes, effects[1:], strict=True):
            out += eff[codes]
        return out


def _robust_fit(x: _OneHot, y: np.ndarray, z_limit: float) -> tuple[np.ndarray, float]:
    """Least squares, then refit twice without the points beyond `z_limit` so a planted
    outlier cannot drag its own group's fit towards it. Returns residuals of all points
    and the robust scale (1.4826 × MAD of the inliers' residuals)."""
    keep = np.ones(y.size, dtype=bool)
    resid = y
    scale = MAD_FLOOR
    for _ in range(3):
        resid = y - x.predict(x.fit(y, keep.astype(float)))
        r = resid[keep]
        scale = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), MAD_FLOOR)
        new_keep = np.abs(resid / scale) <= z_limit
        if new_keep.sum() < x.features + 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return resid, scale


@dataclass(frozen=True, slots=True)
class Outliers:
    model: dict[str, Any]
    z: np.ndarray  # per served ticket of the columns (empty if no model)
    resid: np.ndarray
    counters: dict[int, dict[str, Any]]

    def flagged(self) -> np.ndarray:
        return np.flatnonzero(np.abs(self.z) > self.model["z_limit"])


def fit_outliers(
    cols: ModelColumns,
    z_limit: float = Z_LIMIT,
    counter_min_effect: float = COUNTER_MIN_EFFECT,
) -> Outliers:
    """Served tickets and counters whose handling time lies far from expectation.

    Tickets: log handling time regressed on service, hour and counter (one-hot, least
    squares); a ticket is flagged when its residual is more than `z_limit` robust standard
    deviations away. Counters: the same regression without the counter, so a counter's own
    pace shows in its residuals; a counter is flagged when its mean residual, measured from
    the median counter's, is more than `z_limit` standard errors from it and the counter is
    at least `counter_min_effect` (relative) slower or faster than expected.
    """
    n = int(cols.handle.size)
    model: dict[str, Any] = {"tickets": n, "fitted": False, "z_limit": z_limit}
    none = Outliers(model, np.zeros(0), np.zeros(0), {})
    if n < MIN_MODEL_TICKETS:
        model["reason"] = f"fewer than {MIN_MODEL_TICKETS} served tickets"
        return none
    y = np.log(np.maximum(cols.handle, 1.0))
    x_full = _OneHot([cols.service, cols.hour, cols.counter])
    if x_full.features >= n:
        model["reason"] = "more factor levels than served tickets"
        return none
    resid, scale = _robust_fit(x_full, y, z_limit)
    model.update(fitted=True, features=x_full.features, scale=round(scale, 4))

    resid_c, scale_c = _robust_fit(_OneHot([cols.service, cols.hour]), y, z_limit)
    ids, inverse, sizes = np.unique(cols.counter, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=resid_c) / sizes
    # Relative to the typical counter: one slow counter lifts the fit for all the others,
    # which must not make them all look fast.
    means = means - float(np.median(means))
    counters: dict[int, dict[str, Any]] = {}
    for cid, m, k in zip(ids, means, sizes, strict=True):
        zc = float(m) / (scale_c / math.sqrt(int(k)))
        ratio = math.exp(float(m))
        counters[int(cid)] = {
            "n": int(k),
            "ratio": round(ratio, 2),
            "z": round(zc, 2),
            "flag": bool(abs(zc) > z_limit and abs(ratio - 1.0) >= counter_min_effect),
        }
    return Outliers(model, resid / scale, resid, counters)


def _ticket_outlier(o: Outliers, i: int, handle_s: float) -> dict[str, Any]:
    z = float(o.z[i])
    return {
        "z": round(z, 2),
        "expected_s": round(handle_s / math.exp(float(o.resid[i])), 1),
        "flag": bool(abs(z) > o.model["z_limit"]),
    }


def find_outliers(records: Sequence[TicketRecord], z_limit: float = Z_LIMIT) -> dict[str, Any]:
    """`fit_outliers` on these records: the model, every served ticket's figures by (day,
    number), and the counters'."""
    cols = ModelColumns.of(records)
    o = fit_outliers(cols, z_limit)
    tickets: dict[tuple[date, str], dict[str, Any]] = {}
    if o.model["fitted"]:
        for i, ref in enumerate(cols.refs):
            r = records[int(ref)]
            tickets[(r.day, r.number)] = _ticket_outlier(o, i, r.handle_s or 0.0)
    return {"model": o.model, "tickets": tickets, "counters": o.counters}


# -- the report ---------------------------------------------------------------------------


def _names(spec: HallSpec) -> tuple[dict[str, tuple[str, str]], dict[int, tuple[str, str]]]:
    services = {s.code: (s.name, s.name_en) for s in spec.services}
    counters = {k.id: (k.name, k.name_en) for k in spec.counters}
    return services, counters


def _hour_order(spec: HallSpec, hours: Iterable[int]) -> list[int]:
    return sorted(set(hours), key=lambda h: (h - spec.day_reset_hour) % 24)


def _hourly_profile(
    spec: HallSpec, cells: Mapping[int, HourCell], best: _Best | None
) -> list[dict[str, Any]]:
    hours = set(cells)
    if best is not None:
        hours |= set(best.served)
    out = []
    for h in _hour_order(spec, hours):
        c = cells.get(h, HourCell(0, 0, 0.0, 0))
        den = best.wait_den.get(h, 0) if best else 0
        out.append(
            {
                "hour": h,
                "issued": c.issued,
                "served": c.served,
                "mean_wait": round(c.wait_sum / c.wait_n, 1) if c.wait_n else None,
                "best_served": best.served.get(h) if best else None,
                "best_mean_wait": round(best.wait_num[h] / den, 1) if best and den else None,
            }
        )
    return out


def build_report(
    spec: HallSpec,
    days: Sequence[DaySummary],
    history: Mapping[date, DaySummary],
    weeks: int = LOOKBACK_WEEKS,
    bests: Mapping[date, PastBest] | None = None,
) -> dict[str, Any]:
    """The period's figures: hall, services, counters, hourly profiles, outliers.

    `days` are the period's days (in order); `history` holds at least the same weekdays of
    the `weeks` weeks before each of them that are known (missing ones are skipped).
    """
    records = [r for d in days for r in d.tickets]
    tallies = merge_figures([d.figures for d in days])
    parts, offset = [], 0
    for d in days:
        parts.append((d.model if d.model is not None else ModelColumns.of(d.tickets), offset))
        offset += len(d.tickets)
    cols = ModelColumns.concat(parts)
    best = historical_best(days, history, weeks, bests)
    period_cells: Hourly = {}
    for d in days:
        for scope, hours in d.hourly.items():
            dst = period_cells.setdefault(scope, {})
            for h, c in hours.items():
                o = dst.get(h)
                dst[h] = (
                    c
                    if o is None
                    else HourCell(
                        o.issued + c.issued,
                        o.served + c.served,
                        o.wait_sum + c.wait_sum,
                        o.wait_n + c.wait_n,
                    )
                )
    outliers = fit_outliers(cols)
    svc_names, ctr_names = _names(spec)

    def row(scope: str, key: object, names: tuple[str, str]) -> dict[str, Any]:
        t = tallies.get(scope, _EMPTY)
        out = {"key": key, "name": names[0], "name_en": names[1], **t.row()}
        out["best"] = _best_figures(best.get(scope))
        out["hourly"] = _hourly_profile(spec, period_cells.get(scope, {}), best.get(scope))
        return out

    services = [row(service_scope(code), code, n) for code, n in svc_names.items()]
    extra_services = sorted(s[2:] for s in tallies if s.startswith("s:") and s[2:] not in svc_names)
    services += [row(service_scope(code), code, (code, code)) for code in extra_services]
    counter_ids = list(ctr_names) + sorted(
        int(s[2:]) for s in tallies if s.startswith("c:") and int(s[2:]) not in ctr_names
    )
    counters = []
    for cid in counter_ids:
        names = ctr_names.get(cid, (f"{cid}", f"{cid}"))
        r = row(counter_scope(cid), cid, names)
        r["outlier"] = outliers.counters.get(cid)
        counters.append(r)

    flagged = []
    for i in outliers.flagged():
        rec = records[int(cols.refs[i])]
        flagged.append(
            {
                "day": rec.day.isoformat(),
                "number": rec.number,
                "service": rec.end_service or rec.service,
                "counter": rec.end_counter,
                "hour": rec.handle_hour,
                "handle_s": rec.handle_s,
                **_ticket_outlier(outliers, int(i), rec.handle_s or 0.0),
            }
        )
    flagged.sort(key=lambda f: -abs(f["z"]))
    return {
        "from": days[0].day.isoformat() if days else None,
        "to": days[-1].day.isoformat() if days else None,
        "days": len(days),
        "lookback_weeks": weeks,
        "hall": row(HALL, HALL, ("全厅", "Whole hall")),
        "services": services,
        "counters": counters,
        "outliers": {
            "model": outliers.model,
            "tickets": flagged[:MAX_LISTED_OUTLIERS],
            "tickets_flagged": len(flagged),
            "counters": [
                {"counter": cid, **o} for cid, o in outliers.counters.items() if o["flag"]
            ],
        },
    }

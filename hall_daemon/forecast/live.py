"""The hall forecaster the daemon runs and the evaluation replays.

`learn` takes every committed event in order; the forecasts come from the snapshot
Monte-Carlo (hall_daemon.forecast.simulate), corrected and given an 80 % interval by the
calibration learned online (hall_daemon.forecast.calibrate). One simulation answers every
question about one snapshot (each waiting ticket, and a ticket taken now in each service),
and is kept until the hall changes or the clock moves on by `RESIMULATE_S`.

On a ticket.issued, `learn` simulates the snapshot (or finds it cached) to remember what the
model said for that ticket; its first call then teaches the calibration. That is the one
non-trivial cost in `learn`, and it is the same simulation the screens need right after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .. import events as ev
from ..events import StoredEvent
from ..model import HallSpec
from ..state import WAITING, HallState
from .calibrate import ConformalInterval, LinearCalibration
from .closed_form import Forecast, queue_length_forecast
from .learn import Learned
from .outlook import build_outlook
from .simulate import HORIZON_S, REPLICATIONS, simulate

METHOD = "monte-carlo+conformal"
RESIMULATE_S = 15.0  # a snapshot's simulation serves this long while nothing changes
CACHE = 8


@dataclass(frozen=True, slots=True)
class Raw:
    """What the simulation says of one target, before calibration."""

    mean: float
    spread: float  # standard deviation across replications
    at_once: bool  # called at once in most replications


def zero(method: str = METHOD) -> Forecast:
    return {"wait_s": 0, "p10_s": 0, "p90_s": 0, "method": method}


class HallForecaster:
    """Learns from committed events; forecasts waits per service and per waiting ticket."""

    method = METHOD

    def __init__(self, spec: HallSpec, *, replications: int = REPLICATIONS) -> None:
        self.spec = spec
        self.replications = replications
        self.learned = Learned(spec)
        self.calibration = LinearCalibration()
        self.interval = ConformalInterval()
        self._pending: dict[str, tuple[Raw, datetime, str]] = {}  # issued, not called yet
        self._cache: dict[tuple[Any, ...], dict[str, Raw]] = {}
        self._backlog: list[StoredEvent] | None = None  # events learned while warming
        self._calibrating = True  # simulate issued tickets to learn the calibration

    # -- learning ------------------------------------------------------------------------
    def learn(self, event: StoredEvent, state: HallState) -> None:
        """Take in one committed event (in seq order), with the state after applying it."""
        if self._backlog is not None:
            self._backlog.append(event)
        self.learned.learn(event, state)
        d = event.data
        if event.type == ev.TICKET_ISSUED and self._calibrating:
            raw = self._raw(state, event.at).get(d["number"])
            if raw is not None:
                self._pending[d["number"]] = (raw, event.at, d["service"])
        elif event.type == ev.TICKET_CALLED:
            got = self._pending.pop(d["number"], None)
            if got is not None:
                raw, issued_at, service = got
                actual = (event.at - issued_at).total_seconds()
                self.learned.record_wait(service, issued_at, actual)
                if not raw.at_once:
                    predicted = self._point(raw)
                    self.interval.add(actual - predicted, self._spread(raw))
                    self.calibration.add(raw.mean, actual)
        elif event.type == ev.TICKET_CANCELLED:
            self._pending.pop(d["number"], None)
        elif event.type == "hall.day_started":
            self._pending.clear()

    def warm(
        self,
        events: Iterable[StoredEvent],
        stop: Callable[[], bool] | None = None,
        calibrate_since: datetime | None = None,
    ) -> int:
        """Learn from history, oldest first, replaying the hall's state along the way.

        Blocking and CPU-bound (a simulation per issued ticket). The daemon runs it on a
        worker thread on a fresh forecaster, then hands it to the live one with `absorb`.
        Returns the last seq learned. `stop` is polled so a stopping daemon need not wait.
        Before `calibrate_since` only the hall's figures are learned, not the calibration
        (which needs a simulation per ticket and forgets old tickets anyway).
        """
        from ..engine import Engine

        engine = Engine(self.spec)
        started = False
        last = 0
        for e in events:
            if stop is not None and stop():
                break
            last = e.seq
            self._calibrating = calibrate_since is None or e.at >= calibrate_since
            if not started:
                if e.type != "hall.day_started":
                    continue  # a state can only be rebuilt from the start of a hall day
                started = True
            try:
                engine.apply(e.event)
            except (KeyError, ValueError):
                # A log that does not replay cleanly (a gap, a changed config.yaml): start
                # again from the next hall day.
                engine, started = Engine(self.spec), False
                continue
            self.learn(e, engine.state)
        self._calibrating = True
        return last

    def begin_warm(self) -> None:
        """From now on keep the events learned live, for `absorb` to pass on."""
        self._backlog = []

    def absorb(self, warmed: HallForecaster, state: HallState, after_seq: int) -> None:
        """Take over what `warmed` learned from history up to `after_seq`, then the events
        learned live since (with today's state: close enough for what they teach)."""
        backlog, self._backlog = self._backlog or [], None
        for e in backlog:
            if e.seq > after_seq:
                warmed.learn(e, state)
        self.learned = warmed.learned
        self.calibration = warmed.calibration
        self.interval = warmed.interval
        self._pending = {**warmed._pending, **self._pending}
        self._cache.clear()

    # -- forecasting ---------------------------------------------------------------------
    def __call__(self, state: HallState, service: str, ahead: int, now: datetime) -> Forecast:
        """The wait of a ticket taken now in `service` with `ahead` tickets before it."""
        waiting = state.waiting_tickets(service)
        target = waiting[ahead].number if ahead < len(waiting) else "*" + service
        raw = self._raw(state, now).get(target)
        if raw is None:
            return queue_length_forecast(state, service, ahead, now)
        return self._forecast(raw)

    def ticket(self, state: HallState, number: str, now: datetime) -> Forecast:
        """The remaining wait of one ticket of `state` (0 unless it is waiting)."""
        t = state.tickets[number]
        if t.state != WAITING:
            return zero()
        raw = self._raw(state, now).get(number)
        if raw is None:
            return queue_length_forecast(state, t.service, state.ahead_of(t), now)
        return self._forecast(raw)

    def outlook(self, state: HallState, now: datetime) -> dict[str, Any]:
        return build_outlook(state, self.learned, self, now)

    # -- internals -----------------------------------------------------------------------
    def _point(self, raw: Raw) -> float:
        return max(self.calibration.predict(raw.mean), 0.0)

    def _spread(self, raw: Raw) -> float:
        return max(raw.spread * float(self.calibration.theta[1]), 1.0)

    def _forecast(self, raw: Raw) -> Forecast:
        if raw.at_once:
            return zero()
        wait = self._point(raw)
        spread = self._spread(raw)
        q = self.interval.quantiles()
        if q is None:
            lo, hi = wait - 1.2816 * spread, wait + 1.2816 * spread
        else:
            scale = max(spread, 30.0)
            lo, hi = wait + q[0] * scale, wait + q[1] * scale
        lo, hi = min(max(lo, 0.0), wait), max(hi, wait)
        return {"wait_s": round(wait), "p10_s": round(lo), "p90_s": round(hi), "method": METHOD}

    def _key(self, state: HallState, now: datetime) -> tuple[Any, ...]:
        counters = tuple((c.state, c.current, c.since) for c in state.counters.values())
        queues = tuple(len(q) for q in state.urgent_queue.values()) + tuple(
            len(q) for q in state.normal_queue.values()
        )
        return (state.day, state.order, len(state.tickets), counters, queues,
                int(now.timestamp() // RESIMULATE_S))  # fmt: skip

    def _raw(self, state: HallState, now: datetime) -> dict[str, Raw]:
        key = self._key(state, now)
        found = self._cache.get(key)
        if found is not None:
            return found
        out = simulate(state, self.learned, now, self.replications)
        times = out.times
        result: dict[str, Raw] = {}
        if times.size:
            reached = np.isfinite(times)
            share = reached.mean(axis=0)
            filled = np.where(reached, times, HORIZON_S)
            means = filled.mean(axis=0)
            sds = filled.std(axis=0)
            # Called at once: by a counter free now, in most replications.
            at_once = (filled <= 0.5).mean(axis=0) >= 0.5
            for i, target in enumerate(out.targets):
                if share[i] >= 0.5:
                    result[target] = Raw(float(means[i]), float(sds[i]), bool(at_once[i]))
        if len(self._cache) >= CACHE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = result
        return result


def make_forecaster(spec: HallSpec, **params: Any) -> HallForecaster:
    """The daemon's forecaster for a hall; `params` are HallForecaster's keyword arguments."""
    return HallForecaster(spec, **params)

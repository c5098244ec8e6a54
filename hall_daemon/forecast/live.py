"""The hall forecaster the daemon runs and the evaluation replays.

`learn` takes every committed event in order. A forecast has two stages: the snapshot
Monte-Carlo (hall_daemon.forecast.simulate) plays the hall forward from now, then boosted
trees (hall_daemon.forecast.wait_model), trained on the hall's own history, map what the
hall looks like (hall_daemon.forecast.features, the simulation's answer among them) to the
wait. The 80 % interval is split-conformal on the trees' own recent out-of-sample errors.
Until the hall has `MIN_ROWS` waits to learn from (day one), the simulation alone answers,
linearly calibrated (hall_daemon.forecast.calibrate). One pass answers every question
about one snapshot (each waiting ticket, and a ticket taken now in each service) and is
kept until the hall changes or the clock moves on by `RESIMULATE_S`.

On a ticket.issued, `learn` remembers the features and the forecast for that ticket; its
first call makes them a training row and a residual. The trees are refitted at each
hall day's start (in the daemon on a thread of their own, so the loop never waits), and
on day one as soon as there is enough to learn from.
"""

from __future__ import annotations

import logging
import threading
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
from .features import NAMES, FeatureBook
from .learn import Learned
from .outlook import build_outlook
from .simulate import HORIZON_S, REPLICATIONS, simulate
from .wait_model import Choice, WaitModel, train

log = logging.getLogger(__name__)

METHOD = "boosted-trees+monte-carlo+conformal"
FIRST_DAYS_METHOD = "monte-carlo+conformal"  # until the trees have history to learn from
RESIMULATE_S = 15.0  # a snapshot's simulation serves this long while nothing changes
CACHE = 8
MIN_ROWS = 300  # waits needed before the trees are trusted over the calibrated simulation
MAX_ROWS = 20000  # training rows kept (months of a busy hall): old habits fade
CHOOSE_EVERY = 7  # days between re-checking the way to start and the number of trees
AT_ONCE_S = 60.0  # a ticket a free counter will take, predicted under this, is told 0
AT_ONCE_TRUST = 0.8  # ... if the simulation's "a free counter takes it now" proved this right

# The rows behind the last answers: (cache key, row index by (service, number or None), rows).
RowsMemo = tuple[tuple[Any, ...], dict[tuple[str, str | None], int], np.ndarray]


@dataclass(frozen=True, slots=True)
class Raw:
    """What the simulation says of one target, before calibration."""

    mean: float
    spread: float  # standard deviation across replications
    at_once: bool  # called at once in most replications


@dataclass(slots=True)
class Pending:
    """A ticket issued and not called yet: what was seen and said when it was issued."""

    raw: Raw | None
    row: np.ndarray | None  # None: issued before the rows the trees are trained on
    predicted: float
    by_trees: bool
    issued_at: datetime
    service: str


class History:
    """The training rows, oldest first, in one buffer allocated once: a hall that runs for
    years holds the last `MAX_ROWS` waits in the same few MB on its first day and its
    thousandth (float32 is plenty for seconds and counts)."""

    def __init__(self, columns: int, size: int = MAX_ROWS) -> None:
        self.x = np.zeros((size, columns), dtype=np.float32)
        self.y = np.zeros(size, dtype=np.float32)
        self.n = 0  # rows ever added

    def __len__(self) -> int:
        return min(self.n, len(self.y))

    def add(self, row: np.ndarray, wait_s: float) -> None:
        i = self.n % len(self.y)
        self.x[i], self.y[i] = row, wait_s
        self.n += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the rows and waits in time order, as float64 for the fit."""
        size = len(self.y)
        if self.n <= size:
            return self.x[: self.n].astype(float), self.y[: self.n].astype(float)
        start = self.n % size
        order = np.r_[start:size, 0:start]
        return self.x[order].astype(float), self.y[order].astype(float)


def zero(method: str = METHOD) -> Forecast:
    return {"wait_s": 0, "p10_s": 0, "p90_s": 0, "method": method}


class HallForecaster:
    """Learns from committed events; forecasts waits per service and per waiting ticket."""

    method = METHOD

    def __init__(
        self,
        spec: HallSpec,
        *,
        replications: int = REPLICATIONS,
        fit_in_background: bool = False,
    ) -> None:
        self.spec = spec
        self.replications = replications
        self.fit_in_background = fit_in_background
        self.learned = Learned(spec)
        self.book = FeatureBook(spec)
        self.calibration = LinearCalibration()
        self.interval = ConformalInterval()  # of the calibrated simulation, for day one
        self.model: WaitModel | None = None
        self.model_interval = ConformalInterval()
        self.rows = History(len(NAMES))
        self._choice: Choice | None = None  # the holdout's, kept between re-checks
        # Of tickets the simulation said a free counter would take at once: decayed counts
        # of all and of those really called within 30 s. A hall whose "open" counters are
        # often busy off the log (a call centre's agents) teaches it not to say 0.
        self._at_once = [0.0, 0.0]
        self._fits = 0
        self._fitting = False
        self._defer_fits = False  # while warming: one fit at the end
        self._pending: dict[str, Pending] = {}
        self._cache: dict[tuple[Any, ...], dict[str, Forecast]] = {}
        self._raw_cache: dict[tuple[Any, ...], dict[str, Raw]] = {}
        self._key_memo: tuple[HallState, int, tuple[Any, ...]] | None = None
        # The rows behind the last answers, by target: a new ticket's own row is among them.
        self._rows_memo: RowsMemo | None = None
        self._backlog: list[StoredEvent] | None = None  # events learned while warming
        self._calibrating = True  # simulate issued tickets to learn from their waits

    # -- learning ------------------------------------------------------------------------
    def learn(self, event: StoredEvent, state: HallState) -> None:
        """Take in one committed event (in seq order), with the state after applying it."""
        if self._backlog is not None:
            self._backlog.append(event)
        self.learned.learn(event, state)
        self.book.learn(event, state)
        d = event.data
        if event.type == ev.TICKET_ISSUED:
            if self._calibrating:
                self._remember(state, d["number"], d["service"], event.at)
            else:  # older history: its waits still count, without a simulation or a row
                self._pending[d["number"]] = Pending(None, None, 0.0, False, event.at, d["service"])
        elif event.type == ev.TICKET_CALLED:
            got = self._pending.pop(d["number"], None)
            if got is not None:
                self._called(got, (event.at - got.issued_at).total_seconds())
        elif event.type == ev.TICKET_CANCELLED:
            self._pending.pop(d["number"], None)
        elif event.type == "hall.day_started":
            self._pending.clear()
            if len(self.rows) >= MIN_ROWS:
                self._fit()

    def _remember(self, state: HallState, number: str, service: str, at: datetime) -> None:
        raw = self._raw(state, at)
        said = self._answers(state, at).get(number)  # what the screens are about to show
        row = self._row(state, at, service, number, raw)
        if said is None:
            said = queue_length_forecast(state, service, state.ahead_of(state.tickets[number]), at)
        by_trees = said["method"] == METHOD and self.model is not None
        self._pending[number] = Pending(
            raw.get(number), row, float(said["wait_s"]), by_trees, at, service
        )

    def _called(self, p: Pending, actual: float) -> None:
        """A ticket's first call: its wait teaches every stage."""
        self.learned.record_wait(p.service, p.issued_at, actual)
        self.book.first_wait(p.service, p.issued_at, actual)
        if p.row is None:
            return
        self.rows.add(p.row, actual)
        if actual > 0.5:  # the interval is for tickets that had to wait
            if p.by_trees:
                self.model_interval.add(actual - p.predicted, max(p.predicted, 60.0))
            if p.raw is not None and not p.raw.at_once:
                self.interval.add(actual - self._point(p.raw), self._spread(p.raw))
        if p.raw is not None and not p.raw.at_once:
            self.calibration.add(p.raw.mean, actual)
        if p.raw is not None and p.raw.at_once:
            n, hits = self._at_once
            self._at_once = [n * 0.99 + 1.0, hits * 0.99 + (actual <= 30.0)]
        if self.model is None and len(self.rows) >= MIN_ROWS * 2**self._fits:
            self._fit()  # day one: learn as soon as there is enough, then again as it doubles

    # -- fitting -------------------------------------------------------------------------
    def _fit(self) -> None:
        if self._defer_fits or self._fitting:
            return
        x, y = self.rows.arrays()  # copies: the fit may run while new rows arrive
        recheck = self._choice is None or self._fits % CHOOSE_EVERY == 0
        way = None if recheck else self._choice
        self._fits += 1
        if not self.fit_in_background:
            self._install(train(x, y, way))
            return
        self._fitting = True

        def work() -> None:
            try:
                self._install(train(x, y, way))
            finally:
                self._fitting = False

        # The daemon's loop must not wait seconds for a fit: the old model serves meanwhile.
        threading.Thread(target=work, name="forecast-fit", daemon=True).start()

    def _install(self, model: WaitModel) -> None:
        log.info(
            "forecast trees fitted on %d waits, %d trees %s",
            len(self.rows),
            model.choice.trees,
            "correcting the simulation" if model.from_simulation else "from the hall's features",
        )
        self._choice = model.choice
        self.model = model  # one assignment: readers see the old model or the new one
        self._cache = {}  # rebound, not cleared: the loop may be reading the old one

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
        self._defer_fits = True
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
        self._defer_fits = False
        if len(self.rows) >= MIN_ROWS:
            self._fit()
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
        self.book = warmed.book
        self.calibration = warmed.calibration
        self.interval = warmed.interval
        self.model_interval = warmed.model_interval
        self.rows = warmed.rows
        self._choice, self._fits = warmed._choice, warmed._fits
        self._at_once = warmed._at_once
        self._pending = {**warmed._pending, **self._pending}
        if warmed.model is not None:
            self._install(warmed.model)
        self._cache, self._raw_cache = {}, {}

    # -- forecasting ---------------------------------------------------------------------
    def __call__(self, state: HallState, service: str, ahead: int, now: datetime) -> Forecast:
        """The wait of a ticket taken now in `service` with `ahead` tickets before it."""
        waiting = state.waiting_tickets(service)
        target = waiting[ahead].number if ahead < len(waiting) else "*" + service
        found = self._answers(state, now).get(target)
        return found if found is not None else queue_length_forecast(state, service, ahead, now)

    def ticket(self, state: HallState, number: str, now: datetime) -> Forecast:
        """The remaining wait of one ticket of `state` (0 unless it is waiting)."""
        t = state.tickets[number]
        if t.state != WAITING:
            return zero()
        found = self._answers(state, now).get(number)
        if found is not None:
            return found
        return queue_length_forecast(state, t.service, state.ahead_of(t), now)

    def outlook(self, state: HallState, now: datetime) -> dict[str, Any]:
        return build_outlook(state, self.learned, self, now)

    # -- internals -----------------------------------------------------------------------
    def _point(self, raw: Raw) -> float:
        return max(self.calibration.predict(raw.mean), 0.0)

    def _spread(self, raw: Raw) -> float:
        return max(raw.spread * float(self.calibration.theta[1]), 1.0)

    def _answers(self, state: HallState, now: datetime) -> dict[str, Forecast]:
        """Every target's forecast for this snapshot: by the trees once they are trained."""
        key = self._key(state, now)
        found = self._cache.get(key)
        if found is not None:
            return found
        raw = self._raw(state, now)
        model = self.model
        if model is None:
            result = {target: self._forecast(r) for target, r in raw.items()}
        else:
            targets: list[tuple[str, str | None]] = []
            for code in state.services:
                targets += [(code, t.number) for t in state.waiting_tickets(code)]
                targets.append((code, None))
            rows = self.book.rows(state, now, targets, self._sim(raw))
            self._rows_memo = (key, {target: i for i, target in enumerate(targets)}, rows)
            waits = model.predict(rows)
            q = self.model_interval.quantiles()
            n, hits = self._at_once
            trust = n >= 20 and hits / n >= AT_ONCE_TRUST
            result = {}
            for (code, number), wait in zip(targets, waits, strict=True):
                name = number if number is not None else "*" + code
                r = raw.get(name)
                at_once = trust and r is not None and r.at_once and wait < AT_ONCE_S
                result[name] = zero() if at_once else self._tree_forecast(float(wait), q)
        if len(self._cache) >= CACHE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = result
        return result

    def _row(
        self, state: HallState, at: datetime, service: str, number: str, raw: dict[str, Raw]
    ) -> np.ndarray:
        memo = self._rows_memo
        if memo is not None and memo[0] == self._key(state, at):
            i = memo[1].get((service, number))
            if i is not None:
                return np.array(memo[2][i])  # a copy: the row outlives the matrix
        row: np.ndarray = self.book.rows(state, at, [(service, number)], self._sim(raw))[0]
        return row

    @staticmethod
    def _tree_forecast(wait: float, q: tuple[float, float] | None) -> Forecast:
        scale = max(wait, 60.0)
        lo_z, hi_z = q if q is not None else (-0.6, 0.9)  # wide until residuals are known
        lo, hi = max(wait + lo_z * scale, 0.0), wait + hi_z * scale
        lo, hi = min(lo, wait), max(hi, wait)
        return {"wait_s": round(wait), "p10_s": round(lo), "p90_s": round(hi), "method": METHOD}

    @staticmethod
    def _sim(raw: dict[str, Raw]) -> dict[str, tuple[float, float, bool]]:
        return {k: (r.mean, r.spread, r.at_once) for k, r in raw.items()}

    def _forecast(self, raw: Raw) -> Forecast:
        if raw.at_once:
            return zero(FIRST_DAYS_METHOD)
        wait = self._point(raw)
        spread = self._spread(raw)
        q = self.interval.quantiles()
        if q is None:
            lo, hi = wait - 1.2816 * spread, wait + 1.2816 * spread
        else:
            scale = max(spread, 30.0)
            lo, hi = wait + q[0] * scale, wait + q[1] * scale
        lo, hi = min(max(lo, 0.0), wait), max(hi, wait)
        return {
            "wait_s": round(wait),
            "p10_s": round(lo),
            "p90_s": round(hi),
            "method": FIRST_DAYS_METHOD,
        }

    def _key(self, state: HallState, now: datetime) -> tuple[Any, ...]:
        # Asked once per waiting ticket per update: the state's part is worked out again only
        # when an event has changed the state.
        memo = self._key_memo
        if memo is None or memo[0] is not state or memo[1] != state.version:
            counters = tuple((c.state, c.current, c.since) for c in state.counters.values())
            queues = tuple(len(q) for q in state.urgent_queue.values()) + tuple(
                len(q) for q in state.normal_queue.values()
            )
            part = (state.day, state.order, len(state.tickets), counters, queues)
            memo = self._key_memo = (state, state.version, part)
        return (*memo[2], int(now.timestamp() // RESIMULATE_S))

    def _raw(self, state: HallState, now: datetime) -> dict[str, Raw]:
        key = self._key(state, now)
        found = self._raw_cache.get(key)
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
        if len(self._raw_cache) >= CACHE:
            self._raw_cache.pop(next(iter(self._raw_cache)))
        self._raw_cache[key] = result
        return result


def make_forecaster(spec: HallSpec, **params: Any) -> HallForecaster:
    """The daemon's forecaster for a hall; `params` are HallForecaster's keyword arguments."""
    return HallForecaster(spec, **params)

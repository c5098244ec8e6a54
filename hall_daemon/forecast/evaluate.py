"""`hall-daemon forecast evaluate`: how well the hall's forecaster would have done on its log.

The log is replayed in order; every event goes to the forecaster the daemon runs
(`make_forecaster`, default parameters) and to the baselines, with the state after it.
At each `ticket.issued` on or after the training cut-off, each predictor is asked, right
after learning that event and before any later one, for that ticket's wait. Its first call
later tells what the wait was. Nothing is ever read ahead of the event being replayed.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from .. import events as ev
from ..model import HallSpec
from . import make_forecaster
from .baselines import make_baselines
from .metrics import Figures, Scored, bias_ok, coverage_ok, figures
from .replay import LoggedEvent, infer_spec, read_log, replay

CSV_COLUMNS = (
    "number",
    "service",
    "issued_at",
    "predicted_wait_s",
    "p10_s",
    "p90_s",
    "actual_wait_s",
)
FORECASTER = "forecaster"
MIN_TICKETS = 200  # the issue's targets apply per service type with this many test tickets
RMSE_TARGET = 0.75  # forecaster RMSE ≤ this × the best baseline's


@dataclass(slots=True)
class Prediction:
    number: str
    service: str
    issued_at: datetime
    wait_s: float
    p10_s: float
    p90_s: float
    method: str
    baselines: dict[str, float]
    actual_s: float | None = None


@dataclass(slots=True)
class Evaluation:
    spec: HallSpec
    train_until: datetime
    predictions: list[Prediction] = field(default_factory=list)
    events: int = 0
    forecaster_cpu_s: float = 0.0  # learning and answering, the forecaster's share of the run
    baseline_names: list[str] = field(default_factory=list)

    def called(self, service: str | None = None) -> list[Prediction]:
        return [
            p
            for p in self.predictions
            if p.actual_s is not None and (service is None or p.service == service)
        ]

    def scores(self, predictor: str, service: str | None = None) -> Figures | None:
        rows = self.called(service)
        if not rows:
            return None
        if predictor == FORECASTER:
            return figures([Scored(p.wait_s, p.actual_s, p.p10_s, p.p90_s) for p in rows])  # type: ignore[arg-type]
        return figures([Scored(p.baselines[predictor], p.actual_s) for p in rows])  # type: ignore[arg-type]

    def services(self) -> list[str]:
        seen = {p.service for p in self.predictions}
        return [s.code for s in self.spec.services if s.code in seen]


def evaluate(
    spec: HallSpec,
    log: Iterable[LoggedEvent],
    train_until: datetime,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Replay `log`, predicting every ticket issued at or after `train_until`."""
    forecaster = make_forecaster(spec)
    history, baselines = make_baselines(spec)
    result = Evaluation(spec, train_until, baseline_names=[b.name for b in baselines])
    open_: dict[str, Prediction] = {}  # today's predicted tickets not called yet, by number
    clock = time.process_time
    for e, state in replay(spec, log):
        result.events += 1
        started = clock()
        forecaster.learn(e, state)
        result.forecaster_cpu_s += clock() - started
        history.learn(e, state)
        d = e.data
        if e.type == ev.TICKET_ISSUED and e.at >= train_until:
            started = clock()
            f = forecaster.ticket(state, d["number"], e.at)
            result.forecaster_cpu_s += clock() - started
            ticket = state.tickets[d["number"]]
            p = Prediction(
                number=d["number"],
                service=d["service"],
                issued_at=e.at,
                wait_s=float(f["wait_s"]),
                p10_s=float(f["p10_s"]),
                p90_s=float(f["p90_s"]),
                method=str(f["method"]),
                baselines={b.name: b.predict(state, ticket, e.at) for b in baselines},
            )
            result.predictions.append(p)
            open_[p.number] = p
        elif e.type == ev.TICKET_CALLED:
            first = open_.pop(d["number"], None)
            if first is not None:
                first.actual_s = max((e.at - first.issued_at).total_seconds(), 0.0)
        elif e.type == ev.TICKET_CANCELLED:
            open_.pop(d["number"], None)
        elif e.type == "hall.day_started":
            open_.clear()  # numbers restart; yesterday's leftovers were cancelled
        if progress is not None and result.events % 10000 == 0:
            progress(result.events)
    return result


def parse_train_until(text: str) -> datetime:
    """A date (midnight) or an ISO time; without an offset it is the hall's local time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date or ISO time: {text!r}") from None


def evaluate_file(
    events: str | Path,
    train_until: str,
    spec: HallSpec | None = None,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """What `hall-daemon forecast evaluate` runs: read, infer the hall unless given, replay.

    `train_until` is a date (midnight, hall time) or an ISO time. Raises LogError for the
    log, ValueError for `train_until`.
    """
    when = parse_train_until(train_until)
    log = read_log(events)
    if spec is None:
        spec = infer_spec(e.event for e in log)
    if when.tzinfo is None:
        when = when.replace(tzinfo=spec.tz())
    return evaluate(spec, log, when, progress)


def write_csv(result: Evaluation, out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in result.predictions:
        w.writerow(
            [
                p.number,
                p.service,
                p.issued_at.isoformat(timespec="seconds"),
                round(p.wait_s),
                round(p.p10_s),
                round(p.p90_s),
                "" if p.actual_s is None else round(p.actual_s),
            ]
        )


def save_csv(result: Evaluation, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        write_csv(result, f)


# -- the report -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    what: str
    ok: bool
    detail: str


def best_baseline(result: Evaluation, service: str | None) -> tuple[str, Figures] | None:
    scored = [(name, result.scores(name, service)) for name in result.baseline_names]
    found = [(name, f) for name, f in scored if f is not None]
    return min(found, key=lambda nf: nf[1].rmse) if found else None


def targets(result: Evaluation, max_relative_rmse: float | None = None) -> list[Target]:
    """The issue's targets on the test tickets."""
    out: list[Target] = []
    for service in result.services():
        f = result.scores(FORECASTER, service)
        best = best_baseline(result, service)
        if f is None or best is None or f.n < MIN_TICKETS:
            continue
        ratio = f.rmse / best[1].rmse if best[1].rmse else float("inf")
        out.append(
            Target(
                f"{service}: RMSE ≤ {RMSE_TARGET} × best baseline",
                ratio <= RMSE_TARGET,
                f"{ratio:.3f} (vs {best[0]}, n={f.n})",
            )
        )
        out.append(
            Target(
                f"{service}: |bias| ≤ max(60 s, 5 % of mean wait)",
                bias_ok(f),
                f"bias {f.bias:+.1f} s, mean wait {f.mean_wait:.1f} s",
            )
        )
    overall = result.scores(FORECASTER)
    if overall is not None:
        out.append(
            Target(
                "all: |bias| ≤ max(60 s, 5 % of mean wait)",
                bias_ok(overall),
                f"bias {overall.bias:+.1f} s, mean wait {overall.mean_wait:.1f} s",
            )
        )
        cov = "n/a" if overall.coverage is None else f"{overall.coverage:.3f}"
        out.append(
            Target(
                "all: 80 % interval coverage in 0.77–0.83",
                coverage_ok(overall),
                f"{cov} over {overall.n_waited} tickets that waited",
            )
        )
        if max_relative_rmse is not None:
            out.append(
                Target(
                    f"all: relative RMSE ≤ {max_relative_rmse}",
                    overall.relative_rmse <= max_relative_rmse,
                    f"{overall.relative_rmse:.3f}",
                )
            )
    return out


def _opt(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _table(result: Evaluation, service: str | None) -> list[str]:
    head = (
        "| predictor | n | mean wait s | MAE s | RMSE s | bias s | RMSE ÷ mean | "
        "80 % coverage | at once → 0 |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in [FORECASTER, *result.baseline_names]:
        f = result.scores(name, service)
        if f is None:
            continue
        zero = "—" if f.zero_hit is None else f"{f.zero_hit:.2f} of {f.n_at_once}"
        lines.append(
            f"| {name} | {f.n} | {f.mean_wait:.1f} | {f.mae:.1f} | {f.rmse:.1f} | "
            f"{f.bias:+.1f} | {f.relative_rmse:.3f} | {_opt(f.coverage, '.3f')} | {zero} |"
        )
    return lines


def report(result: Evaluation, max_relative_rmse: float | None = None) -> str:
    """The figures as Markdown: one table per service and overall, ratios, targets."""
    issued = len(result.predictions)
    called = len(result.called())
    lines = [
        f"Test tickets issued from {result.train_until.isoformat()}: {issued} "
        f"({called} called, {issued - called} never called); {result.events} events replayed; "
        f"forecaster CPU {result.forecaster_cpu_s:.1f} s.",
        "",
    ]
    for service in [*result.services(), None]:
        lines.append(f"**{service or 'all services'}**")
        lines.append("")
        lines.extend(_table(result, service))
        lines.append("")
    lines.append("RMSE ratio forecaster ÷ best baseline (service types with ≥ 200 test tickets):")
    lines.append("")
    for service in result.services():
        f = result.scores(FORECASTER, service)
        best = best_baseline(result, service)
        if f is not None and best is not None and f.n >= MIN_TICKETS and best[1].rmse:
            lines.append(f"- {service}: {f.rmse / best[1].rmse:.3f} (best baseline: {best[0]})")
    lines.append("")
    lines.append("Targets:")
    lines.append("")
    for t in targets(result, max_relative_rmse):
        lines.append(f"- {'PASS' if t.ok else 'FAIL'} {t.what}: {t.detail}")
    return "\n".join(lines) + "\n"


def summary_rows(result: Evaluation) -> Sequence[tuple[str, Any]]:
    """Overall figures per predictor, for scripts."""
    return [(name, result.scores(name)) for name in [FORECASTER, *result.baseline_names]]

"""The forecast evaluation: metrics, baselines, spec inference, the CSV, the CLI, no look-ahead."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bench import bankdata, synthhall
from hall_daemon import commands as c
from hall_daemon import events as ev
from hall_daemon.cli import main
from hall_daemon.engine import Engine
from hall_daemon.events import StoredEvent
from hall_daemon.forecast import replay as replay_module
from hall_daemon.forecast.baselines import (
    Baseline,
    HeadOfLine,
    HourOfDayMean,
    LastTenMean,
    LastToEnterService,
    QueueLength,
    Zms,
    make_baselines,
)
from hall_daemon.forecast.evaluate import CSV_COLUMNS, evaluate, write_csv
from hall_daemon.forecast.live import METHOD
from hall_daemon.forecast.metrics import Scored, bias_ok, coverage_ok, figures
from hall_daemon.forecast.replay import LoggedEvent, infer_spec, replay
from hall_daemon.model import CounterSpec, HallSpec, ServiceSpec
from hall_daemon.state import HallState

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=TZ)


def small_spec() -> HallSpec:
    return HallSpec(
        services=(
            ServiceSpec("A", "A", "A", 1, mean_service_s=300.0),
            ServiceSpec("B", "B", "B", 2, mean_service_s=600.0),
        ),
        counters=(CounterSpec(1, "1", ("A", "B")), CounterSpec(2, "2", ("B",))),
        timezone="Asia/Shanghai",
    )


class Recorder:
    """Runs commands through the engine and keeps the log as the store would."""

    def __init__(self, spec: HallSpec) -> None:
        self.engine = Engine(spec)
        self.log: list[StoredEvent] = []

    def __call__(self, cmd: c.Command) -> list[ev.Event]:
        out = self.engine.execute(cmd)
        for e in out:
            seq = len(self.log) + 1
            self.log.append(StoredEvent(seq, f"e{seq}", e.type, e.at, e.data))
        return out

    def logged(self) -> list[LoggedEvent]:
        return [LoggedEvent(i + 1, e) for i, e in enumerate(self.log)]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def small_synth_log(days: int = 3) -> list[StoredEvent]:
    return synthhall.generate(days=days, seed=3, scale=0.5)


def write_log(path: Path, log: list[StoredEvent]) -> Path:
    replay_module.write_log(log, path)
    return path


# -- metrics -----------------------------------------------------------------------------
@pytest.mark.unit
def test_figures_by_hand() -> None:
    rows = [
        Scored(100, 80, 50, 150),  # waited, inside
        Scored(200, 260, 100, 250),  # waited, outside
        Scored(0, 0, 0, 0),  # called at once, predicted 0
        Scored(60, 0, 0, 120),  # called at once, predicted a wait
    ]
    f = figures(rows)
    assert f.n == 4
    assert f.mean_wait == pytest.approx((80 + 260) / 4)
    assert f.mae == pytest.approx((20 + 60 + 0 + 60) / 4)
    assert f.rmse == pytest.approx(math.sqrt((400 + 3600 + 0 + 3600) / 4))
    assert f.bias == pytest.approx((20 - 60 + 0 + 60) / 4)
    assert f.coverage == pytest.approx(0.5)  # of the two that waited
    assert (f.n_waited, f.n_at_once) == (2, 2)
    assert f.zero_hit == pytest.approx(0.5)
    assert f.relative_rmse == pytest.approx(f.rmse / f.mean_wait)


@pytest.mark.unit
def test_targets_bias_and_coverage() -> None:
    within = figures([Scored(160, 100, 50, 200)] * 10)  # bias +60 s on a 100 s wait
    assert bias_ok(within)
    beyond = figures([Scored(161, 100, 50, 200)] * 10)
    assert not bias_ok(beyond)
    long = figures([Scored(2100, 2000, 0, 1)] * 10)  # 5 % of 2,000 s is 100 s
    assert bias_ok(long)
    assert not coverage_ok(long)  # none inside
    rows = [Scored(10, 10, 0, 20)] * 8 + [Scored(10, 30, 0, 20)] * 2
    assert coverage_ok(figures(rows))  # 0.8


@pytest.mark.unit
def test_figures_refuse_nothing() -> None:
    with pytest.raises(ValueError):
        figures([])


# -- baselines on a hand-made log ----------------------------------------------------------
def hand_made() -> Recorder:
    """Counter 1 serves A then B; counter 2 serves B. Waits and handling times by hand."""
    r = Recorder(small_spec())
    r(c.OpenCounter(at(0), 1))
    r(c.TakeTicket(at(0), "A", "t1"))  # A001
    r(c.TakeTicket(at(10), "A", "t2"))  # A002
    r(c.CallNext(at(40), 1))  # A001 waited 40 s
    r(c.CallNext(at(160), 1))  # A001 done after 120 s; A002 waited 150 s
    r(c.TakeTicket(at(200), "A", "t3"))  # A003
    r(c.TakeTicket(at(230), "A", "t4"))  # A004
    return r


def fed(r: Recorder) -> tuple[dict[str, Baseline], StoredEvent, HallState]:
    """The baselines after the whole log, with its last event and the state after it."""
    spec = r.engine.spec
    history, baselines = make_baselines(spec)
    for e, state in replay(spec, r.logged()):
        history.learn(e, state)
    return {b.name: b for b in baselines}, e, state


@pytest.mark.unit
def test_baselines_on_a_hand_made_log() -> None:
    named, e, state = fed(hand_made())
    a4 = state.tickets["A004"]
    now = e.at
    assert e.type == ev.TICKET_ISSUED and e.data["number"] == "A004"
    # Both known waits are 40 s and 150 s, issued in the 09:00 hour.
    assert named[HourOfDayMean.name].predict(state, a4, now) == pytest.approx(95.0)
    assert named[LastTenMean.name].predict(state, a4, now) == pytest.approx(95.0)
    assert named[LastToEnterService.name].predict(state, a4, now) == pytest.approx(150.0)
    # A003, issued at 200 s, heads the line at 230 s.
    assert named[HeadOfLine.name].predict(state, a4, now) == pytest.approx(30.0)
    # One ticket ahead, one open counter for A, handling time learned: 120 s.
    assert named[QueueLength.name].predict(state, a4, now) == pytest.approx(2 * 120.0)
    # ⌊(1+1)·2 min / 1⌋ = 4 min.
    assert named[Zms.name].predict(state, a4, now) == pytest.approx(240.0)


@pytest.mark.unit
def test_baselines_start_from_priors_and_zero() -> None:
    r = Recorder(small_spec())
    r(c.TakeTicket(at(0), "B", "t1"))
    named, e, state = fed(r)
    b1 = state.tickets["B001"]
    assert named[HourOfDayMean.name].predict(state, b1, e.at) == 0.0
    assert named[LastToEnterService.name].predict(state, b1, e.at) == 0.0
    assert named[HeadOfLine.name].predict(state, b1, e.at) == 0.0  # it is the head itself
    # No counter open: the two that serve B count; the configured 600 s until data teach.
    assert named[QueueLength.name].predict(state, b1, e.at) == pytest.approx(600.0 / 2)
    assert named[Zms.name].predict(state, b1, e.at) == pytest.approx(300.0)


@pytest.mark.unit
def test_evaluation_scores_the_hand_made_log() -> None:
    r = hand_made()
    r(c.CallNext(at(400), 1))  # A002 done, A003 called after 200 s
    r(c.TakeTicket(at(500), "B", "t5"))  # B001, never called
    result = evaluate(r.engine.spec, r.logged(), at(200))
    assert [(p.number, p.actual_s) for p in result.predictions] == [
        ("A003", 200.0),
        ("A004", None),
        ("B001", None),
    ]
    assert result.predictions[0].baselines[LastToEnterService.name] == pytest.approx(150.0)
    out = io.StringIO()
    write_csv(result, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1][0:3] == ["A003", "A", "2026-03-02T09:03:20+08:00"]
    assert rows[1][6] == "200"
    assert rows[2][6] == "" and rows[3][6] == ""


# -- spec inference ----------------------------------------------------------------------
@pytest.mark.unit
def test_infer_spec_from_a_synthetic_log() -> None:
    spec = infer_spec(small_synth_log(days=1))
    assert {s.code: s.prefix for s in spec.services} == {"A": "A", "B": "B", "C": "C", "D": "D"}
    want = {cid: svcs for cid, svcs, _ in synthhall.COUNTERS}
    assert {cs.id: cs.services for cs in spec.counters} == want  # preference order kept
    assert spec.tz().utcoffset(T0) == timedelta(hours=8)


@pytest.mark.unit
def test_inferred_spec_replays_its_log() -> None:
    log = small_synth_log(days=2)
    spec = infer_spec(log)
    states = list(replay(spec, [LoggedEvent(i + 1, e) for i, e in enumerate(log)]))
    assert len(states) == len(log)


# -- no look-ahead ---------------------------------------------------------------------------
@pytest.mark.unit
def test_predictions_do_not_depend_on_what_follows() -> None:
    log = small_synth_log(days=3)
    spec = infer_spec(log)
    day2 = datetime.combine(date(2026, 3, 3), datetime.min.time(), tzinfo=TZ)
    cut = day2 + timedelta(days=1, hours=11)  # mid-morning of the third day
    full = [LoggedEvent(i + 1, e) for i, e in enumerate(log)]
    short = [le for le in full if le.event.at < cut]
    assert len(short) < len(full)
    whole = evaluate(spec, full, day2)
    cut_off = evaluate(spec, short, day2)
    before = [
        (p.number, p.issued_at, p.wait_s, p.p10_s, p.p90_s, p.baselines)
        for p in whole.predictions
        if p.issued_at < cut
    ]
    truncated = [
        (p.number, p.issued_at, p.wait_s, p.p10_s, p.p90_s, p.baselines)
        for p in cut_off.predictions
    ]
    assert len(before) > 50
    assert truncated == before
    # Once the hall had enough waits to learn from (during day two), the trees answered.
    third = [p.method for p in whole.predictions if p.issued_at >= day2 + timedelta(days=1)]
    assert third and set(third) == {METHOD}


# -- the command ----------------------------------------------------------------------------
@pytest.mark.unit
def test_cli_writes_the_csv_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "log.jsonl", small_synth_log(days=2))
    out = tmp_path / "pred.csv"
    code = main(
        [
            "forecast",
            "evaluate",
            "--events",
            str(log),
            "--train-until",
            "2026-03-03",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert rows and all(r["issued_at"] >= "2026-03-03" for r in rows)
    issued = sum(
        1 for line in log.read_text().splitlines()
        if '"ticket.issued"' in line and '"at":"2026-03-03' in line
    )  # fmt: skip
    assert len(rows) == issued
    text = capsys.readouterr().out
    for name in ("forecaster", "hour-of-day mean", "last-10 mean", "LES", "HOL",
                 "queue-length", "ZMS", "all services", "Targets"):  # fmt: skip
        assert name in text


@pytest.mark.unit
def test_cli_names_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [ev.dumps(e) for e in small_synth_log(days=1)[:20]]
    lines[6] = '{"v":1,"seq":7,"id":"x","type":"ticket.issued",'  # cut short
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(
        [
            "forecast",
            "evaluate",
            "--events",
            str(bad),
            "--train-until",
            "2026-03-02",
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad}:7:" in err and "not a contract event" in err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.unit
def test_cli_names_an_event_that_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = small_synth_log(days=1)[:40]
    objs = [ev.to_contract(e) for e in log]
    called = next(i for i, o in enumerate(objs) if o["type"] == "ticket.called")
    objs[called]["data"]["number"] = "A999"  # a ticket never issued
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    code = main(
        [
            "forecast",
            "evaluate",
            "--events",
            str(path),
            "--train-until",
            "2026-03-02",
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 2
    assert f"{path}:{called + 1}: event seq" in capsys.readouterr().err


@pytest.mark.unit
def test_cli_missing_file_and_bad_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    args = ["forecast", "evaluate", "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--events", str(missing), "--train-until", "2026-03-02"]) == 2
    assert f"{missing}: cannot read" in capsys.readouterr().err
    log = write_log(tmp_path / "log.jsonl", small_synth_log(days=1)[:30])
    assert main([*args, "--events", str(log), "--train-until", "March"]) == 2
    assert "--train-until: not a date or ISO time: 'March'" in capsys.readouterr().err
    assert main([*args, "--events", str(log), "--train-until", "2030-01-01"]) == 2
    assert "no tickets issued on or after 2030-01-01" in capsys.readouterr().err


# -- the bank data's conversion ---------------------------------------------------------------
BANK_HEAD = (
    "vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\t"
    "q_start\tq_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver"
)


def bank_row(
    cid: int,
    prio: int,
    kind: str,
    q: tuple[str, str],
    outcome: str,
    ser: tuple[str, str],
    server: str,
) -> str:
    vru = ["0:00:00", "0:00:00", "0"]
    head = ["AA0101", str(cid), "0", str(prio), kind, "990201", *vru]
    return "\t".join([*head, q[0], q[1], "0", outcome, ser[0], ser[1], "0", server])


@pytest.mark.unit
def test_bank_conversion_runs_through_the_engine(tmp_path: Path) -> None:

    zero = ("0:00:00", "0:00:00")
    rows = [
        bank_row(1, 0, "PS", ("9:00:00", "9:01:00"), "AGENT", ("9:01:00", "9:04:00"), "DORIT"),
        bank_row(2, 2, "PS", ("9:00:30", "9:02:00"), "HANG", zero, "NO_SERVER"),
        bank_row(3, 0, "NW", zero, "AGENT", ("9:05:00", "9:06:00"), "DORIT"),  # a walk-in
        bank_row(4, 2, "NW", ("9:05:10", "9:06:00"), "AGENT", ("9:06:00", "9:08:00"), "DORIT"),
        bank_row(5, 0, "PS", ("9:07:00", "9:07:00"), "HANG", zero, "NO_SERVER"),  # left at once
        bank_row(6, 0, "PS", zero, "PHANTOM", zero, "NO_SERVER"),
    ]
    src = tmp_path / "bank.tsv"
    src.write_text(BANK_HEAD + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    spec, log, skipped = bankdata.convert(src)
    assert not skipped
    assert [s.code for s in spec.services] == ["PS", "NW"]
    assert [(cs.name, cs.services) for cs in spec.counters] == [("DORIT", ("PS", "NW"))]
    seen = [(e.type, e.at.strftime("%H:%M:%S"), e.data.get("number")) for e in log]
    assert seen[1:] == [
        ("ticket.issued", "09:00:00", "PS001"),
        ("ticket.issued", "09:00:30", "PS002"),
        ("counter.opened", "09:01:00", None),
        ("ticket.called", "09:01:00", "PS001"),
        ("ticket.cancelled", "09:02:00", "PS002"),
        ("ticket.done", "09:04:00", "PS001"),
        ("counter.paused", "09:05:00", None),  # serving a call that did not queue
        ("ticket.issued", "09:05:10", "NW001"),
        ("counter.opened", "09:06:00", None),
        ("ticket.called", "09:06:00", "NW001"),
        ("ticket.issued", "09:07:00", "PS003"),
        ("ticket.cancelled", "09:07:01", "PS003"),
        ("ticket.done", "09:08:00", "NW001"),
        ("counter.closed", "09:08:00", None),
    ]
    assert log[0].type == "hall.day_started"
    issued = {e.data["number"]: e.data["priority"] for e in log if e.type == "ticket.issued"}
    assert issued == {"PS001": False, "PS002": True, "NW001": True, "PS003": False}
    assert {e.data["reason"] for e in log if e.type == "ticket.cancelled"} == {"left"}
    # The log replays on the hall inferred from it alone.
    inferred = infer_spec(log)
    assert len(list(replay(inferred, [LoggedEvent(i + 1, e) for i, e in enumerate(log)]))) == len(
        log
    )

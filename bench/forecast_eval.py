"""Forecast evaluation on two datasets: a simulated hall and a real bank call centre.

How to run (from the repository root; both logs are made once and kept in bench/out/):

    nice -n 10 .venv/bin/python bench/forecast_eval.py              # both datasets
    nice -n 10 .venv/bin/python bench/forecast_eval.py --only synth # or: --only bank
    nice -n 10 .venv/bin/python bench/forecast_eval.py --fresh      # remake the logs first

It runs exactly what `hall-daemon forecast evaluate` runs (hall_daemon.forecast.evaluate,
the daemon's own forecaster with default parameters), writes the predictions to
bench/out/<dataset>_predictions.csv and prints each report (Markdown, for RESULTS.md).
The same by hand:

    .venv/bin/python bench/synthhall.py --out bench/out/synthhall.jsonl
    .venv/bin/hall-daemon forecast evaluate --events bench/out/synthhall.jsonl \\
        --train-until 2026-03-27 --out bench/out/synth_predictions.csv
    .venv/bin/python bench/bankdata.py --out bench/out/bank.jsonl
    .venv/bin/hall-daemon forecast evaluate --events bench/out/bank.jsonl \\
        --train-until 1999-02-22 --out bench/out/bank_predictions.csv --max-relative-rmse 0.8

Datasets: (1) bench/synthhall.py, 25 simulated weekdays from 2 March 2026 (train 18 days,
test the last 7, from 27 March); (2) bench/bankdata.py, the Anonymous Bank call centre of
February 1999 (/work/shared/data, train 1-21 February, test 22-28; its README's reference:
3,276 served test calls, mean wait 84.5 s, hour-of-day mean 0.95 relative RMSE,
queue-length 1.14, gradient-boosted trees 0.80).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bankdata, synthhall
from hall_daemon.forecast.evaluate import evaluate_file, report, save_csv
from hall_daemon.forecast.replay import write_log

OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Dataset:
    name: str
    log: Path
    train_until: str
    max_relative_rmse: float | None


SYNTH = Dataset("synth", OUT / "synthhall.jsonl", "2026-03-27", None)
BANK = Dataset("bank", OUT / "bank.jsonl", bankdata.TRAIN_UNTIL, 0.80)


def make(ds: Dataset, fresh: bool) -> None:
    if ds.log.exists() and not fresh:
        return
    started = time.perf_counter()
    if ds is SYNTH:
        write_log(synthhall.generate(days=25, seed=1), ds.log)
    else:
        _, log, skipped = bankdata.convert()
        write_log(log, ds.log)
        for why, n in skipped.most_common():
            print(f"  bank conversion skipped {n}: {why}")
    print(f"made {ds.log} in {time.perf_counter() - started:.1f} s")


def run(ds: Dataset) -> str:
    started = time.perf_counter()
    result = evaluate_file(ds.log, ds.train_until)
    save_csv(result, OUT / f"{ds.name}_predictions.csv")
    took = time.perf_counter() - started
    events = ds.log.relative_to(OUT.parent.parent)
    return (
        f"### {ds.name}: `hall-daemon forecast evaluate --events {events} "
        f"--train-until {ds.train_until}"
        + (f" --max-relative-rmse {ds.max_relative_rmse}" if ds.max_relative_rmse else "")
        + f"` ({took:.0f} s wall)\n\n"
        + report(result, ds.max_relative_rmse)
    )


def main() -> None:
    p = argparse.ArgumentParser(description="Forecast evaluation on both datasets.")
    p.add_argument("--only", choices=["synth", "bank"])
    p.add_argument("--fresh", action="store_true", help="remake the event logs")
    a = p.parse_args()
    chosen = [ds for ds in (SYNTH, BANK) if a.only in (None, ds.name)]
    for ds in chosen:
        make(ds, a.fresh)
    for ds in chosen:
        print(run(ds))


if __name__ == "__main__":
    main()

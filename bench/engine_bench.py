"""The queue engine alone: commands per second on one core (target: >= 50,000/s).

Pre-generates a realistic command stream for the 50-counter hall (bench/hallgen.py) over as
many simulated days as it takes, then runs it through `Engine.execute` in this one process,
catching DomainError as the runtime does. Generation is not measured.

    python bench/engine_bench.py                  # 300,000 commands, 3 runs
    python bench/engine_bench.py --quick          # CI smoke: 20,000 commands, 1 run
    python bench/engine_bench.py --profile        # plus a cProfile of one run
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import platform
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hallgen

from hall_daemon import commands as c
from hall_daemon.engine import Engine
from hall_daemon.model import DomainError, HallSpec

TARGET_CPS = 50_000


def generate(spec: HallSpec, n: int, seed: int) -> tuple[list[c.Command], int, int, int]:
    """The first n commands, with the oracle's event and refusal counts and days covered."""
    cmds: list[c.Command] = []
    events = refused = 0
    for step in hallgen.steps(spec, seed=seed):
        cmds.append(step.command)
        events += len(step.events)
        refused += step.error is not None
        if len(cmds) >= n:
            break
    days = (cmds[-1].at.date() - cmds[0].at.date()).days + 1
    return cmds, events, refused, days


def run(spec: HallSpec, cmds: list[c.Command], batch: int) -> dict[str, float]:
    """One pass through a fresh engine; per-command time measured per batch."""
    engine = Engine(spec)
    execute = engine.execute
    per_cmd_us: list[float] = []
    events = refused = 0
    rss_before = rss_peak = hallgen.rss_kib()
    clock = time.perf_counter_ns
    started = clock()
    for i in range(0, len(cmds), batch):
        chunk = cmds[i : i + batch]
        t0 = clock()
        for cmd in chunk:
            try:
                events += len(execute(cmd))
            except DomainError as exc:
                events += len(exc.events)
                refused += 1
        per_cmd_us.append((clock() - t0) / 1000 / len(chunk))
        if i % (batch * 20) == 0:
            rss_peak = max(rss_peak, hallgen.rss_kib())
    wall = (clock() - started) / 1e9
    rss_peak = max(rss_peak, hallgen.rss_kib())
    q = statistics.quantiles(per_cmd_us, n=100) if len(per_cmd_us) > 1 else per_cmd_us * 99
    return {
        "seconds": wall,
        "cps": len(cmds) / wall,
        "eps": events / wall,
        "events": events,
        "refused": refused,
        "us_mean": wall * 1e6 / len(cmds),
        "us_p50": statistics.median(per_cmd_us),
        "us_p99": q[98],
        "us_max_batch": max(per_cmd_us),
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": rss_peak / 1024,
        "tickets_in_memory": len(engine.state.tickets),
    }


def by_type(spec: HallSpec, cmds: list[c.Command]) -> list[tuple[str, int, float, float, float]]:
    """Each command timed on its own (adds ~0.1 µs each): (type, n, mean µs, p99 µs, share)."""
    engine = Engine(spec)
    execute = engine.execute
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {}
    refused = 0
    for cmd in cmds:
        t0 = clock()
        try:
            execute(cmd)
        except DomainError:
            refused += 1
        dt = clock() - t0
        times.setdefault(type(cmd).__name__, []).append(dt)
    total = sum(sum(v) for v in times.values())
    rows = []
    for name, v in times.items():
        v.sort()
        p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
        rows.append((name, len(v), sum(v) / len(v) / 1000, p99 / 1000, sum(v) / total))
    rows.sort(key=lambda r: r[4], reverse=True)
    return rows


def profile(spec: HallSpec, cmds: list[c.Command], top: int) -> str:
    engine = Engine(spec)
    prof = cProfile.Profile()
    prof.enable()
    for cmd in cmds:
        with contextlib.suppress(DomainError):
            engine.execute(cmd)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--commands", type=int, default=300_000)
    p.add_argument("--counters", type=int, default=50)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=100, help="commands per timed batch")
    p.add_argument("--repeat", type=int, default=3, help="passes; the median is the figure")
    p.add_argument("--no-by-type", action="store_true", help="skip the per-command-type pass")
    p.add_argument("--profile", action="store_true", help="cProfile one pass, print hot spots")
    p.add_argument("--top", type=int, default=25, help="rows of the profile")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run")
    args = p.parse_args()
    if args.quick:
        args.commands, args.repeat = min(args.commands, 20_000), 1

    spec = hallgen.make_spec(args.counters, args.services)
    t0 = time.perf_counter()
    cmds, oracle_events, oracle_refused, days = generate(spec, args.commands, args.seed)
    gen_s = time.perf_counter() - t0
    gc.collect()
    print(
        f"engine_bench: {len(cmds):,} commands over {days} simulated days, "
        f"{len(spec.counters)} counters, {len(spec.services)} services "
        f"(generated in {gen_s:.1f} s, not measured); Python {platform.python_version()}"
    )

    runs = [run(spec, cmds, args.batch) for _ in range(args.repeat)]
    for r in runs:
        if r["events"] != oracle_events or r["refused"] != oracle_refused:
            sys.exit(f"engine disagreed with the generator's oracle: {r} vs {oracle_events}")
    med = sorted(runs, key=lambda r: r["cps"])[len(runs) // 2]
    print()
    print(f"{'figure':<34}{'median':>14}   all runs")
    rows = [
        ("commands/s", "cps", "{:,.0f}"),
        ("events/s", "eps", "{:,.0f}"),
        ("µs per command, mean", "us_mean", "{:.2f}"),
        (f"µs per command, p50 of {args.batch}-batches", "us_p50", "{:.2f}"),
        (f"µs per command, p99 of {args.batch}-batches", "us_p99", "{:.2f}"),
        ("µs per command, worst batch", "us_max_batch", "{:.1f}"),
        ("seconds per pass", "seconds", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        print(
            f"{label:<34}{fmt.format(med[key]):>14}   "
            + "  ".join(fmt.format(r[key]) for r in runs)
        )
    print(f"{'events per command':<34}{med['events'] / len(cmds):>14.2f}")
    print(f"{'refused (DomainError)':<34}{med['refused']:>14,}")
    print(f"{'RSS before pass (MiB)':<34}{med['rss_before_mib']:>14.1f}   (holds the commands)")
    print(f"{'RSS peak during pass (MiB)':<34}{med['rss_peak_mib']:>14.1f}")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'process max RSS (MiB)':<34}{maxrss:>14.1f}   (includes generation)")
    verdict = "MET" if med["cps"] >= TARGET_CPS else "NOT MET"
    print(f"\ntarget >= {TARGET_CPS:,} commands/s on one core: {verdict} ({med['cps']:,.0f}/s)")

    if not args.no_by_type:
        print(f"\n{'command':<18}{'count':>9}{'mean µs':>10}{'p99 µs':>10}{'time %':>8}")
        for name, n, mean, p99, share in by_type(spec, cmds):
            print(f"{name:<18}{n:>9,}{mean:>10.2f}{p99:>10.2f}{share * 100:>8.1f}")
    if args.profile:
        print("\ncProfile of one pass (sorted by own time):")
        print(profile(spec, cmds, args.top))


if __name__ == "__main__":
    main()

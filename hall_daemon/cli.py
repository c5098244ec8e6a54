"""`hall-daemon`: run the hall, check its config, export its event log, set the admin password."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, time, tzinfo
from typing import TYPE_CHECKING, TextIO

from . import __version__
from .filemodes import restrict_umask, secret_file_problems

if TYPE_CHECKING:
    from .config import HallConfig

DEFAULT_CONFIG = "/etc/hall-daemon/config.yaml"


def _parse_when(text: str, tz: tzinfo) -> datetime:
    """`today`, a date (`2026-11-01`, midnight local) or an ISO time, local when no offset."""
    if text == "today":
        return datetime.combine(datetime.now(tz).date(), time(), tzinfo=tz)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO time: {text!r}") from None
    if len(text) == 10:
        when = datetime.combine(when.date(), time())
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when


def _load(path: str) -> HallConfig:
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def _refuse_open_secrets(config: HallConfig) -> None:
    problems = secret_file_problems(config)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(2)


def prepare_run(config: HallConfig) -> None:
    """Before the daemon's modules are imported. python-escpos (receipts) parses its printer
    database with pure-Python YAML at import time unless it finds the pickle it made
    before, in a fresh temporary directory by default, i.e. at every start: ~3 MB more
    resident for the daemon's whole life. Keep the pickle in the state directory."""
    cache = config.state_dir / "escpos-cache"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # the import then works as before
    os.environ.setdefault("ESCPOS_CAPABILITIES_PICKLE_DIR", str(cache))


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _refuse_open_secrets(config)
    prepare_run(config)
    from .app import run

    run(config)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    _refuse_open_secrets(config)
    spec = config.to_spec()
    print(
        f"{args.file}: OK — hall {config.hall.id!r}, {len(spec.services)} services, "
        f"{len(spec.counters)} counters, {len(config.ports)} ports"
    )
    return 0


def cmd_events_export(args: argparse.Namespace) -> int:
    from .events import dumps
    from .store import Store

    config = _load(args.config)
    tz = config.to_spec().tz()
    since = _parse_when(args.since, tz) if args.since else None
    until = _parse_when(args.until, tz) if args.until else None
    store = Store(config.database_url())
    store.open()
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        for event in store.iter_events(since=since, until=until):
            out.write(dumps(event) + "\n")
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
        store.close()
    print(f"exported {count} events", file=sys.stderr)
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    import getpass

    from .admin.auth import PasswordError, PasswordFile

    config = _load(args.config)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New admin password: ")
        if getpass.getpass("Once more: ") != password:
            print("the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    passwords = PasswordFile(config.state_dir)
    try:
        passwords.set(password)
    except (PasswordError, OSError) as exc:
        print(f"password not changed: {exc}", file=sys.stderr)
        return 2
    print(
        f"admin password set ({passwords.path}); a running daemon uses it from the next "
        "login on and ends the sessions of the old one",
        file=sys.stderr,
    )
    return 0


def cmd_forecast_evaluate(args: argparse.Namespace) -> int:
    from .forecast.evaluate import evaluate_file, parse_train_until, report, save_csv
    from .forecast.replay import LogError

    try:
        parse_train_until(args.train_until)
    except ValueError as exc:
        print(f"--train-until: {exc}", file=sys.stderr)
        return 2
    spec = _load(args.config).to_spec() if args.config else None
    try:
        result = evaluate_file(args.events, args.train_until, spec)
    except LogError as exc:
        print(exc.where(args.events), file=sys.stderr)
        return 2
    if not result.predictions:
        print(f"no tickets issued on or after {result.train_until.isoformat()}", file=sys.stderr)
        return 2
    try:
        save_csv(result, args.out)
    except OSError as exc:
        print(f"{args.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(report(result, args.max_relative_rmse), end="")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from drivers.simulator import run_from_args

    return run_from_args(args)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file ({DEFAULT_CONFIG})"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hall-daemon",
        description="Edge daemon for a government service hall (行政审批服务大厅).",
    )
    p.add_argument("--version", action="version", version=f"hall-daemon {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the hall daemon", description="Run the hall daemon.")
    _config_option(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file; errors name the file, line and field.",
    )
    check.add_argument(
        "file", nargs="?", default=DEFAULT_CONFIG, help=f"config file ({DEFAULT_CONFIG})"
    )
    check.set_defaults(func=cmd_check_config)

    events = sub.add_parser("events", help="work with the event log", description="The event log.")
    esub = events.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    export = esub.add_parser(
        "export",
        help="write the event log as JSON lines",
        description="Write events as JSON lines in the MQTT contract's format, in seq order.",
    )
    _config_option(export)
    export.add_argument(
        "--since", help="from `today`, a date or an ISO time (the hall's local time if no offset)"
    )
    export.add_argument("--until", help="before this date or ISO time")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_events_export)

    setpw = sub.add_parser(
        "set-password",
        help="set the admin password",
        description="Set the admin page's password (only its scrypt hash is stored).",
    )
    _config_option(setpw)
    setpw.add_argument(
        "--stdin", action="store_true", help="read the password from standard input's first line"
    )
    setpw.set_defaults(func=cmd_set_password)

    fc = sub.add_parser("forecast", help="wait forecasts", description="Wait forecasts.")
    fsub = fc.add_subparsers(dest="forecast_command", required=True, metavar="COMMAND")
    fev = fsub.add_parser(
        "evaluate",
        help="replay an event log and score the forecaster against the baselines",
        description="Replay an exported event log in order; at every ticket issued on or after "
        "--train-until ask the forecaster (and the baselines) for its wait, using only what "
        "happened before; write one CSV row per ticket and print the error figures.",
    )
    fev.add_argument("--events", required=True, help="event log (`hall-daemon events export`)")
    fev.add_argument(
        "--train-until", required=True, help="first test day (a date or ISO time, hall-local)"
    )
    fev.add_argument("--out", required=True, help="CSV of the test tickets' predictions")
    fev.add_argument(
        "-c", "--config", help="the hall's config.yaml (default: infer the hall from the log)"
    )
    fev.add_argument(
        "--max-relative-rmse", type=float, help="also check RMSE ÷ mean wait against this target"
    )
    fev.set_defaults(func=cmd_forecast_evaluate)

    sim = sub.add_parser(
        "simulate",
        help="play the hall's devices over their ports (demo, tests)",
        description="Play dispensers, keypads and evaluators over the same bytes real ones send.",
    )
    _config_option(sim)
    from drivers.simulator import add_arguments

    add_arguments(sim, config=False)
    sim.set_defaults(func=cmd_simulate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    restrict_umask()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

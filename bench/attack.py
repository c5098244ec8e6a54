"""Attacks on a real hall-daemon process, on loopback, printing what each one achieved.

    .venv/bin/python bench/attack.py            # every scenario
    .venv/bin/python bench/attack.py login mqtt # some of them

Each scenario lives in bench/attacks/<name>.py and has `run() -> dict[str, object]`: it starts
its own daemon (and broker), attacks it, and returns the figures to print.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.attacks as attacks


def main(argv: list[str]) -> int:
    names = argv or sorted(m.name for m in pkgutil.iter_modules(attacks.__path__))
    for name in names:
        module = importlib.import_module(f"bench.attacks.{name}")
        started = time.monotonic()
        figures = module.run()
        figures["seconds"] = round(time.monotonic() - started, 1)
        print(f"{name}: {json.dumps(figures, ensure_ascii=False)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

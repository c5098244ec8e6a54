"""Receipt figures: building the ESC/POS bytes, rendering the PNG preview, and receipts
through the real print queue to a network printer emulated on loopback (DLE EOT answered
before and after each receipt).

    nice -n 10 .venv/bin/python bench/printer_bench.py [--receipts 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.printer import PrinterHandle
from drivers.printer.escpos_out import receipt_bytes
from drivers.printer.layout import build_layout
from drivers.printer.preview import png
from hall_daemon import commands as c
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from tests.test_printer_service import NetPrinter, printer_config


def ms(samples: list[float]) -> str:
    s = sorted(samples)
    return f"p50 {1000 * s[len(s) // 2]:.2f} ms, p99 {1000 * s[int(len(s) * 0.99)]:.2f} ms"


async def main(n: int) -> None:
    emulator = NetPrinter()
    await emulator.start()
    for paper in (58, 80):
        config = printer_config(connection="network", host="127.0.0.1", port=emulator.port)
        config = config.model_copy(
            update={"printer": config.printer.model_copy(update={"paper_mm": paper})}  # type: ignore[union-attr]
        )
        with tempfile.TemporaryDirectory() as tmp:
            hall = Hall(config.to_spec(), Store(Store.sqlite_url(Path(tmp) / "hall.db")))
            await hall.start()
            printer = PrinterHandle(hall, config, poll_s=1.0)
            await printer.start()
            await hall.submit(c.TakeTicket(hall.now(), "A", "bench-token-0000000000"))
            receipt = printer.receipt_for(hall.state.tickets["A001"])
            layout = build_layout(receipt, paper_mm=paper, notice=config.printer.notice)  # type: ignore[union-attr]
            build, render = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                receipt_bytes(layout, "default")
                build.append(time.perf_counter() - t0)
            for _ in range(max(n // 10, 10)):
                t0 = time.perf_counter()
                png(layout)
                render.append(time.perf_counter() - t0)
            print(f"{paper} mm: ESC/POS bytes {ms(build)}; PNG preview {ms(render)}")
            before = len(emulator.received)
            t0 = time.perf_counter()
            done = 0
            while done < n:
                batch = min(n - done, 15)  # below the queue's bound of 20
                for _ in range(batch):
                    printer.print_ticket("A001", "bench")
                await printer.drain(60)
                done += batch
            elapsed = time.perf_counter() - t0
            s = printer.stats()
            print(
                f"{paper} mm: {n} receipts through the queue to 127.0.0.1 in {elapsed:.2f} s "
                f"({n / elapsed:.0f}/s, {(len(emulator.received) - before) / n:.0f} bytes each, "
                f"printed {s['printed']}, failed {s['failed']})"
            )
            await printer.stop()
            await hall.stop()
    await emulator.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--receipts", type=int, default=200)
    asyncio.run(main(parser.parse_args().receipts))

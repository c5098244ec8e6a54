"""Keypad frame → event at an MQTT subscriber, through the whole real daemon.

The bench plays the dispenser (line protocol) and the RS-485 bus (bus68) as TCP servers the
daemon connects to (`socket://`), runs its own Mosquitto on a free port, and subscribes to
`<base>/events`. It takes tickets, then presses NEXT on the keypads one press at a time and
measures from the last byte of the frame written to the first event of that press arriving
at the subscriber (SQLite commit with synchronous=FULL, outbox pump, broker, client).

    python bench/keypad_mqtt_bench.py [--presses 500] [--quick]
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers.bus68 import Frame, encode  # noqa: E402
from tests.daemon_harness import Daemon, free_port, simulated_hall_config  # noqa: E402


def serve_once(port: int) -> socket.socket:
    srv = socket.create_server(("127.0.0.1", port))
    srv.settimeout(30)
    conn, _ = srv.accept()
    srv.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def drain(conn: socket.socket) -> None:
    """The daemon's echoes, LCD and screen frames: read and dropped so its writes never block."""
    conn.settimeout(None)
    while conn.recv(65536):
        pass


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 2
        else max(values)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presses", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="50 presses (CI smoke)")
    args = ap.parse_args()
    presses = 50 if args.quick else args.presses

    tmp = Path(tempfile.mkdtemp(prefix="keypad-mqtt-"))
    mport, dport, bport = free_port(), free_port(), free_port()
    (tmp / "mosquitto.conf").write_text(
        f"listener {mport} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(tmp / "mosquitto.conf")], stderr=subprocess.DEVNULL
    )
    config, web = simulated_hall_config(tmp, mport, dispenser=dport, bus=bport)
    arrivals: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: arrivals.put((time.perf_counter(), json.loads(m.payload)))
    for _ in range(100):  # the broker needs a moment to listen
        try:
            socket.create_connection(("127.0.0.1", mport), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    client.connect("127.0.0.1", mport)
    client.subscribe("hall/demo-hall/events", qos=1)
    client.loop_start()

    daemon = Daemon(config, web)
    accepted: dict[str, socket.socket] = {}
    threads = [
        threading.Thread(target=lambda p=p, n=n: accepted.__setitem__(n, serve_once(p)))
        for n, p in (("line", dport), ("bus", bport))
    ]
    for t in threads:
        t.start()
    try:
        daemon.start()
        for t in threads:
            t.join(30)
        line, bus = accepted["line"], accepted["bus"]
        threading.Thread(target=drain, args=(bus,), daemon=True).start()
        reader = line.makefile("rb")
        for i in range(presses + 10):
            line.sendall(f"TAKE {'ABC'[i % 3]} #{i + 1}\n".encode())
            reader.readline()
        time.sleep(1.0)
        while not arrivals.empty():
            arrivals.get_nowait()

        latencies: list[float] = []
        for i in range(presses):
            counter = 1 + i % 6
            frame = encode(Frame(counter, 0x01, bytes([(i // 6 + 1) % 256, 0x0C])))
            bus.sendall(frame)
            sent = time.perf_counter()
            got, _ = arrivals.get(timeout=10)
            latencies.append((got - sent) * 1000)
            time.sleep(0.02)
            while not arrivals.empty():  # the rest of this press's events (done + called)
                arrivals.get_nowait()
    finally:
        daemon.stop()
        client.loop_stop()
        broker.terminate()
        broker.wait(5)

    print(f"keypad frame → event at an MQTT subscriber, {len(latencies)} presses, real daemon")
    print(f"  p50 {statistics.median(latencies):.2f} ms   p99 {pct(latencies, 99):.2f} ms")
    print(f"  max {max(latencies):.2f} ms   mean {statistics.fmean(latencies):.2f} ms")


if __name__ == "__main__":
    main()

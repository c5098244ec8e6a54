"""Real Mosquitto brokers for the MQTT sync tests, and what the tests need around them.

- `Broker`: writes a mosquitto.conf into a temporary directory, runs `mosquitto -c` on a free
  port, waits until the port answers; `stop()` / `start()` again on the same port (with
  persistence, so queued messages and persistent sessions survive), `kill()` at teardown.
- `Recorder`: a second paho client that subscribes and records every message.
- `Contract`: sync/asyncapi.yaml loaded once; `check(topic, payload)` validates a message
  against the JSON Schema of the channel its topic belongs to.
- `TcpProxy`: a TCP relay whose link can be cut and restored (a bridge's WAN link), and
  that can play a broker that only speaks MQTT 3.1.1.
- `make_ca`: a throwaway certificate authority, server and client certificates (openssl).

Test modules load it with `pytest_plugins = ["tests.mqtt_broker"]` after importing helpers
from it, so pytest could not rewrite its asserts anyway; it says so (PYTEST_DONT_REWRITE) to
keep that from being reported as a warning. Its checks carry their own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
import yaml
from jsonschema import Draft7Validator
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from hall_daemon.config import HallConfig, TlsConfig, load_config
from hall_daemon.hall import Hall
from hall_daemon.store import Store
from sync import SyncHandle, SyncOptions, start_sync
from sync.commands import read_id

REPO = Path(__file__).resolve().parents[1]
ASYNCAPI = REPO / "sync" / "asyncapi.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


async def until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


# -- the broker -------------------------------------------------------------------------------


class Broker:
    """One Mosquitto on 127.0.0.1. `conf` lines are added to the generated configuration."""

    def __init__(
        self,
        tmp: Path,
        name: str = "broker",
        conf: str = "",
        port: int | None = None,
        inflight: int = 100,
    ) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path.write_text(
            "\n".join(
                [
                    "user root",  # run as root (tests): keep access to tmp files
                    "per_listener_settings false",
                    f"listener {self.port} 127.0.0.1",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    "autosave_interval 3600",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "max_queued_messages 200000",  # a persistent subscriber across an outage
                    f"max_inflight_messages {inflight}",  # also MQTT 5's Receive Maximum
                    "set_tcp_nodelay true",
                    conf,
                    "",
                ]
            ),
            encoding="utf-8",
        )
        if "allow_anonymous" not in conf:
            with self.conf_path.open("a", encoding="utf-8") as f:
                f.write("allow_anonymous true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Broker:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if wait:
            try:
                wait_port(self.port, proc=self.proc)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n{self.log()}") from exc
        return self

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-5000:]
        except OSError:
            return "(no broker log)"


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Make (and start) brokers; all are killed at teardown."""
    made: list[Broker] = []

    def make(name: str = "broker", conf: str = "", start: bool = True) -> Broker:
        b = Broker(tmp_path, name, conf)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()


# -- a subscriber -----------------------------------------------------------------------------


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.perf_counter() when it arrived
    properties: Any = None

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Recorder:
    """A paho client recording what arrives on `topics`. `persistent`: an MQTT 5 session that
    outlives the connection (and a broker restart), so nothing published while it is away
    is lost to it; it reconnects by itself."""

    port: int
    topics: list[str]
    client_id: str = ""
    persistent: bool = False
    username: str | None = None
    password: str | None = None
    tls: dict[str, str] | None = None
    protocol: int = 5
    messages: list[Msg] = field(default_factory=list)
    connects: int = 0
    refused: int = 0  # CONNACK failures (a bad password)
    listener: Callable[[Msg], None] | None = None  # called on paho's thread for each message

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id or f"rec-{time.monotonic_ns()}",
            protocol=MQTTProtocolVersion.MQTTv5
            if self.protocol == 5
            else MQTTProtocolVersion.MQTTv311,
        )
        self.client.reconnect_delay_set(0.05, 0.3)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if self.tls:
            self.client.tls_set(**self.tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused += 1
            return
        self.connects += 1
        sock = client.socket()
        if isinstance(sock, socket.socket):  # no Nagle: it adds up to 40 ms to each command
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if flags.session_present:
            # The broker kept our subscriptions (and queued what came meanwhile); subscribing
            # again would replay the retained messages and blur what arrived when.
            self._subscribed.set()
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        m = Msg(
            msg.topic, bytes(msg.payload), bool(msg.retain), time.perf_counter(), msg.properties
        )
        with self._lock:
            self.messages.append(m)
        if self.listener is not None:
            self.listener(m)

    def start(self, wait: bool = True) -> Recorder:
        props = None
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            if self.persistent:
                props.SessionExpiryInterval = 3600
        kw: dict[str, Any] = {"properties": props}
        if self.protocol == 5:
            kw["clean_start"] = not self.persistent
        self.client.connect_async("127.0.0.1", self.port, 30, **kw)
        self.client.loop_start()
        if wait:
            assert self._subscribed.wait(10), "the recorder could not subscribe"
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Msg]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[Msg]:
        return [m for m in self.snapshot() if m.topic == topic]

    def last(self, topic: str) -> Msg | None:
        found = self.on(topic)
        return found[-1] if found else None

    def last_json(self, topic: str) -> Any:
        m = self.last(topic)
        return None if m is None or not m.payload else m.json()

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.on(topic)]

    def wait_for(self, predicate: Callable[[Recorder], object], timeout: float = 10.0) -> None:
        """From synchronous code; in a coroutine use `until`, which lets the loop run."""
        wait_until(lambda: predicate(self), timeout, "the recorder's condition")

    async def until(
        self, predicate: Callable[[Recorder], object], timeout: float = 10.0, what: str = ""
    ) -> None:
        await until(lambda: predicate(self), timeout, what)

    def status(self, base: str = "hall/demo-hall") -> str | None:
        obj = self.last_json(f"{base}/status")
        return None if obj is None else str(obj["state"])


@contextlib.contextmanager
def recording(port: int, topics: list[str], **kw: Any) -> Iterator[Recorder]:
    rec = Recorder(port, topics, **kw).start()
    try:
        yield rec
    finally:
        rec.close()


# -- the contract ---------------------------------------------------------------------------


class Contract:
    """The AsyncAPI document: which schema a topic's payload must match."""

    def __init__(self, path: Path = ASYNCAPI) -> None:
        self.doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT7)
        self.registry: Registry[Any] = Registry().with_resource("urn:asyncapi", resource)
        self.channels: list[tuple[str, re.Pattern[str], list[str]]] = []
        for name, ch in self.doc["channels"].items():
            pattern = re.escape(ch["address"])
            pattern = re.sub(r"\\\{[A-Za-z_]+\\\}", "[^/]+", pattern)
            refs = [self._message(m)["payload"]["$ref"] for m in ch["messages"].values()]
            self.channels.append((name, re.compile(pattern), refs))
        self._validators: dict[str, Draft7Validator] = {}

    def _message(self, m: dict[str, Any]) -> dict[str, Any]:
        node: Any = self.doc
        if "$ref" in m:
            for part in m["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            return dict(node)
        return m

    def validator(self, ref: str) -> Draft7Validator:
        if ref not in self._validators:
            schema = {"$ref": "urn:asyncapi" + ref}
            self._validators[ref] = Draft7Validator(schema, registry=self.registry)
        return self._validators[ref]

    def channel_of(self, topic: str) -> tuple[str, list[str]]:
        for name, pattern, refs in self.channels:
            if pattern.fullmatch(topic):
                return name, refs
        raise AssertionError(f"topic {topic!r} is on no channel of the AsyncAPI document")

    def check(self, topic: str, payload: bytes) -> None:
        name, refs = self.channel_of(topic)
        if payload == b"":
            # A retained topic cleared: allowed only where the document says so.
            assert "Cleared" in " ".join(refs), f"empty payload on {topic} ({name})"
            return
        obj = json.loads(payload)
        errors: list[str] = []
        for ref in refs:
            if ref.endswith("Cleared"):
                continue
            found = sorted(self.validator(ref).iter_errors(obj), key=lambda e: list(e.path))
            if not found:
                return
            errors += [f"{ref}: {'/'.join(map(str, e.path))}: {e.message}" for e in found[:5]]
        raise AssertionError(
            f"{topic}: {payload[:300]!r} does not match the contract:\n" + "\n".join(errors)
        )

    def check_all(self, messages: list[Msg]) -> int:
        for m in messages:
            self.check(m.topic, m.payload)
        return len(messages)


# -- a cuttable TCP link ----------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> relayed to 127.0.0.1:<target>. `cut()` drops every connection and
    refuses new ones until `restore()`. `mqtt311_only`: answer an MQTT 5 CONNECT the way a
    3.1.1 broker does (CONNACK 'unacceptable protocol version') and hang up."""

    def __init__(self, target: int, *, mqtt311_only: bool = False) -> None:
        self.target = target
        self.mqtt311_only = mqtt311_only
        self.rejected_v5 = 0
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._open = True
        self._stalled = False
        self._closing = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open:
                conn.close()
                continue
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        first = b""
        if self.mqtt311_only:
            client.settimeout(5)
            try:
                first = client.recv(65536)
            except OSError:
                client.close()
                return
            # CONNECT: fixed header, remaining length (varint), "\0\4MQTT", protocol level.
            i = 1
            while i < len(first) and first[i] & 0x80:
                i += 1
            level_at = i + 1 + 6
            if len(first) > level_at and first[level_at] == 5:
                self.rejected_v5 += 1
                with contextlib.suppress(OSError):
                    client.sendall(b"\x20\x02\x00\x01")
                client.close()
                return
            client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), 5)
        except OSError:
            client.close()
            return
        if first:
            upstream.sendall(first)
        with self._lock:
            self._pairs.append((client, upstream))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in sel.select(1.0):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    if self._stalled and src is upstream:
                        continue  # a black hole: the far side's answers vanish
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self._open = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._open = True

    def stall(self, stalled: bool = True) -> None:
        """Keep the links up but drop everything coming back from the target (PUBACKs,
        CONNACKs): a half-dead WAN link or a wedged broker."""
        self._stalled = stalled

    def close(self) -> None:
        self._closing = True
        self.cut()
        self._listener.close()
        self._thread.join(2)


# -- certificates -----------------------------------------------------------------------------


def make_ca(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (EC keys:
    quick to make), all signed by the CA. Returns their paths."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=hall test CA")  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", *ext)  # fmt: skip
    return {
        n: d / f"{n}" for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }


# -- a hall and its sync ----------------------------------------------------------------------


class Clock:
    """The hall's clock in tests: still unless moved (sync's timing uses the real monotonic)."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


T0 = datetime(2026, 11, 27, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))  # a Friday morning
CONFIG = load_config(REPO / "config.yaml")
SPEC = CONFIG.to_spec()


def mqtt_config(port: int, **mqtt: Any) -> HallConfig:
    """The example config.yaml with its MQTT section pointed at a test broker."""
    tls = mqtt.pop("tls", None)
    section = CONFIG.mqtt.model_copy(update={"host": "127.0.0.1", "port": port, **mqtt})
    if tls is not None:
        section = section.model_copy(update={"tls": TlsConfig(**tls)})
    return CONFIG.model_copy(update={"mqtt": section})


def make_hall(db: Path, clock: Clock | None = None) -> Hall:
    return Hall(SPEC, Store(Store.sqlite_url(db)), clock=clock)


# Quick reconnects for tests; everything else as in production.
FAST = SyncOptions(backoff_min_s=0.1, backoff_max_s=0.5, stop_timeout_s=3.0)


@contextlib.asynccontextmanager
async def running(
    db: Path,
    config: HallConfig,
    clock: Clock | None = None,
    options: SyncOptions = FAST,
) -> AsyncIterator[tuple[Hall, SyncHandle]]:
    """A hall with its MQTT sync, as the daemon runs them; stopped cleanly at the end."""
    hall = make_hall(db, clock)
    await hall.start()
    handle = await start_sync(hall, config, options=options)
    try:
        yield hall, handle
    finally:
        await handle.stop()
        await hall.stop()


def publish(
    rec: Recorder,
    topic: str,
    payload: bytes | dict[str, Any],
    *,
    response_topic: str | None = None,
    correlation: bytes | None = None,
    retain: bool = False,
) -> None:
    """Publish (QoS 1) from the recorder's client, as the backend would."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    props = None
    if response_topic is not None or correlation is not None:
        props = Properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
    rec.client.publish(topic, body, qos=1, retain=retain, properties=props)


def replies(rec: Recorder, command_id: str, topic: str | None = None) -> list[dict[str, Any]]:
    out = []
    for m in rec.snapshot():
        if (topic is None and m.topic.endswith("/reply")) or m.topic == topic:
            obj = m.json()
            if obj.get("id") == command_id:
                out.append(obj)
    return out


async def command(
    rec: Recorder,
    name: str,
    payload: bytes | dict[str, Any],
    *,
    base: str = "hall/demo-hall",
    response_topic: str | None = None,
    correlation: bytes | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Send a command and wait for its next reply (the recorder must subscribe to the
    reply topic: `<base>/cmd/+/reply`, or the response topic)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    command_id = read_id(body)
    assert command_id is not None, "a command without a readable id gets no reply"
    before = len(replies(rec, command_id, response_topic))
    publish(rec, f"{base}/cmd/{name}", body, response_topic=response_topic, correlation=correlation)
    await until(
        lambda: len(replies(rec, command_id, response_topic)) > before,
        timeout,
        f"a reply to {name} {command_id}",
    )
    return replies(rec, command_id, response_topic)[-1]


class DaemonThread:
    """A hall and its sync on an event loop of their own thread, for synchronous tests
    (hypothesis drives examples synchronously): as good as another process, but shares the
    test's memory so the test can look at the hall's state."""

    def __init__(self, db: Path, config: HallConfig, options: SyncOptions = FAST) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.hall = make_hall(db)
        self.call(self.hall.start())
        self.handle: SyncHandle = self.call(start_sync(self.hall, config, options=options))

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            return self.handle.stats()

        result: dict[str, Any] = self.call(get())
        return result

    def close(self) -> None:
        try:
            self.call(self.handle.stop())
            self.call(self.hall.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

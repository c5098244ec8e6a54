"""The MQTT connection: paho-mqtt (v2 callback API), one client object per connection.

Each attempt builds a fresh paho client, connects it on a worker thread (TCP and TLS
handshakes block) and hands it to paho's own network thread (`loop_start`). paho's built-in
reconnect is switched off (`reconnect_on_failure=False`): the supervisor here reconnects,
with capped exponential backoff and jitter, so that a city's halls do not all hammer a
broker that comes back at the same second, and so that everything a connection carried
fails together when it drops. A new client per connection also means paho never resends
messages of an old connection behind our back; the outbox decides what is sent again.

All paho callbacks run on paho's thread and only hand their news to the event loop
(`call_soon_threadsafe`); PUBACKs are batched so that a fast drain costs one loop wake-up
per batch, not per message. Every publish returns an asyncio future that resolves on the
PUBACK and fails with ConnectionLost if the connection ends first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hall_daemon.backoff import Backoff
from hall_daemon.config import TlsConfig

log = logging.getLogger(__name__)

# CONNACK codes meaning "I do not speak MQTT 5": 0x84 from an MQTT 5 broker that has it
# switched off, 1 (3.1.1's "unacceptable protocol version") from an older one.
_UNSUPPORTED_PROTOCOL = frozenset({0x84, 1})


class ConnectionLost(Exception):
    """The connection ended (or never came up) before the broker acknowledged."""


class PublishRefused(Exception):
    """The broker answered a publish with an MQTT 5 failure reason (not authorised, quota)."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    client_id: str
    keepalive: int
    protocol: int  # 5 or 311
    username: str | None
    password: Callable[[], str | None]  # read at every connect: it may be rotated
    tls: TlsConfig | None
    will_topic: str
    will_payload: Callable[[], bytes]
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    connack_timeout_s: float = 10.0
    max_inflight: int = 100
    max_packet: int = 256 * 1024  # the broker drops bigger messages to us instead of sending


Message = tuple[str, bytes, bool, Any]  # topic, payload, retain flag, MQTT 5 properties


class Session:
    """One connected paho client. Lives on the event loop; paho's thread only calls in."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Session, Message], None],
    ) -> None:
        self.loop = loop
        self.client: mqtt.Client | None = None
        self.protocol = 5
        self.connack: asyncio.Future[tuple[int, str]] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self._on_message = on_message
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._acks: list[tuple[int, bool, str]] = []
        self._acks_lock = threading.Lock()

    # -- on paho's network thread -----------------------------------------------------
    def _call(self, fn: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self.loop.call_soon_threadsafe(fn, *args)

    def cb_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, props: Any
    ) -> None:
        # Exceeding the broker's Receive Maximum is a protocol error (Mosquitto disconnects),
        # and paho ignores it. Its public setter refuses once connected, but here, before
        # anything was published on this connection, lowering the limit is safe.
        receive_max = getattr(props, "ReceiveMaximum", None)
        if isinstance(receive_max, int) and 0 < receive_max < client._max_inflight_messages:
            client._max_inflight_messages = receive_max
        self._call(self._connack, reason.value, str(reason))

    def cb_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: Any
    ) -> None:
        self._call(self._lost, f"disconnected ({reason})")

    def cb_publish(
        self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: Any
    ) -> None:
        with self._acks_lock:
            first = not self._acks
            self._acks.append((mid, reason.is_failure, str(reason)))
        if first:
            self._call(self._drain_acks)

    def cb_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        self._call(self._suback, mid, [r.value for r in reasons])

    def cb_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        message = (msg.topic, bytes(msg.payload), bool(msg.retain), msg.properties)
        self._call(self._on_message, self, message)

    # -- on the event loop ------------------------------------------------------------
    def _connack(self, code: int, text: str) -> None:
        if not self.connack.done():
            self.connack.set_result((code, text))

    def _lost(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        self._fail_all(ConnectionLost(why))

    def _drain_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        for mid, failed, text in acks:
            fut = self._pending.pop(mid, None)
            if fut is None or fut.done():
                continue
            if failed:
                fut.set_exception(PublishRefused(text))
            else:
                fut.set_result(None)

    def _suback(self, mid: int, codes: list[int]) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _fail_all(self, exc: Exception) -> None:
        futures: list[asyncio.Future[Any]] = [*self._pending.values(), *self._subacks.values()]
        self._pending.clear()
        self._subacks.clear()
        for fut in futures:
            if not fut.done():
                fut.set_exception(exc)
                # Whoever holds it may already have given up on it; no "never retrieved".
                fut.exception()

    @property
    def alive(self) -> bool:
        return not self.closed.done()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, properties: Any = None
    ) -> asyncio.Future[None]:
        """QoS 1. The future resolves on the broker's PUBACK."""
        fut: asyncio.Future[None] = self.loop.create_future()
        if self.client is None or self.closed.done():
            fut.set_exception(ConnectionLost("not connected"))
            return fut
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            fut.set_exception(ConnectionLost(f"publish failed: {mqtt.error_string(info.rc)}"))
            return fut
        # Registered before this callback returns: an ack already on its way is drained by a
        # later loop callback, so it always finds its future.
        self._pending[info.mid] = fut
        return fut

    def subscribe(self, topic: str, qos: int = 1) -> asyncio.Future[list[int]]:
        fut: asyncio.Future[list[int]] = self.loop.create_future()
        if self.client is None or self.closed.done():
            fut.set_exception(ConnectionLost("not connected"))
            return fut
        rc, mid = self.client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            fut.set_exception(ConnectionLost(f"subscribe failed: {mqtt.error_string(rc)}"))
            return fut
        self._subacks[mid] = fut
        return fut

    def abort(self, why: str) -> None:
        """Drop the link the way a crash would, so that the broker publishes the Last Will
        (a DISCONNECT packet would make it discard the Will: the hall would look online)."""
        log.info("dropping the MQTT connection: %s", why)  # callers say why it matters
        sock = self.client.socket() if self.client is not None else None
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._lost(why)


OnReady = Callable[[Session], Awaitable[None]]


class Connection:
    """Keeps one session up: connect, `on_ready`, wait for the drop, back off, again."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_ready: OnReady,
        on_message: Callable[[Session, Message], None],
    ) -> None:
        self.settings = settings
        self._on_ready = on_ready
        self._on_message = on_message
        self.session: Session | None = None  # the session that is ready, if any
        self.ready = asyncio.Event()
        self.connected = False
        self.protocol = settings.protocol
        self.reconnects = 0
        self.last_error = ""
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(settings.backoff_min_s, settings.backoff_max_s)

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-connection")

    async def wait_ready(self) -> Session:
        while True:
            await self.ready.wait()
            if self.session is not None and self.session.alive:
                return self.session
            await asyncio.sleep(0.01)  # the drop is being handled; the event clears soon

    async def close(self, last_words: OnReady | None = None, timeout: float = 2.0) -> None:
        """Say `last_words` (the `stopped` status) if connected, then disconnect cleanly."""
        self._closing = True
        for _ in range(3):
            await self._goodbye(last_words, timeout)
            task = self._task
            if task is None:
                return
            task.cancel()
            # asyncio.wait, not `await task` under suppress(CancelledError): that would
            # also swallow a cancel of this close() itself.
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("the MQTT connection ended with an error", exc_info=task.exception())
                return
            # A cancel lost in on_ready (as Python 3.11's wait_for could lose one) lets the
            # session come up after all: say goodbye to that one too, and ask again.
            log.warning("the MQTT connection did not stop when asked; asking again")
        log.error("the MQTT connection would not stop; leaving it")

    async def _goodbye(self, last_words: OnReady | None, timeout: float) -> None:
        sess = self.session if self.ready.is_set() else None
        if sess is None or not sess.alive or sess.client is None:
            return
        if last_words is not None:
            try:
                async with asyncio.timeout(timeout):
                    await last_words(sess)
            except (ConnectionLost, PublishRefused, TimeoutError) as exc:
                log.warning("could not say goodbye to the broker: %s", exc)
        # A normal DISCONNECT: the broker discards the Will, `stopped` stays retained.
        sess.client.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(sess.closed)

    # -- the supervisor -----------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        protocol = self.settings.protocol
        while not self._closing:
            sess = Session(loop, self._on_message)
            try:
                client = self._client(sess, protocol)
                connecting = loop.run_in_executor(None, self._connect, client, protocol)
                try:
                    await asyncio.shield(connecting)
                except asyncio.CancelledError:
                    # Closing while the handshake runs on its thread: once it is done, leave
                    # politely, or the broker would publish the Will over our `stopped`.
                    connecting.add_done_callback(functools.partial(_discard, client))
                    raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # OSError, ssl.SSLError, an unreadable password file
                self._failed(f"cannot connect to {self._where()}: {exc}")
                await self._pause()
                continue
            client.loop_start()
            try:
                # A broker that hangs up instead of answering (a TLS 1.3 server that rejects
                # our certificate only after the handshake) must not cost the whole timeout.
                waits: list[asyncio.Future[Any]] = [sess.connack, sess.closed]
                await asyncio.wait(
                    waits,
                    timeout=self.settings.connack_timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not sess.connack.done():
                    why = sess.closed.result() if sess.closed.done() else "no answer"
                    raise ConnectionLost(f"no CONNACK from the broker ({why})")
                code, text = sess.connack.result()
                if code in _UNSUPPORTED_PROTOCOL and protocol == 5:
                    log.warning("%s does not speak MQTT 5; using 3.1.1", self._where())
                    protocol = 311
                    continue  # straight away: this is not an outage
                if code != 0:
                    raise ConnectionLost(f"the broker refused the connection: {text}")
                self._backoff.reset()
                self.connected, self.protocol = True, protocol
                log.info(
                    "connected to %s (MQTT %s)", self._where(), "5" if protocol == 5 else "3.1.1"
                )
                await self._on_ready(sess)
                if sess.alive:
                    self.session = sess
                    self.ready.set()
                why = await sess.closed
                if not self._closing:
                    self._failed(f"connection to {self._where()} lost: {why}")
            except (ConnectionLost, PublishRefused, TimeoutError) as exc:
                self._failed(f"connection to {self._where()} failed: {exc or type(exc).__name__}")
            except Exception as exc:
                # A bug in on_ready must not end the hall's link for good: log, back off, retry.
                log.exception("MQTT session failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.ready.clear()
                self.session = None
                self.connected = False
                if sess.alive:
                    sess.abort("closing this connection")
                await loop.run_in_executor(None, client.loop_stop)
            if self.closing:
                break
            self.reconnects += 1
            await self._pause()

    def _client(self, sess: Session, protocol: int) -> mqtt.Client:
        s = self.settings
        v5 = protocol == 5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        sess.client, sess.protocol = client, protocol
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)  # the callers bound what they put in flight
        if s.username is not None:
            client.username_pw_set(s.username, s.password())
        if s.tls is not None:
            client.tls_set(
                ca_certs=str(s.tls.ca) if s.tls.ca else None,
                certfile=str(s.tls.cert) if s.tls.cert else None,
                keyfile=str(s.tls.key) if s.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(s.will_topic, s.will_payload(), qos=1, retain=True)
        client.on_connect = sess.cb_connect
        client.on_disconnect = sess.cb_disconnect
        client.on_publish = sess.cb_publish
        client.on_subscribe = sess.cb_subscribe
        client.on_message = sess.cb_message
        return client

    def _connect(self, client: mqtt.Client, protocol: int) -> None:
        s = self.settings
        if protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # A clean session that ends with the connection: commands sent while the hall
            # was away are not run late; the backend retries them under the same id.
            props.SessionExpiryInterval = 0
            props.MaximumPacketSize = s.max_packet
            client.connect(s.host, s.port, s.keepalive, clean_start=True, properties=props)
        else:
            client.connect(s.host, s.port, s.keepalive)
        # paho leaves Nagle's algorithm on: a small PUBLISH then waits for the ACK of the one
        # before, which the broker delays (delayed ACK), adding up to 40 ms per message.
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _failed(self, message: str) -> None:
        self.last_error = message
        log.warning("%s", message)

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def _pause(self) -> None:
        await asyncio.sleep(self._backoff.next_delay())


def _discard(client: mqtt.Client, connecting: asyncio.Future[None]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        client.disconnect()  # no network thread yet: paho writes the DISCONNECT right here

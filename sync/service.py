"""`start_sync(hall, config)`: the MQTT sync as one handle the daemon starts and stops.

Wiring: the bus wakes the outbox pump and marks live topics dirty; the connection runs
`_on_ready` on every (re)connect (subscribe to commands, republish retained state, then
`online`); commands are queued from paho's thread and run one at a time. Each long-lived
task is supervised: an unexpected exception is logged and the task restarted after a
growing pause (back to the shortest once it has run a healthy minute), so a bug in one part
cannot silently end the hall's link to the backend. No command can end the command loop:
whatever goes wrong with one is its own 500 reply, or a counted drop.

Floods: the command queue is bounded in messages and in bytes, and what does not fit is
dropped and counted (the backend retries what got no reply, under the same id). paho
acknowledges QoS 1 on receipt, so the broker's in-flight limit would not slow a flood
down; the queue's bound is what keeps memory flat and the wait of the next command short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hall_daemon.backoff import Backoff
from hall_daemon.config import HallConfig
from hall_daemon.events import StoredEvent, format_time
from hall_daemon.hall import Hall
from hall_daemon.quietlog import OncePer

from . import payloads
from .commands import CommandProcessor
from .connection import Connection, ConnectionLost, Message, PublishRefused, Session, Settings
from .live import LiveState
from .outbox import OutboxPump

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Tuning knobs; the defaults are the production values, tests shorten some."""

    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    connack_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0  # no PUBACK this long while connected: drop and reconnect
    window: int = 1000  # outbox events in flight at most
    max_inflight: int = 100  # paho's in-flight limit (lowered to the broker's Receive Maximum)
    min_interval_s: float = 0.5  # per retained topic
    ticket_ttl_s: float = 3600.0  # a finished ticket's topic is cleared after this
    sweep_every_s: float = 30.0
    outlook_every_s: float = 60.0
    stop_timeout_s: float = 3.0  # how long stop() may wait for the outbox to drain
    command_queue: int = 1000  # commands waiting to run, at most
    command_queue_bytes: int = 4 * 1024 * 1024  # and their payloads' bytes, at most
    healthy_after_s: float = 60.0  # a task that ran this long restarts after the least pause
    housekeeping_every_s: float = 3600.0
    stats_every_s: float = 1.0  # the oldest unsent event's time, refreshed while any wait


MAX_CORRELATION = 256  # bytes of MQTT 5 correlation data echoed; more is not echoed


def restart_backoff(healthy_s: float) -> Backoff:
    """The pauses before a failed task runs again: from 0.5 s doubling to 30 s while it keeps
    failing, and short again once it had run `healthy_s` (a failure now and then is not a
    task that cannot run)."""
    return Backoff(first=0.5, cap=30.0, healthy_s=healthy_s)


class SyncHandle:
    """The running sync. `stats()` feeds the status page; `stop()` ends it cleanly."""

    def __init__(self, hall: Hall, config: HallConfig, options: SyncOptions) -> None:
        self.hall = hall
        self.config = config
        self.options = options
        self.enabled = config.mqtt.enabled
        self.topics = payloads.Topics(config.mqtt_base())
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._commands: asyncio.Queue[tuple[Session, Message]] = asyncio.Queue(
            options.command_queue
        )
        self._queued_bytes = 0
        self._dropped_commands = 0  # the queue was full
        self._ignored_commands = 0  # arrived retained
        self._unsent_replies = 0
        self._refused_reply_topics = 0
        self._restarts = 0
        self._quiet = OncePer(log, 60.0)
        self._oldest: datetime | None = None
        self.processor = CommandProcessor(hall)
        if not self.enabled:
            return
        m = config.mqtt
        assert m.host is not None  # the config check requires a host while enabled
        self.conn = Connection(
            Settings(
                host=m.host,
                port=m.port,
                client_id=config.mqtt_client_id(),
                keepalive=m.keepalive,
                protocol=m.protocol,
                username=m.username,
                password=config.mqtt_password,
                tls=m.tls,
                will_topic=self.topics.status,
                # `since` of the Will is when this connection was made: the broker sends
                # it unchanged whenever the link is lost.
                will_payload=lambda: payloads.status("offline", hall.now(), hall.boot),
                backoff_min_s=options.backoff_min_s,
                backoff_max_s=options.backoff_max_s,
                connack_timeout_s=options.connack_timeout_s,
                max_inflight=options.max_inflight,
            ),
            on_ready=self._on_ready,
            on_message=self._on_message,
        )
        self.pump = OutboxPump(
            hall,
            self.conn,
            self.topics.events,
            window=options.window,
            ack_timeout_s=options.ack_timeout_s,
        )
        self.live = LiveState(
            hall,
            self.conn,
            self.topics,
            min_interval_s=options.min_interval_s,
            ticket_ttl_s=options.ticket_ttl_s,
            sweep_every_s=options.sweep_every_s,
            outlook_every_s=options.outlook_every_s,
        )

    # -- life cycle ---------------------------------------------------------------------
    async def _start(self) -> None:
        if not self.enabled:
            return
        # An unreadable password file is a configuration error: say so now, with the file
        # and line, rather than retry a doomed login for ever. (It is read again at every
        # connect, so a rotated password needs no restart.)
        self.config.mqtt_password()
        await self.hall.io(self.processor.dedupe.create)
        await self.live.load()
        self._subscribe_bus()
        self._spawn("mqtt-outbox", self.pump.run)
        self._spawn("mqtt-outbox-marks", self.pump.mark_loop)
        self._spawn("mqtt-live", self.live.run)
        self._spawn("mqtt-commands", self._command_loop)
        self._spawn("mqtt-stats", self._stats_loop)
        self._spawn("mqtt-housekeeping", self._housekeeping_loop)
        self.conn.start()

    async def stop(self) -> None:
        """Drain the outbox (a few seconds at most), say `stopped`, disconnect."""
        if self._stopping:
            return
        self._stopping = True
        if not self.enabled:
            return
        drained = await self.pump.flush(self.options.stop_timeout_s)
        if not drained:
            log.info("stopping with %d events still in the outbox", self.pump.depth)
        await self.live.flush(timeout=1.0)
        await self.conn.close(self._say_stopped)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pump.mark_now()
        log.info("MQTT sync stopped")

    def stats(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        p, c = self.processor.stats, self.conn
        depth = self.pump.depth
        return {
            "enabled": True,
            "connected": c.connected and c.ready.is_set(),
            "broker": f"{c.settings.host}:{c.settings.port}",
            "protocol": "5" if c.protocol == 5 else "3.1.1",
            "outbox_depth": depth,
            "oldest_unsent": format_time(self._oldest) if self._oldest and depth else None,
            "acked_seq": self.pump.acked,
            "in_flight": self.pump.in_flight,
            "events_published": self.pump.published,
            "retained_published": self.live.published,
            "reconnects": c.reconnects,
            "last_error": c.last_error,
            "commands_accepted": p.accepted,
            "commands_refused": p.refused,
            "commands_repeated": p.repeated,
            "commands_unreadable": p.unreadable + self._ignored_commands,
            "commands_too_deep": p.too_deep,
            "commands_failed": p.failed,
            "commands_dropped": self._dropped_commands,
            "commands_queued": self._commands.qsize(),
            "replies_unsent": self._unsent_replies,
            "reply_topics_refused": self._refused_reply_topics,
            "task_restarts": self._restarts,
        }

    # -- wiring -------------------------------------------------------------------------
    def _subscribe_bus(self) -> None:
        async def on_event(ev: StoredEvent) -> None:
            if not self._stopping:
                self.pump.offer(ev)
                self.live.offer(ev)

        async def resync() -> None:
            self.pump.resync()
            self.live.mark_all()

        # The bus has no unsubscribe: a second sync on the same hall (tests) takes a new name.
        for n in range(100):
            try:
                name = "mqtt-sync" if n == 0 else f"mqtt-sync-{n}"
                self.hall.bus.subscribe(name, on_event, resync=resync, maxsize=10_000)
                return
            except ValueError:
                continue
        raise RuntimeError("too many MQTT sync subscriptions on one hall")

    def _spawn(self, name: str, job: Callable[[], Awaitable[None]]) -> None:
        async def supervised() -> None:
            pauses = restart_backoff(self.options.healthy_after_s)
            while True:
                started = time.monotonic()
                try:
                    await job()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._restarts += 1
                    pause = pauses.next_delay(ran_s=time.monotonic() - started)
                    log.exception("%s failed; restarting it in %.1f s", name, pause)
                    await asyncio.sleep(pause)

        self._tasks.append(asyncio.get_running_loop().create_task(supervised(), name=name))

    async def _on_ready(self, sess: Session) -> None:
        """After every CONNACK: resubscribe, republish the retained state, then `online`."""
        timeout = self.options.connack_timeout_s
        async with asyncio.timeout(timeout):
            codes = await sess.subscribe(self.topics.commands, 1)
        if any(code >= 0x80 for code in codes):
            log.warning("the broker refused our subscription to %s", self.topics.commands)
        await self.live.republish(sess)
        online = payloads.status("online", self.hall.now(), self.hall.boot)
        async with asyncio.timeout(timeout):
            await sess.publish(self.topics.status, online, retain=True)
        log.info("online as %s", self.topics.base)

    async def _say_stopped(self, sess: Session) -> None:
        stopped = payloads.status("stopped", self.hall.now(), self.hall.boot)
        await sess.publish(self.topics.status, stopped, retain=True)

    # -- commands -----------------------------------------------------------------------
    def _on_message(self, sess: Session, msg: Message) -> None:
        if self._stopping:
            return
        size = len(msg[1])
        if self._commands.full() or self._queued_bytes + size > self.options.command_queue_bytes:
            # A flood: the backend retries what got no reply, under the same id.
            self._dropped_commands += 1
            self._quiet.log(
                logging.WARNING,
                "dropped",
                "command queue full (in messages or bytes); dropped a message on %r",
                msg[0],
            )
            return
        self._queued_bytes += size
        self._commands.put_nowait((sess, msg))

    async def _command_loop(self) -> None:
        while True:
            sess, msg = await self._commands.get()
            self._queued_bytes -= len(msg[1])
            try:
                await self._answer(sess, msg)
            except Exception:
                # Not reached by any known input (the processor answers its own failures):
                # this message is lost, the loop and the next command are not.
                self._unsent_replies += 1
                self._quiet.log(
                    logging.ERROR,
                    "unsent",
                    "no reply to a message on %r",
                    msg[0],
                    exc_info=True,
                )

    async def _answer(self, sess: Session, msg: Message) -> None:
        topic, payload, retained, props = msg
        name = self.topics.command_name(topic)
        if name is None:
            return
        if retained:
            # A command left retained on the broker would come back at every reconnect
            # and, after 24 hours, run again: a command is an event, never a state.
            self._ignored_commands += 1
            self._quiet.log(
                logging.WARNING,
                "retained",
                "ignored a retained command on %r; commands must not be retained",
                topic,
            )
            return
        reply = await self.processor.handle(name, payload)
        if reply is None:
            return
        # The session the command came on may be gone; the current one will do. If there
        # is none, the reply is lost and the backend's retry gets it from the dedupe table.
        target = self.conn.session if self.conn.ready.is_set() else sess
        if target is None:
            return
        reply_topic, reply_props = self._addressed(name, props)
        fut = target.publish(reply_topic, reply, properties=reply_props)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _addressed(self, name: str, props: Any) -> tuple[str, Properties | None]:
        """The reply's topic and properties: the correlation data goes back with it if it
        is small enough to be a correlation and not a payload."""
        requested = getattr(props, "ResponseTopic", None)
        reply_topic = self.topics.reply_to(name, requested)
        if requested is not None and reply_topic != requested:
            self._refused_reply_topics += 1
            self._quiet.log(
                logging.WARNING,
                "reply-topic",
                "refused response topic %.100r; replying on %s",
                requested,
                reply_topic,
            )
        correlation = getattr(props, "CorrelationData", None)
        if not isinstance(correlation, bytes) or len(correlation) > MAX_CORRELATION:
            return reply_topic, None
        reply_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        reply_props.CorrelationData = correlation
        return reply_topic, reply_props

    # -- background upkeep --------------------------------------------------------------
    async def _stats_loop(self) -> None:
        while True:
            if self.pump.depth > 0:
                self._oldest = await self.hall.io(self.hall.store.outbox_oldest_pending)
            else:
                self._oldest = None
            await asyncio.sleep(self.options.stats_every_s)

    async def _housekeeping_loop(self) -> None:
        while True:
            pruned = await self.hall.io(self.processor.dedupe.prune, self.hall.now())
            if pruned:
                log.info("forgot %d command ids older than 24 h", pruned)
            await asyncio.sleep(self.options.housekeeping_every_s)


async def start_sync(
    hall: Hall, config: HallConfig, *, options: SyncOptions | None = None
) -> SyncHandle:
    """Start the MQTT sync of a started hall. Returns at once: the broker may be away.

    Raises hall_daemon.config.ConfigError if the MQTT password is named but unreadable."""
    handle = SyncHandle(hall, config, options or SyncOptions())
    await handle._start()
    return handle


__all__ = ["ConnectionLost", "PublishRefused", "SyncHandle", "SyncOptions", "start_sync"]

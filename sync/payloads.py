"""The MQTT contract's topics and payloads (../shared/spec/mqtt.md), as pure functions.

Everything here reads the hall's state view and returns bytes; nothing touches the network
or the store, so the shapes can be tested on their own and checked against the JSON Schemas
in sync/asyncapi.yaml.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from hall_daemon import __version__
from hall_daemon.events import TICKET_ISSUED, StoredEvent, format_time, to_contract
from hall_daemon.forecast import Forecaster
from hall_daemon.model import ServiceSpec
from hall_daemon.state import WAITING, HallState, Ticket

OUTLOOK_DAYS = 7  # today and the next 6 days
OUTLOOK_METHOD = "flat-now"
MAX_RESPONSE_TOPIC = 256  # bytes; a reply address, not a document


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; Chinese stays Chinese. NaN is not JSON, so it is refused here."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the daemon uses, under the configured base (`hall/<hall_id>` by default)."""

    base: str

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def outlook(self) -> str:
        return f"{self.base}/outlook"

    @property
    def commands(self) -> str:
        """The subscription filter: one level, so `<base>/cmd/<name>/reply` never matches."""
        return f"{self.base}/cmd/+"

    def queue(self, service: str) -> str:
        return f"{self.base}/queues/{service}"

    def counter(self, counter: int) -> str:
        return f"{self.base}/counters/{counter}"

    def ticket(self, token: str) -> str:
        return f"{self.base}/tickets/{token}"

    def reply(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/reply"

    def reply_to(self, name: str, response_topic: object) -> str:
        """Where the reply to command `name` goes: the MQTT 5 response topic it named, if
        the contract allows that one, else `<base>/cmd/<name>/reply`."""
        if isinstance(response_topic, str) and self.allows_response_topic(response_topic):
            return response_topic
        return self.reply(name)

    def allows_response_topic(self, topic: str) -> bool:
        """Outside `<base>/` and without a `cmd` level, so that a reply never lands on a
        hall's state or command topics; and a topic anyone may publish to at all: no
        wildcard or control character, not `$`-reserved, at most 256 bytes of UTF-8."""
        if topic == self.base or topic.startswith(f"{self.base}/"):
            return False
        if topic.startswith("$") or "cmd" in topic.split("/"):
            return False
        try:
            size = len(topic.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate
            return False
        return 0 < size <= MAX_RESPONSE_TOPIC and not any(
            ch in "+#" or unicodedata.category(ch) == "Cc" for ch in topic
        )

    def command_name(self, topic: str) -> str | None:
        """`ticket.remote` for `<base>/cmd/ticket.remote`; None for any other topic."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name and "/" not in name else None


# -- the status topic ---------------------------------------------------------------------


def status(state: str, since: datetime, boot: int) -> bytes:
    """`online`, `offline` (the Last Will) or `stopped`, with the daemon's version and boot."""
    return dumps(
        {"v": 1, "state": state, "since": format_time(since), "version": __version__, "boot": boot}
    )


# -- the event log --------------------------------------------------------------------------


def event(ev: StoredEvent) -> bytes:
    """One event of the log as published on `<base>/events`.

    A ticket's token only opens `<base>/tickets/<token>`: whoever reads the event log (the
    backend, and anyone the backend shares it with) must not be able to follow tickets.
    """
    obj = to_contract(ev)
    if ev.type == TICKET_ISSUED and "token" in ev.data:
        obj["data"] = {k: v for k, v in ev.data.items() if k != "token"}
    return dumps(obj)


# -- retained live state --------------------------------------------------------------------


def queue_state(
    state: HallState, forecaster: Forecaster, service: str, now: datetime, updated: datetime
) -> bytes:
    """`<base>/queues/<service>`: what the app shows before anyone takes a ticket."""
    spec = state.services[service]
    waiting = state.waiting(service)
    return dumps(
        {
            "v": 1,
            "service": service,
            "name": spec.name,
            "waiting": waiting,
            "serving": state.serving_numbers(service),
            "open_counters": [c.id for c in state.open_counters(service)],
            # The wait of a ticket taken now: it would queue behind every waiting ticket.
            "forecast": forecaster(state, service, state.ahead_if_issued(service, False), now),
            "updated": format_time(updated),
        }
    )


def counter_state(state: HallState, counter: int) -> bytes:
    """`<base>/counters/<counter>`."""
    c = state.counters[counter]
    return dumps(
        {
            "v": 1,
            "counter": c.id,
            "state": c.state,
            "ticket": c.current,
            "services": list(c.services),
        }
    )


def ticket_state(state: HallState, forecaster: Forecaster, t: Ticket, now: datetime) -> bytes:
    """`<base>/tickets/<token>`: one ticket, for its applicant's app.

    Only a waiting ticket has a wait to forecast; for the others `ahead` is 0 and `forecast`
    null rather than a made-up figure.
    """
    obj: dict[str, Any] = {"v": 1, "number": t.number, "service": t.service, "state": t.state}
    if t.state == WAITING:
        ahead = state.ahead_of(t)
        obj["ahead"] = ahead
        # The learned forecaster knows each waiting ticket by itself; others by position.
        per_ticket = getattr(forecaster, "ticket", None)
        f = per_ticket(state, t.number, now) if callable(per_ticket) else None
        obj["forecast"] = f or forecaster(state, t.service, ahead, now)
    else:
        obj["ahead"] = 0
        obj["forecast"] = None
    if t.counter is not None:
        obj["counter"] = t.counter
    return dumps(obj)


def ticket_finished(number: str, service: str, state: str, counter: int | None) -> bytes:
    """A finished ticket's last word when the hall no longer holds it (see sync/live.py)."""
    obj: dict[str, Any] = {
        "v": 1,
        "number": number,
        "service": service,
        "state": state,
        "ahead": 0,
        "forecast": None,
    }
    if counter is not None:
        obj["counter"] = counter
    return dumps(obj)


# -- the outlook ----------------------------------------------------------------------------


def _open_in_hour(spec: ServiceSpec, day: datetime, hour: int) -> bool:
    """Whether the service is open at any moment of [hour:00, hour+1:00) on that day."""
    if not spec.hours:
        return True
    start = time(hour)
    end = time(hour + 1) if hour < 23 else time.max
    weekday = day.isoweekday()
    return any(
        weekday in w.weekdays and w.start < end and w.end > start
        for w in spec.hours
        if w.start < w.end
    )


def outlook_placeholder(state: HallState, forecaster: Forecaster, now: datetime) -> dict[str, Any]:
    """The outlook until a forecaster that knows daily patterns provides one.

    It repeats, for every hour a service is open today (from this hour on) and on the next 6
    days, the forecast the forecaster gives for a ticket taken now, and says so: `method` is
    `flat-now`, and `crowd` (expected applicants) is null because nothing here predicts it.
    """
    current = {
        code: forecaster(state, code, state.ahead_if_issued(code, False), now)
        for code in state.services
    }
    local = now.astimezone(state.spec.tz())
    days = []
    for offset in range(OUTLOOK_DAYS):
        day = local + timedelta(days=offset)
        first = local.hour if offset == 0 else 0
        hours = []
        for hour in range(first, 24):
            services = [
                {"service": code, "crowd": None, "forecast": current[code]}
                for code, spec in state.services.items()
                if _open_in_hour(spec, day, hour)
            ]
            if services:
                hours.append({"hour": hour, "services": services})
        days.append({"date": day.date().isoformat(), "hours": hours})
    return {"method": OUTLOOK_METHOD, "days": days}


def outlook(body: dict[str, Any], updated: datetime) -> bytes:
    """`<base>/outlook`: `body` holds `method` and `days`."""
    return dumps({"v": 1, "updated": format_time(updated), **body})


# -- command replies ------------------------------------------------------------------------


def reply_ok(command_id: str, data: dict[str, Any]) -> bytes:
    return dumps({"v": 1, "id": command_id, "ok": True, "data": data})


def reply_error(command_id: str, code: int, reason: str, message: str) -> bytes:
    """`code` is the number the line protocol and the HTTP API use for the same refusal
    (400, 404, 409, 413, 429, 500); `reason` is its stable slug, e.g. `unknown-service`."""
    return dumps(
        {
            "v": 1,
            "id": command_id,
            "ok": False,
            "error": {"code": code, "reason": reason, "message": message},
        }
    )

"""The admin's actions: each one a typed engine command, so each is logged as events.

    POST /admin/api/actions/<name>   JSON body; answers {"ok": true, "events": [...]} or
                                     {"ok": false, "error": {"code", "message"}}

| name           | body                               | command                          |
|----------------|------------------------------------|----------------------------------|
| counter.open   | counter                            | OpenCounter                      |
| counter.pause  | counter                            | PauseCounter                     |
| counter.close  | counter                            | CloseCounter                     |
| ticket.issue   | service, priority                  | TakeTicket(channel="counter")    |
| ticket.cancel  | ticket (number or token)           | Cancel(reason="admin")           |
| ticket.move    | ticket, service                    | MoveTicket                       |
| ticket.reprint | ticket                             | RequestReprint                   |
| call.replay    | ticket or counter                  | ReplayCall                       |
| notice.set     | text ("" = the configured notice)  | SetNotice                        |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import commands as c
from ..hall import Hall
from ..model import DomainError
from ..tokens import new_token
from ..webedge import BodyError, read_json_object

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # the notice: 2,000 characters, each up to 6 bytes as JSON escapes
JSON = dict[str, Any]


class BadRequest(ValueError):
    pass


def _int(body: JSON, key: str) -> int:
    value = body.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{key} (a number) expected")
    return value


def _str(body: JSON, key: str, *, max_len: int = 128, allow_empty: bool = False) -> str:
    value = body.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise BadRequest(f"{key} (text) expected")
    if len(value) > max_len:
        raise BadRequest(f"{key} is longer than {max_len} characters")
    return value.strip() if not allow_empty else value


def _ticket(body: JSON) -> str:
    """A number (`a012` is `A012`) or a token (case matters, 16+ characters)."""
    ref = _str(body, "ticket")
    return ref.upper() if len(ref) <= 6 else ref


def _bool(body: JSON, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} (true or false) expected")
    return value


Builder = Callable[[Hall, JSON], c.Command]


def _replay(hall: Hall, b: JSON) -> c.Command:
    if b.get("counter") not in (None, ""):
        return c.ReplayCall(hall.now(), counter=_int(b, "counter"))
    return c.ReplayCall(hall.now(), ticket=_ticket(b))


ACTIONS: dict[str, Builder] = {
    "counter.open": lambda h, b: c.OpenCounter(h.now(), _int(b, "counter")),
    "counter.pause": lambda h, b: c.PauseCounter(h.now(), _int(b, "counter")),
    "counter.close": lambda h, b: c.CloseCounter(h.now(), _int(b, "counter")),
    "ticket.issue": lambda h, b: c.TakeTicket(
        h.now(), _str(b, "service"), new_token(), "counter", _bool(b, "priority")
    ),
    "ticket.cancel": lambda h, b: c.Cancel(h.now(), _ticket(b), "admin"),
    "ticket.move": lambda h, b: c.MoveTicket(h.now(), _ticket(b), _str(b, "service")),
    "ticket.reprint": lambda h, b: c.RequestReprint(h.now(), _ticket(b)),
    "call.replay": _replay,
    "notice.set": lambda h, b: c.SetNotice(
        h.now(), _str(b, "text", max_len=2000, allow_empty=True)
    ),
}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status
    )


class Actions:
    def __init__(self, hall: Hall) -> None:
        self.hall = hall
        self.done = 0
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["action"]
        build = ACTIONS.get(name)
        if build is None:
            return _error(404, "unknown-action", f"unknown action {name!r}")
        try:
            body = await read_json_object(request, max_bytes=MAX_BODY)
        except BodyError as exc:
            return _error(exc.status, exc.slug, exc.message)
        try:
            command = build(self.hall, body)
        except BadRequest as exc:
            return _error(400, "invalid", str(exc))
        try:
            events = await self.hall.submit(command)
        except DomainError as exc:
            self.refused += 1
            status = 503 if exc.code >= 500 else exc.code
            return _error(status, exc.slug, exc.message)
        self.done += 1
        log.info(
            "admin %s: %s", name, ", ".join(f"{e.type}#{e.seq}" for e in events) or "no change"
        )
        answer: JSON = {
            "ok": True,
            "events": [
                {
                    "seq": e.seq,
                    "type": e.type,
                    "data": {k: v for k, v in e.data.items() if k != "token"},
                }
                for e in events
            ],
        }
        if isinstance(command, c.TakeTicket):
            t = self.hall.state.by_token.get(command.token)
            if t is not None:  # the applicant's page, for the admin to hand over or print
                answer["ticket"] = {
                    "number": t.number,
                    "service": t.service,
                    "page": f"/t/{t.token}",
                }
        return web.json_response(answer)

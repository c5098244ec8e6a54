"""What every HTTP route takes from strangers, read the one safe way: JSON request bodies
(bounded in bytes and depth), and what every response gives away (no software versions).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web, web_response

SERVER_NAME = "hall-daemon"  # what the Server header says: no product versions to look up
MAX_DEPTH = 8  # the routes' bodies are flat objects; nesting beyond this is not a request
_CHUNK = 4096


class BodyError(Exception):
    """A request body the route cannot take; each route answers it in its own JSON shape."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status, self.slug, self.message = status, slug, message


async def read_json_object(request: web.Request, *, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object of at most `max_bytes` and MAX_DEPTH levels, or BodyError
    (415 not JSON's content type, 413 too large, 400 not a shallow JSON object)."""
    if request.content_type != "application/json":
        raise BodyError(415, "json-expected", "send application/json")
    raw = await _read_at_most(request, max_bytes)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BodyError(400, "bad-json", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BodyError(400, "bad-json", "a JSON object expected")
    if _depth(body) > MAX_DEPTH:
        raise BodyError(400, "bad-json", f"JSON nested deeper than {MAX_DEPTH} levels")
    return body


async def _read_at_most(request: web.Request, max_bytes: int) -> bytes:
    too_large = BodyError(413, "too-large", f"the body may have at most {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large  # refused unread: the client said so itself
    raw = bytearray()
    while chunk := await request.content.read(_CHUNK):
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large
    return bytes(raw)


def _depth(value: object) -> int:
    """How deeply lists and objects nest in `value`, without recursion."""
    deepest = 0
    todo: list[tuple[object, int]] = [(value, 1)]
    while todo:
        item, level = todo.pop()
        children: list[Any] | None = None
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        todo.extend((child, level + 1) for child in children)
    return deepest


def hide_server_banner() -> None:
    """Every response, the parser's own error answers and WebSocket handshakes included,
    says only SERVER_NAME. aiohttp has no setting for it and fills the header in from this
    module constant wherever a response is prepared."""
    setattr(web_response, "SERVER_SOFTWARE", SERVER_NAME)  # noqa: B010

"""The one reader of JSON request bodies, behind a real aiohttp server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hall_daemon.webedge import (
    MAX_DEPTH,
    SERVER_NAME,
    BodyError,
    hide_server_banner,
    read_json_object,
)

pytestmark = pytest.mark.unit

LIMIT = 8192


async def echo(request: web.Request) -> web.Response:
    try:
        body = await read_json_object(request, max_bytes=LIMIT)
    except BodyError as exc:
        return web.json_response({"slug": exc.slug, "message": exc.message}, status=exc.status)
    return web.json_response({"keys": sorted(body)})


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    hide_server_banner()
    app = web.Application()
    app.router.add_post("/echo", echo)
    c = TestClient(TestServer(app, host="127.0.0.1"))
    await c.start_server()
    yield c
    await c.close()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return {"a": value}


async def post(client: TestClient[Any, Any], data: Any) -> tuple[int, Any]:
    r = await client.post("/echo", data=data, headers={"Content-Type": "application/json"})
    assert r.headers["Server"] == SERVER_NAME
    return r.status, await r.json()


async def test_shallow_objects_pass_and_everything_else_is_a_clear_refusal(
    client: TestClient[Any, Any],
) -> None:
    assert await post(client, b'{"service": "A", "priority": false}') == (
        200,
        {"keys": ["priority", "service"]},
    )
    assert (await post(client, json.dumps(nested(MAX_DEPTH - 1)).encode()))[0] == 200
    for body in (
        json.dumps(nested(MAX_DEPTH)).encode(),
        b"[" * 1500 + b"]" * 1500,  # deeper than the parser's own recursion limit
        b"[1, 2]",
        b'{"a": "\xff"}',
        b'{"a": 1',
        b'{"n": ' + b"9" * 4400 + b"}",  # more digits than int() takes from a string
    ):
        status, answer = await post(client, body)
        assert (status, answer["slug"]) == (400, "bad-json"), body[:20]


async def test_large_bodies_are_refused_whether_announced_or_streamed(
    client: TestClient[Any, Any],
) -> None:
    big = b'{"a": "' + b"x" * LIMIT + b'"}'
    assert await post(client, big) == (
        413,
        {"slug": "too-large", "message": f"the body may have at most {LIMIT} bytes"},
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(64):  # 16 KiB, over the limit
            yield b" " * 256

    status, answer = await post(client, chunks())
    assert (status, answer["slug"]) == (413, "too-large")
    r = await client.post("/echo", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status == 415 and (await r.json())["slug"] == "json-expected"

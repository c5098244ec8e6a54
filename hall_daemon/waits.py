"""Waiting for the first of an event, some futures and a timeout, without losing a cancel."""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_first(
    wake: asyncio.Event, *futures: asyncio.Future[Any], timeout: float | None
) -> None:
    """Until `wake` is set, one of `futures` is done, or `timeout` seconds have passed
    (None: no limit).

    The helper task that waits on the event is cancelled and *not* awaited: awaiting it
    while suppressing its CancelledError would also swallow a cancel of the caller that
    arrives in that very step, and a task that loses its cancel at shutdown then waits for
    ever (seen: a stop that hung with the connection already closed)."""
    if wake.is_set():
        return
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait([waiter, *futures], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()

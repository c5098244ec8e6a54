"""The admin's "replay the call" ends as an event that the voice output really says again
(espeak-ng synthesizing into a WAV folder, as in test_voice_service)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hall_daemon import commands as c
from hall_daemon.model import Conflict

from .test_voice_service import Rig, clip_cache, rig  # noqa: F401  (fixtures)

pytestmark = pytest.mark.service


async def test_a_replay_request_is_logged_and_announced_again(rig: Any) -> None:  # noqa: F811
    r: Rig = await rig()
    number = await r.call("A", 2)
    assert await r.voice.drain()
    assert len(r.wavs()) == 1
    events = await r.hall.submit(c.ReplayCall(r.at + timedelta(seconds=20), counter=2))
    assert [(e.type, e.data["number"], e.data["counter"]) for e in events] == [
        ("call.replay_requested", number, 2)
    ]
    assert await r.voice.drain()
    called, replayed = r.wavs()
    assert f"called-{number}-c2" in called.name and f"replay-{number}-c2" in replayed.name
    assert replayed.stat().st_size > 44  # a real announcement, not an empty file
    # A ticket no longer at a counter cannot be replayed: refused, nothing said.
    await r.hall.submit(c.Done(r.at + timedelta(seconds=30), 2))
    with pytest.raises(Conflict):
        await r.hall.submit(c.ReplayCall(r.at + timedelta(seconds=31), ticket=number))
    assert await r.voice.drain()
    assert len(r.wavs()) == 2

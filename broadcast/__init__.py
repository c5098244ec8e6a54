"""Voice calls: phrase templates, voice packs, TTS, the play queue, players.

`start_voice(hall, config)` subscribes to the hall's bus and announces every call and
recall (chime, Mandarin, English) through one play queue; see service.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .service import VoiceHandle, start_voice

__all__ = ["VoiceHandle", "start_voice"]


def __getattr__(name: str) -> object:
    # Imported on first use, not with the package: `python -m broadcast.voicepack` must not
    # find broadcast.voicepack already imported (through service.py) before it runs.
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module 'broadcast' has no attribute {name!r}")

"""Announcement -> PCM: clips from the voice pack, else from espeak-ng (cached), joined.

Lives on the voice worker thread: everything here may block (subprocesses, disk), and none
of it is shared with the event loop except read-only counters.

Warm (the normal case, every clip cached or recorded) an announcement is a concatenation of
bytes: a millisecond. Cold (the first calls after installation, before the start-up warm-up
has made the clips) a sentence with a clip missing is synthesized whole, by one espeak-ng
run per language instead of a dozen, so even the first call starts quickly; the missing
clips are made afterwards, while the hall is quiet (see `missing` and the service's warm-up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from .audio import chime, scale, silence
from .phrase import (
    GAP_CHIME,
    GAP_PAUSE,
    GAP_PHRASE,
    GAP_REPEAT,
    GAP_SPELL,
    TAIL,
    Announcement,
    Clip,
    Lang,
)
from .tts import ClipCache, Espeak
from .voicepack import VoicePack

log = logging.getLogger(__name__)

Piece = tuple[str, bytes]  # (where it came from: a clip's key, "chime", "sentence"; PCM)


def sentence_text(sentence: Sequence[Clip]) -> str:
    """A sentence as one text for espeak-ng, pausing where the template has punctuation.

    An English letter gets a comma after it: followed by a word, espeak-ng takes a lone "A"
    for the article ("a zero one two"), while "A, zero" is said as the letter's name.
    """
    text = ""
    for i, clip in enumerate(sentence):
        if i:
            text += ", " if clip.gap_ms >= GAP_PAUSE else " "
        text += clip.tts
        if clip.lang == "en" and len(clip.key) == 1 and clip.key.isalpha():
            text += ","
    return text.replace(",,", ",").replace(", ,", ",").rstrip(",")


class Renderer:
    def __init__(
        self,
        voices: Mapping[Lang, str],
        cache: ClipCache,
        tts: Espeak | None = None,
        pack: VoicePack | None = None,
    ) -> None:
        self.voices = dict(voices)
        self.cache = cache
        self.tts = tts or Espeak()
        self.pack = pack
        self._chime: Piece = ("chime", pack.chime if pack and pack.chime else chime())
        self.synthesized = 0  # espeak-ng runs: clips, and whole sentences of cold calls

    def set_pack(self, pack: VoicePack | None) -> None:
        self.pack = pack
        self._chime = ("chime", pack.chime if pack and pack.chime else chime())

    def _key(self, clip: Clip) -> str:
        return f"{self.tts.name(self.voices[clip.lang])}|{clip.tts}"

    def _from_pack(self, clip: Clip) -> list[Piece] | None:
        return self.pack.lookup(clip.lang, clip.key) if self.pack is not None else None

    def missing(self, clips: Iterable[Clip]) -> list[Clip]:
        """The clips neither the voice pack nor the cache holds: espeak-ng must make them."""
        found: dict[str, Clip] = {}
        for clip in clips:
            if self._from_pack(clip) is not None:
                continue
            key = self._key(clip)
            if key not in found and self.cache.get(key) is None:
                found[key] = clip
        return list(found.values())

    def prepare(self, clips: Iterable[Clip]) -> int:
        """Make sure every clip can be said without waiting: synthesize those that neither
        the voice pack nor the cache holds (several espeak-ng processes at once). Returns how
        many were synthesized; raises TtsError."""
        clips = list(clips)
        todo = self.missing(clips)
        if todo:
            pcms = self.tts.synthesize([(self.voices[c.lang], c.tts) for c in todo])
            for clip, pcm in zip(todo, pcms, strict=True):
                self.cache.put(self._key(clip), pcm)
            self.synthesized += len(todo)
        return len(todo)

    def pieces(self, clip: Clip) -> list[Piece]:
        """What is played for `clip`: recorded parts, or one synthesized clip."""
        from_pack = self._from_pack(clip)
        if from_pack is not None:
            return from_pack
        key = self._key(clip)
        pcm = self.cache.get(key)
        if pcm is None:  # not made yet: render() says such sentences whole instead
            pcm = self.tts.synthesize([(self.voices[clip.lang], clip.tts)])[0]
            self.cache.put(key, pcm)
            self.synthesized += 1
        return [(key, pcm)]

    @staticmethod
    def scaled(piece: Piece, percent: int) -> bytes:
        return piece[1] if percent == 100 else scale(piece[1], percent / 100)

    def render(self, announcement: Announcement, percent: int = 100) -> bytes:
        """The whole announcement as PCM: chime, then the sentences, `repeat` times.
        Raises TtsError if espeak-ng is needed and fails."""
        # Sentences with a clip not yet made are said whole by one espeak-ng run each (all
        # such sentences at once): one process per language instead of one per clip.
        sentences = announcement.sentences
        cold = [i for i, sentence in enumerate(sentences) if self.missing(sentence)]
        whole: dict[int, bytes] = {}
        if cold:
            texts = [(self.voices[sentences[i][0].lang], sentence_text(sentences[i])) for i in cold]
            for i, pcm in zip(cold, self.tts.synthesize(texts), strict=True):
                whole[i] = self.scaled(("sentence", pcm), percent)
            self.synthesized += len(cold)
        said: list[bytes] = []
        for i, sentence in enumerate(sentences):
            if i:
                said.append(silence(GAP_PHRASE))
            if i in whole:
                said.append(whole[i])
                continue
            for j, clip in enumerate(sentence):
                if j:
                    said.append(silence(clip.gap_ms))
                for k, piece in enumerate(self.pieces(clip)):
                    if k:  # parts of a recorded phrase joined from smaller recordings
                        said.append(silence(GAP_SPELL))
                    said.append(self.scaled(piece, percent))
        once = b"".join(said)
        parts = [self.scaled(self._chime, percent), silence(GAP_CHIME), once]
        for _ in range(announcement.repeat - 1):
            parts += [silence(GAP_REPEAT), once]
        parts.append(silence(TAIL))
        return b"".join(parts)

    def chime_pcm(self, percent: int = 100) -> bytes:
        return self.scaled(self._chime, percent)

"""PCM helpers: one sample format everywhere, WAV in and out, trimming, volume, the chime.

Every clip, from a voice pack or from espeak-ng, is kept as 16-bit signed little-endian mono
PCM at `RATE` (espeak-ng's own rate), so joining clips into an announcement is a plain
concatenation of bytes: nothing is resampled or decoded on the way to the speaker.
Standard library (wave, array, math) except for the volume: `audioop` is gone in Python 3.13,
and numpy, which the daemon loads anyway for the forecaster, scales a clip in microseconds
where a Python loop takes milliseconds, so no scaled copies need to be kept in memory.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave
from array import array

import numpy as np

RATE = 22050
"""Samples per second of every clip and announcement (espeak-ng's native rate)."""
WIDTH = 2  # bytes per sample: 16-bit
SILENCE_LEVEL = 400
"""Samples quieter than this (of 32767) count as silence when trimming and measuring."""


class AudioError(ValueError):
    """A WAV file or stream this module cannot use."""


def silence(ms: float) -> bytes:
    return b"\x00\x00" * int(RATE * ms / 1000)


def duration_s(pcm: bytes) -> float:
    return len(pcm) / (WIDTH * RATE)


def samples(pcm: bytes) -> array[int]:
    a = array("h")
    a.frombytes(pcm[: len(pcm) - len(pcm) % WIDTH])
    if sys.byteorder == "big":  # WAV data is little-endian
        a.byteswap()
    return a


def to_bytes(a: array[int]) -> bytes:
    if sys.byteorder == "big":
        a = array("h", a)
        a.byteswap()
    return a.tobytes()


def parse_wav(data: bytes) -> tuple[int, int, int, bytes]:
    """(channels, sample width, rate, PCM bytes) of a PCM WAV.

    Written by hand rather than with `wave` because espeak-ng's --stdout WAV is a stream:
    its RIFF and data sizes are placeholders (0x7ffff000), which `wave` takes at face value.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not a WAV file (no RIFF/WAVE header)")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16:
                raise AudioError("WAV fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                raise AudioError("WAV data before its fmt chunk")
            tag, channels, rate, bits = fmt
            if tag not in (1, 0xFFFE):  # PCM, or WAVE_FORMAT_EXTENSIBLE holding PCM
                raise AudioError(f"WAV is not plain PCM (format tag {tag})")
            end = min(len(data), body + size)  # streamed WAVs overstate the size
            pcm = data[body:end]
            width = bits // 8
            block = width * channels
            return channels, width, rate, pcm[: len(pcm) - len(pcm) % block]
        pos = body + size + (size & 1)  # chunks are padded to an even length
    raise AudioError("WAV has no data chunk")


def wav_bytes(pcm: bytes) -> bytes:
    """A complete WAV file (header with true sizes) holding `pcm` in the common format."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(WIDTH)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return buf.getvalue()


def read_pcm(data: bytes) -> bytes:
    """PCM in the common format from a WAV, or AudioError if it is in another format
    (voice packs are converted with sox on loading; see voicepack.py)."""
    channels, width, rate, pcm = parse_wav(data)
    if (channels, width, rate) != (1, WIDTH, RATE):
        raise AudioError(
            f"expected mono 16-bit {RATE} Hz, got {channels} channel(s), {8 * width}-bit, {rate} Hz"
        )
    return pcm


def trim(pcm: bytes, margin_ms: float = 15) -> bytes:
    """Cut leading and trailing silence, keeping `margin_ms` so no syllable loses its edge.

    espeak-ng pads each clip with silence of its own choosing; the announcement sets its own
    gaps between clips instead, so clips join at a steady pace.
    """
    a = samples(pcm)
    first = next((i for i, x in enumerate(a) if abs(x) > SILENCE_LEVEL), None)
    if first is None:
        return b""
    last = next(i for i in range(len(a) - 1, -1, -1) if abs(a[i]) > SILENCE_LEVEL)
    margin = int(RATE * margin_ms / 1000)
    return to_bytes(a[max(0, first - margin) : min(len(a), last + 1 + margin)])


def normalize(pcm: bytes, peak: float = 0.8) -> bytes:
    """Scale so the loudest sample is `peak` of full scale: clips synthesized one by one come
    out at different levels, and an announcement should not jump in loudness between them."""
    a = samples(pcm)
    top = max((abs(x) for x in a), default=0)
    if top < SILENCE_LEVEL * 2:  # (nearly) silent: amplifying would only raise the noise
        return pcm
    return scale(pcm, peak * 32767 / top)


def scale(pcm: bytes, factor: float) -> bytes:
    """Multiply every sample by `factor` (volume), clipping at full scale."""
    if factor == 1.0:
        return pcm
    a = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // WIDTH).astype(np.float64)
    # int() truncated toward zero in the pure-Python version; keep the same samples.
    return np.clip(np.trunc(a * factor), -32768, 32767).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    """Root mean square of the samples, 0..32767: loudness, to tell speech from silence."""
    a = samples(pcm)
    if not a:
        return 0.0
    return math.sqrt(sum(x * x for x in a) / len(a))


def voiced_spans(
    pcm: bytes, window_ms: float = 20, min_gap_ms: float = 40
) -> list[tuple[float, float]]:
    """(start s, end s) of the stretches that are not silence, gaps shorter than `min_gap_ms`
    bridged. Used by tests and `voicepack check` to see what an announcement holds."""
    a = samples(pcm)
    step = max(1, int(RATE * window_ms / 1000))
    spans: list[tuple[float, float]] = []
    for start in range(0, len(a), step):
        window = a[start : start + step]
        loud = math.sqrt(sum(x * x for x in window) / len(window)) > SILENCE_LEVEL / 2
        if not loud:
            continue
        t0, t1 = start / RATE, (start + len(window)) / RATE
        if spans and t0 - spans[-1][1] < min_gap_ms / 1000:
            spans[-1] = (spans[-1][0], t1)
        else:
            spans.append((t0, t1))
    return spans


def chime(volume: float = 0.45) -> bytes:
    """A two-tone "ding-dong" (A5 then E5, bell-like decay), the hall's attention signal.

    Generated rather than shipped so the daemon needs no audio files; a voice pack's
    chime.wav replaces it.
    """
    out = array("h")
    for freq, length_s in ((880.0, 0.42), (659.25, 0.62)):
        n = int(RATE * length_s)
        fade = int(RATE * 0.01)  # 10 ms fades: no click where a tone starts or stops
        for i in range(n):
            t = i / RATE
            envelope = math.exp(-4.5 * t) * min(1.0, i / fade, (n - i) / fade)
            tone = (
                math.sin(2 * math.pi * freq * t)
                + 0.35 * math.sin(2 * math.pi * 2 * freq * t) * math.exp(-3 * t)
                + 0.15 * math.sin(2 * math.pi * 3 * freq * t) * math.exp(-6 * t)
            ) / 1.5
            out.append(int(32767 * volume * envelope * tone))
    return to_bytes(out)

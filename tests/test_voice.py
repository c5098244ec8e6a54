"""Voice calls, the pure parts: pinyin, numbers, phrases, voice pack joins, PCM helpers."""

from __future__ import annotations

import struct
from datetime import time
from pathlib import Path

import pytest

from broadcast import audio
from broadcast.phrase import EN_DIGITS, PhraseBuilder, en_key, en_number
from broadcast.pinyin import PINYIN, to_pinyin, unknown_hanzi, zh_number
from broadcast.render import sentence_text
from broadcast.service import _within
from broadcast.tts import ClipCache
from broadcast.voicepack import VoicePack, default_vocabulary
from hall_daemon.config import HallConfig, TimeRange, VoiceTemplates, load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(REPO / "config.yaml")


def with_templates(zh: str, en: str) -> HallConfig:
    templates = VoiceTemplates(zh=zh, en=en)
    return CONFIG.model_copy(
        update={"voice": CONFIG.voice.model_copy(update={"templates": templates})}
    )


# -- numbers and pinyin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (0, "零"),
        (3, "三"),
        (10, "十"),
        (12, "十二"),
        (20, "二十"),
        (21, "二十一"),
        (100, "一百"),
        (105, "一百零五"),
        (110, "一百一十"),
        (112, "一百一十二"),
        (999, "九百九十九"),
    ],
)
def test_counters_are_said_as_numbers_in_mandarin(n: int, said: str) -> None:
    assert "".join(zh_number(n)) == said


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (3, "three"),
        (12, "twelve"),
        (40, "forty"),
        (21, "twenty one"),
        (105, "one hundred and five"),
    ],
)
def test_counters_are_said_as_numbers_in_english(n: int, said: str) -> None:
    assert " ".join(en_number(n)) == said


def test_template_words_and_digits_become_pinyin() -> None:
    assert to_pinyin("请") == "qǐng"
    assert to_pinyin("号窗口办理") == "hào chuāng kǒu bàn lǐ"
    assert to_pinyin("3号窗口") == "sān hào chuāng kǒu"
    assert to_pinyin("12号窗口，请") == "shí èr hào chuāng kǒu, qǐng"
    assert to_pinyin("企业开办") == "qǐ yè kāi bàn"
    # Every digit and unit has its syllable: no Chinese character reaches espeak-ng's
    # letter reader from a number.
    assert all(PINYIN[ch] for ch in "零一二三四五六七八九十百")


def test_characters_missing_from_the_table_are_named_and_passed_through() -> None:
    assert unknown_hanzi("请到3号窗口鑫") == ["鑫"]
    assert to_pinyin("鑫窗口") == "鑫 chuāng kǒu"
    assert PhraseBuilder(CONFIG).unknown_characters() == []  # the example hall is covered


# -- phrases ---------------------------------------------------------------------------------


def test_the_default_templates_read_the_ticket_digit_by_digit_and_the_counter_as_a_number() -> None:
    builder = PhraseBuilder(CONFIG)
    a = builder.announcement("called", {"number": "A012", "service": "A", "counter": 3})
    zh, en = a.sentences
    assert [c.key for c in zh] == ["请", "A", "零", "一", "二", "号到", "三", "号窗口办理"]
    assert " ".join(c.tts for c in zh) == "qǐng A líng yī èr hào dào sān hào chuāng kǒu bàn lǐ"
    assert [c.key for c in en] == [
        "number",
        "A",
        "zero",
        "one",
        "two",
        "please go to counter",
        "three",
    ]
    assert a.repeat == CONFIG.voice.repeat == 2
    # The comma in the English template is a longer pause than between ordinary words.
    assert en[5].gap_ms > en[4].gap_ms


def test_a_cold_sentence_is_one_text_with_letters_said_as_letters() -> None:
    builder = PhraseBuilder(CONFIG)
    zh, en = builder.announcement(
        "called", {"number": "A012", "service": "A", "counter": 3}
    ).sentences
    assert sentence_text(zh) == "qǐng A líng yī èr hào dào sān hào chuāng kǒu bàn lǐ"
    assert sentence_text(en) == "Number A, zero one two, please go to counter three"


def test_every_template_field_is_said() -> None:
    builder = PhraseBuilder(
        with_templates(
            zh="{service_name}，请{number}号到{counter_name}",
            en="{service} {service_name}: number {number}, {counter_name}",
        )
    )
    a = builder.announcement("called", {"number": "B007", "service": "B", "counter": 12})
    zh, en = a.sentences
    assert [c.key for c in zh] == [
        "不动产登记",
        "请",
        "B",
        "零",
        "零",
        "七",
        "号到",
        "十二",
        "号窗口",
    ]
    assert zh[0].tts == "bù dòng chǎn dēng jì"
    assert zh[7].tts == "shí èr"
    keys = [c.key for c in en]
    assert keys[:2] == ["B", "real estate registration"]
    assert keys[-1] == "counter twelve"  # counter 12 is not in config.yaml: a made-up name


def test_the_vocabulary_covers_every_digit_letter_and_counter_of_the_hall() -> None:
    keys = {(c.lang, c.key) for c in PhraseBuilder(CONFIG).vocabulary()}
    for digit in range(10):
        assert ("zh", "零一二三四五六七八九"[digit]) in keys
        assert ("en", EN_DIGITS[digit]) in keys
    for service in CONFIG.services:
        assert ("zh", service.prefix) in keys and ("en", service.prefix) in keys
    for counter in CONFIG.counters:
        assert ("zh", "".join(zh_number(counter.id))) in keys
        assert ("en", " ".join(en_number(counter.id))) in keys


def test_english_keys_are_lower_case_words_with_digits_spelt() -> None:
    assert en_key("  Please go to   Counter 3 ") == "please go to counter three"


# -- voice packs -----------------------------------------------------------------------------


def fake_pack(zh: list[str], en: list[str]) -> VoicePack:
    clip = audio.silence(10)
    return VoicePack(
        Path("/nowhere"),
        {"zh": dict.fromkeys(zh, clip), "en": dict.fromkeys(en, clip)},
        None,
    )


def test_a_pack_says_a_phrase_from_its_own_clip_or_joins_it_from_the_longest_pieces() -> None:
    pack = fake_pack(["号", "窗口", "办理", "号窗口", "三"], ["please go to", "counter", "three"])
    assert [p[0] for p in pack.lookup("zh", "号窗口办理") or []] == [
        "pack:zh:号窗口",
        "pack:zh:办理",
    ]
    assert [p[0] for p in pack.lookup("en", "please go to counter") or []] == [
        "pack:en:please go to",
        "pack:en:counter",
    ]
    assert pack.lookup("zh", "请") is None  # not recorded: espeak-ng will say it
    assert pack.lookup("en", "Please Go To") is not None  # English keys ignore case


def test_the_default_pack_holds_what_the_default_templates_need() -> None:
    vocabulary = default_vocabulary()
    pack = fake_pack(
        [c.key for c in vocabulary if c.lang == "zh"], [c.key for c in vocabulary if c.lang == "en"]
    )
    assert pack.missing(PhraseBuilder(CONFIG).vocabulary()) == []


# -- audio -----------------------------------------------------------------------------------


def test_a_streamed_wav_with_placeholder_sizes_is_read_to_its_end() -> None:
    pcm = struct.pack("<4h", 1, -2, 3, -4)
    wav = bytearray(audio.wav_bytes(pcm))
    wav[4:8] = struct.pack("<I", 0x7FFFF000)  # as espeak-ng --stdout writes them
    wav[40:44] = struct.pack("<I", 0x7FFFF000)
    assert audio.parse_wav(bytes(wav)) == (1, 2, audio.RATE, pcm)


def test_trim_keeps_the_sound_and_a_margin_but_not_the_silence() -> None:
    loud = struct.pack("<h", 8000) * 441  # 20 ms
    pcm = audio.silence(500) + loud + audio.silence(500)
    trimmed = audio.trim(pcm, margin_ms=10)
    assert loud in trimmed
    assert abs(audio.duration_s(trimmed) - 0.040) < 0.002


def test_volume_scales_the_samples() -> None:
    pcm = struct.pack("<3h", 10000, -20000, 30000)
    assert audio.samples(audio.scale(pcm, 0.5)).tolist() == [5000, -10000, 15000]
    assert audio.samples(audio.scale(pcm, 2.0)).tolist() == [20000, -32768, 32767]


def test_volume_truncates_toward_zero_and_ignores_a_dangling_byte() -> None:
    pcm = struct.pack("<4h", 3, -3, 7, -7) + b"\x01"
    assert audio.samples(audio.scale(pcm, 0.5)).tolist() == [1, -1, 3, -3]


def test_the_clip_cache_keeps_a_bounded_share_in_memory_and_the_rest_on_disk(
    tmp_path: Path,
) -> None:
    cache = ClipCache(tmp_path / "clips", memory_bytes=3000)
    clips = {f"clip{i}": bytes([i]) * 1000 for i in range(6)}
    for key, pcm in clips.items():
        cache.put(key, pcm)
    assert len(cache) == 3 and cache.held_bytes == 3000  # the three most recent
    for key, pcm in clips.items():  # every clip is still said as it was made
        assert cache.get(key) == pcm
    assert cache.disk_hits >= 3 and cache.misses == 0
    assert cache.held_bytes <= 3000


def test_without_a_directory_the_clip_cache_keeps_everything() -> None:
    cache = ClipCache(None, memory_bytes=1000)
    for i in range(5):
        cache.put(f"clip{i}", bytes([i]) * 1000)
    assert len(cache) == 5
    assert cache.get("clip0") == bytes([0]) * 1000


def test_the_chime_is_a_second_of_sound() -> None:
    chime = audio.chime()
    assert 0.9 < audio.duration_s(chime) < 1.3
    assert audio.rms(chime) > 1000


def test_time_windows_may_span_midnight() -> None:
    lunch = TimeRange.model_validate({"from": "12:00", "to": "13:30"})
    night = TimeRange.model_validate({"from": "22:00", "to": "07:00"})
    assert _within(lunch, time(12, 0)) and not _within(lunch, time(13, 30))
    assert _within(night, time(23, 0)) and _within(night, time(6, 59))
    assert not _within(night, time(12, 0))

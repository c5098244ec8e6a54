"""What an announcement says: the configured templates filled in and cut into clips.

A call becomes, per language, a sequence of `Clip`s: the template's fixed words, the ticket
number letter by letter and digit by digit (A 零 一 二 / A zero one two), the counter as a
number (三 / three; 十二 / twelve), names as written in config.yaml. Each clip says one thing
that a voice pack can hold as a recording (its `key`, e.g. ``zh/零.wav``) and that
espeak-ng can say from its `tts` text (pinyin for Mandarin, see pinyin.py). Cutting the
phrase this way is what lets every call be put together from a small set of clips that are
recorded or synthesized once, instead of synthesizing each call's sentence when it happens.

Pure: no I/O, no clock; the play queue and the renderer do the rest.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from hall_daemon.config import CounterConfig, HallConfig, ServiceConfig

from .pinyin import PINYIN, ZH_DIGITS, to_pinyin, unknown_hanzi, zh_number

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")  # the order the languages are spoken in

# Silences, in ms, chosen by ear: tight inside a ticket number so it is heard as one number,
# a breath between the parts of a sentence, a clear stop between the two languages.
GAP_SPELL = 40  # between the letters and digits of a ticket number
GAP_WORD = 90  # between the parts of a sentence
GAP_PAUSE = 260  # where the template has punctuation
GAP_PHRASE = 500  # between the Chinese and the English sentence
GAP_REPEAT = 900  # before the announcement is said again
GAP_CHIME = 250  # after the chime
TAIL = 400  # at the end: some players cut the last buffer short

EN_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = (
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

_PUNCTUATION = re.compile(r"[，。、！？；：,.!?;:…—()（）\[\]【】「」『』《》\"“”]+")
_EN_SPLIT = re.compile(r"[\s\-]+")


@dataclass(frozen=True, slots=True)
class Clip:
    """One piece of an announcement, said in one go."""

    lang: Lang
    key: str  # what it says, as written: "零", "A", "号窗口办理", "please go to counter"
    tts: str  # what espeak-ng is given: "líng", "A", "hào chuāng kǒu bàn lǐ"
    gap_ms: int = GAP_WORD  # silence before it (ignored for the first clip of a sentence)


@dataclass(frozen=True, slots=True)
class Announcement:
    """Everything the renderer needs: the chime, then each sentence, `repeat` times."""

    kind: str  # "called", "recalled" or "replay"
    number: str
    counter: int
    service: str
    sentences: tuple[tuple[Clip, ...], ...]  # one per language, in speaking order
    repeat: int

    def clips(self) -> list[Clip]:
        return [clip for sentence in self.sentences for clip in sentence]

    def describe(self) -> str:
        return f"{self.kind} {self.number} -> counter {self.counter}"


def en_number(n: int) -> list[str]:
    """A number in English words: 3 -> three, 21 -> twenty one, 105 -> one hundred and five."""
    if n < 0:
        raise ValueError(f"no reading for a negative number: {n}")
    if n < 10:
        return [EN_DIGITS[n]]
    if n < 20:
        return [_EN_TEENS[n - 10]]
    if n < 100:
        return [_EN_TENS[n // 10]] + ([EN_DIGITS[n % 10]] if n % 10 else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [EN_DIGITS[hundreds], "hundred"] + (["and", *en_number(rest)] if rest else [])
    return [EN_DIGITS[int(d)] for d in str(n)]


def en_key(text: str) -> str:
    """The voice pack key of English text: lower case, single spaces, digits as words."""
    words = []
    for word in _EN_SPLIT.split(text.strip().lower()):
        if word.isdigit():
            words.extend(en_number(int(word)))
        elif word:
            words.append(word)
    return " ".join(words)


def _spell(lang: Lang, code: str, first_gap: int) -> list[Clip]:
    """A ticket number or service code, one letter or digit at a time."""
    clips: list[Clip] = []
    for ch in code:
        if ch.isdigit():
            digit = int(ch)
            if lang == "zh":
                clip = Clip("zh", ZH_DIGITS[digit], PINYIN[ZH_DIGITS[digit]], GAP_SPELL)
            else:
                clip = Clip("en", EN_DIGITS[digit], EN_DIGITS[digit], GAP_SPELL)
        elif ch.isascii() and ch.isalpha():
            # Alone, a capital is said as its name by both voices ("ei", not the article a).
            clip = Clip(lang, ch.upper(), ch.upper(), GAP_SPELL)
        else:
            continue  # a dash or the like: nothing to say
        clips.append(clip)
    if clips:
        clips[0] = Clip(clips[0].lang, clips[0].key, clips[0].tts, first_gap)
    return clips


def _number(lang: Lang, n: int, gap: int) -> Clip:
    """A counter number said as a number, one clip (a voice pack may join it from parts)."""
    if lang == "zh":
        words = zh_number(n)
        return Clip("zh", "".join(words), " ".join(PINYIN[w] for w in words), gap)
    words = en_number(n)
    return Clip("en", " ".join(words), " ".join(words), gap)


def _text(lang: Lang, text: str, gap: int) -> list[Clip]:
    """Free text (a template's fixed words, a counter or service name): one clip per stretch
    between punctuation marks; in Chinese, runs of digits are numbers of their own."""
    clips: list[Clip] = []
    next_gap = gap
    for i, part in enumerate(_PUNCTUATION.split(text)):
        if i > 0:
            next_gap = max(next_gap, GAP_PAUSE)
        if lang == "zh":
            for run in re.findall(r"\d+|[^\d]+", part.replace(" ", "")):
                if run.isdigit():
                    clips.append(_number("zh", int(run), next_gap))
                else:
                    clips.append(Clip("zh", run, to_pinyin(run), next_gap))
                next_gap = GAP_WORD
        else:
            key = en_key(part)
            if key:
                clips.append(Clip("en", key, " ".join(part.split()), next_gap))
                next_gap = GAP_WORD
    return clips


class PhraseBuilder:
    """Turns call events into announcements with the hall's templates and names."""

    def __init__(self, config: HallConfig) -> None:
        voice = config.voice
        self.repeat = voice.repeat
        self.templates: dict[Lang, list[tuple[str, str | None]]] = {
            "zh": _parse(voice.templates.zh),
            "en": _parse(voice.templates.en),
        }
        self.counters: dict[int, CounterConfig] = {c.id: c for c in config.counters}
        self.services: dict[str, ServiceConfig] = {s.code: s for s in config.services}

    def announcement(self, kind: str, data: Mapping[str, object]) -> Announcement:
        """The announcement for a ticket.called / ticket.recalled event's data."""
        number = str(data["number"])
        counter = int(str(data["counter"]))
        service = str(data.get("service", ""))
        sentences = tuple(self.sentence(lang, number, counter, service) for lang in LANGS)
        return Announcement(kind, number, counter, service, sentences, self.repeat)

    def number_notice(self, number: str) -> Announcement:
        """Say "please note your number A012": said when a ticket's receipt did not print."""
        sentences = (
            (*_text("zh", "请记好您的号码", GAP_WORD), *_spell("zh", number, GAP_WORD)),
            (*_text("en", "Please note your number", GAP_WORD), *_spell("en", number, GAP_WORD)),
        )
        return Announcement("number", number, 0, "", sentences, self.repeat)

    def sentence(self, lang: Lang, number: str, counter: int, service: str) -> tuple[Clip, ...]:
        clips: list[Clip] = []
        for literal, field in self.templates[lang]:
            if literal:
                clips += _text(lang, literal, GAP_WORD)
            if field is not None:
                clips += self._field(lang, field, number, counter, service)
        return tuple(clips)

    def _field(self, lang: Lang, field: str, number: str, counter: int, service: str) -> list[Clip]:
        if field == "number":
            return _spell(lang, number, GAP_WORD)
        if field == "counter":
            return [_number(lang, counter, GAP_WORD)]
        if field == "counter_name":
            spec = self.counters.get(counter)
            if lang == "zh":
                return _text("zh", spec.name if spec else f"{counter}号窗口", GAP_WORD)
            name = spec.name_en if spec and spec.name_en else f"counter {counter}"
            return _text("en", name, GAP_WORD)
        if field == "service":
            return _spell(lang, service, GAP_WORD)
        if field == "service_name":
            s = self.services.get(service)
            if lang == "zh" and s is not None:
                return _text("zh", s.name, GAP_WORD)
            if s is not None and s.name_en:
                return _text("en", s.name_en, GAP_WORD)
            return _spell(lang, service, GAP_WORD)
        raise ValueError(f"unknown template field {{{field}}}")  # config.py rejects these

    def vocabulary(self) -> list[Clip]:
        """Every clip a call of this hall can need, to have them all ready before the first
        call: each service's letters with all ten digits, at each counter."""
        seen: dict[tuple[Lang, str, str], Clip] = {}
        for service in self.services.values():
            sample = service.prefix + "0123456789"
            for counter in self.counters:
                for lang in LANGS:
                    for clip in self.sentence(lang, sample, counter, service.code):
                        seen.setdefault((clip.lang, clip.key, clip.tts), clip)
        return list(seen.values())

    def unknown_characters(self) -> list[str]:
        """Chinese characters in the templates and names that pinyin.py cannot convert."""
        texts: Iterable[str] = [
            "".join(lit for lit, _ in self.templates["zh"]),
            *(c.name for c in self.counters.values()),
            *(s.name for s in self.services.values()),
        ]
        found: dict[str, None] = {}
        for text in texts:
            for ch in unknown_hanzi(text):
                found.setdefault(ch, None)
        return list(found)


def _parse(template: str) -> list[tuple[str, str | None]]:
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]

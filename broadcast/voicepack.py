"""Voice packs: folders of recorded clips that announcements are joined from.

A real hall sounds like a person because it plays recordings: a chime, the digits, the
letters, the fixed words of the sentence, in each language. A pack is a folder::

    chime.wav                 optional; the built-in ding-dong otherwise
    zh/零.wav ... zh/九.wav   digits, as read in a ticket number (A 零 一 二)
    zh/十.wav zh/百.wav       to say counters as numbers (十二号窗口)
    zh/A.wav ... zh/Z.wav     letters, said the Chinese way
    zh/请.wav zh/号到.wav zh/号窗口办理.wav ...   the template's words, as written
    en/zero.wav ... en/nineteen.wav en/twenty.wav ... en/hundred.wav en/and.wav
    en/A.wav ... en/Z.wav
    en/number.wav en/please go to counter.wav ...
    manifest.json             written by `build`: voices, format, what each clip says

A clip's file name is what it says (Chinese as written, English in lower case, letters in
capitals). A phrase the pack lacks as a whole is joined from the longest pieces it has
(号窗口办理 from 号 + 窗口 + 办理), and only what cannot be joined falls back to espeak-ng.
Clips in another format are converted with sox when the pack is loaded; 16-bit mono
22050 Hz WAV loads fastest.

    python -m broadcast.voicepack build DIR [--config config.yaml]   # a default pack, espeak-ng
    python -m broadcast.voicepack check DIR [--config config.yaml]   # what a call would lack
    python -m broadcast.voicepack say A012 3 [--config config.yaml] [--pack DIR] -o call.wav
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from .audio import RATE, AudioError, chime, read_pcm, trim, wav_bytes
from .phrase import EN_DIGITS, Clip, Lang, en_number
from .pinyin import PINYIN, ZH_DIGITS
from .tts import Espeak, TtsError

log = logging.getLogger(__name__)

PACK_FORMAT = 1
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Words beyond the default templates, so a hall can reword its templates without re-recording.
_ZH_WORDS = ("请", "号", "到", "窗口", "办理", "号到", "号窗口办理", "请到", "前往", "柜台", "号码")
_EN_WORDS = ("number", "please go to counter", "please go to", "counter", "window", "desk")


def _file_stem(lang: Lang, key: str) -> str:
    """The file name (without .wav) of a clip saying `key`; also how lookups normalize keys."""
    key = unicodedata.normalize("NFC", key).strip()
    key = re.sub(r"[/\\\x00]", "_", key)
    if lang == "en" and not (len(key) == 1 and key.isalpha()):
        key = key.lower()
    elif len(key) == 1 and key.isascii() and key.isalpha():
        key = key.upper()
    return key


class VoicePack:
    """The clips of a pack folder, loaded into memory (a pack is a few MB)."""

    def __init__(self, path: Path, clips: dict[Lang, dict[str, bytes]], chime: bytes | None):
        self.path = path
        self.clips = clips
        self.chime = chime
        # The most units (characters, words) any clip holds: how far a join looks ahead.
        self._longest = {
            lang: max((len(_units(lang, k)) for k in have), default=0)
            for lang, have in clips.items()
        }
        self._memo: dict[tuple[Lang, str], list[tuple[str, bytes]] | None] = {}

    @classmethod
    def load(cls, path: Path) -> VoicePack:
        """Read a pack folder; raises OSError if it is not there. Unusable files are skipped
        with a warning: one bad recording must not silence the hall."""
        if not path.is_dir():
            raise FileNotFoundError(f"voice pack folder {path} does not exist")
        clips: dict[Lang, dict[str, bytes]] = {"zh": {}, "en": {}}
        for lang in ("zh", "en"):
            folder = path / lang
            if not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.wav")):
                pcm = _load_clip(file)
                if pcm:
                    clips[lang][_file_stem(lang, file.stem)] = pcm
        chime_file = path / "chime.wav"
        chime_pcm = _load_clip(chime_file, trim_it=False) if chime_file.is_file() else None
        return cls(path, clips, chime_pcm)

    def __len__(self) -> int:
        return sum(len(c) for c in self.clips.values())

    def lookup(self, lang: Lang, key: str) -> list[tuple[str, bytes]] | None:
        """The recordings that say `key`: the clip itself, or the fewest longest clips that
        join to it; None if some part of it is not recorded."""
        memo_key = (lang, key)
        if memo_key not in self._memo:
            self._memo[memo_key] = self._join(lang, key)
        return self._memo[memo_key]

    def _join(self, lang: Lang, key: str) -> list[tuple[str, bytes]] | None:
        have = self.clips.get(lang, {})
        stem = _file_stem(lang, key)
        if stem in have:
            return [(f"pack:{lang}:{stem}", have[stem])]
        units = _units(lang, stem)
        glue = "" if lang == "zh" else " "
        longest = self._longest.get(lang, 0)
        found: list[tuple[str, bytes]] = []
        i = 0
        while i < len(units):
            for j in range(min(len(units), i + longest), i, -1):
                part = _file_stem(lang, glue.join(units[i:j]))
                if part in have:
                    found.append((f"pack:{lang}:{part}", have[part]))
                    i = j
                    break
            else:
                return None
        return found or None

    def missing(self, clips: Iterable[Clip]) -> list[Clip]:
        """The clips this pack cannot say (they would come from espeak-ng)."""
        return [c for c in clips if self.lookup(c.lang, c.key) is None]


def _units(lang: Lang, key: str) -> list[str]:
    """What a key is joined from: characters in Chinese, words in English."""
    if lang == "zh":
        return [ch for ch in key if not ch.isspace()]
    return key.split()


def _load_clip(file: Path, trim_it: bool = True) -> bytes | None:
    try:
        data = file.read_bytes()
    except OSError as exc:
        log.warning("voice pack: cannot read %s: %s", file, exc)
        return None
    try:
        pcm = read_pcm(data)
    except AudioError:
        converted = _convert(file)
        if converted is None:
            return None
        pcm = converted
    return trim(pcm) if trim_it else pcm


def _convert(file: Path) -> bytes | None:
    """Another rate, stereo, 24-bit, even MP3 if sox can read it: converted once, at load."""
    sox = shutil.which("sox")
    if sox is None:
        log.warning(
            "voice pack: %s is not 16-bit mono %d Hz WAV and sox is not installed; skipped",
            file,
            RATE,
        )
        return None
    argv = [
        sox,
        str(file),
        "-t",
        "wav",
        "-r",
        str(RATE),
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        "-",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            raise AudioError(done.stderr.decode("utf-8", "replace").strip())
        return read_pcm(done.stdout)
    except (OSError, subprocess.TimeoutExpired, AudioError) as exc:
        log.warning("voice pack: cannot convert %s: %s; skipped", file, exc)
        return None


# --- building a default pack ------------------------------------------------------------


def default_vocabulary() -> list[Clip]:
    """The clips of a default pack: what the default templates need for any ticket and
    counter, plus common words for reworded templates."""
    clips: list[Clip] = []
    clips += [Clip("zh", d, PINYIN[d]) for d in ZH_DIGITS + "十百"]
    clips += [Clip("zh", letter, letter) for letter in LETTERS]
    clips += [Clip("zh", word, " ".join(PINYIN[ch] for ch in word)) for word in _ZH_WORDS]
    # Digits, ten to nineteen, the tens, hundred and "and": every counter up to 999 joins.
    english = [*EN_DIGITS, *(en_number(n)[0] for n in [*range(10, 20), *range(20, 100, 10)])]
    english += ["hundred", "and"]
    clips += [Clip("en", word, word) for word in english]
    clips += [Clip("en", letter, letter) for letter in LETTERS]
    clips += [Clip("en", phrase, phrase) for phrase in _EN_WORDS]
    return clips


def build_pack(
    directory: Path,
    voices: dict[Lang, str],
    clips: Sequence[Clip],
    tts: Espeak | None = None,
    force: bool = False,
) -> int:
    """Write a pack of `clips` synthesized by espeak-ng into `directory`; return how many
    files were written (existing ones are kept unless `force`: they may be recordings)."""
    tts = tts or Espeak()
    wanted: dict[tuple[Lang, str], Clip] = {}
    for clip in clips:
        wanted.setdefault((clip.lang, _file_stem(clip.lang, clip.key)), clip)
    todo = [
        (lang, stem, clip)
        for (lang, stem), clip in wanted.items()
        if force or not (directory / lang / f"{stem}.wav").exists()
    ]
    pcms = tts.synthesize([(voices[clip.lang], clip.tts) for _, _, clip in todo])
    for (lang, stem, _), pcm in zip(todo, pcms, strict=True):
        (directory / lang).mkdir(parents=True, exist_ok=True)
        (directory / lang / f"{stem}.wav").write_bytes(wav_bytes(pcm))
    written = len(todo)
    if force or not (directory / "chime.wav").exists():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "chime.wav").write_bytes(wav_bytes(chime()))
        written += 1
    manifest = {
        "format": PACK_FORMAT,
        "made_by": "python -m broadcast.voicepack build",
        "engine": _espeak_version(tts.program),
        "voices": voices,
        "speed_wpm": tts.speed,
        "sample_rate": RATE,
        "clips": {f"{lang}/{stem}.wav": clip.tts for (lang, stem), clip in sorted(wanted.items())},
    }
    (directory / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return written


def _espeak_version(program: str) -> str:
    try:
        done = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return program
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else program


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broadcast.voicepack",
        description="Build, check and try voice packs for the hall's voice calls.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write a default pack synthesized with espeak-ng")
    build.add_argument("directory", type=Path)
    build.add_argument(
        "--config", type=Path, help="also the clips of this hall's templates and names"
    )
    build.add_argument("--zh-voice", help="espeak-ng voice for Mandarin (default cmn-latn-pinyin)")
    build.add_argument("--en-voice", help="espeak-ng voice for English (default en)")
    build.add_argument("--force", action="store_true", help="overwrite clips already there")
    check = sub.add_parser("check", help="list the clips a call would need but the pack lacks")
    check.add_argument("directory", type=Path)
    check.add_argument("--config", type=Path)
    say = sub.add_parser("say", help="write one announcement to a WAV file, to listen to")
    say.add_argument("number", help="ticket number, e.g. A012")
    say.add_argument("counter", type=int)
    say.add_argument("--config", type=Path)
    say.add_argument("--pack", type=Path, help="voice pack (default: the config's, else none)")
    say.add_argument("-o", "--output", type=Path, default=Path("announcement.wav"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from hall_daemon.config import ConfigError, HallConfig, load_config

    from .phrase import PhraseBuilder

    config: HallConfig | None = None
    if args.config is not None:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    voices: dict[Lang, str] = {"zh": "cmn-latn-pinyin", "en": "en"}
    if config is not None:
        voices = {"zh": config.voice.tts.zh_voice, "en": config.voice.tts.en_voice}
    if args.command == "build":
        voices["zh"] = args.zh_voice or voices["zh"]
        voices["en"] = args.en_voice or voices["en"]
        clips = default_vocabulary()
        if config is not None:
            clips += PhraseBuilder(config).vocabulary()
        try:
            written = build_pack(args.directory, voices, clips, force=args.force)
        except TtsError as exc:
            print(f"cannot build the voice pack: {exc}", file=sys.stderr)
            return 1
        print(f"voice pack {args.directory}: {written} files written")
        return 0
    if args.command == "check":
        if config is None:
            print("check needs --config (the hall whose calls to check)", file=sys.stderr)
            return 2
        pack = VoicePack.load(args.directory)
        lacking = pack.missing(PhraseBuilder(config).vocabulary())
        for clip in lacking:
            print(f"missing {clip.lang}/{_file_stem(clip.lang, clip.key)}.wav ({clip.tts})")
        print(f"{len(pack)} clips; {len(lacking)} needed clip(s) missing (said by espeak-ng)")
        return 1 if lacking else 0
    return _say(args.number, args.counter, config, args.pack, args.output, voices)


def _say(
    number: str,
    counter: int,
    config: object,
    pack_dir: Path | None,
    output: Path,
    voices: dict[Lang, str],
) -> int:
    from hall_daemon.config import HallConfig, parse_config

    from .phrase import PhraseBuilder
    from .render import Renderer
    from .tts import ClipCache

    if not isinstance(config, HallConfig):
        config = parse_config(_MINIMAL_CONFIG)
    if pack_dir is None and config.voice.voice_pack is not None:
        pack_dir = config.voice.voice_pack
    pack = VoicePack.load(pack_dir) if pack_dir is not None else None
    service = next((s.code for s in config.services if number.upper().startswith(s.prefix)), "")
    announcement = PhraseBuilder(config).announcement(
        "called", {"number": number.upper(), "counter": counter, "service": service}
    )
    renderer = Renderer(voices, ClipCache(None), pack=pack)
    try:
        pcm = renderer.render(announcement)
    except TtsError as exc:
        print(f"cannot synthesize: {exc}", file=sys.stderr)
        return 1
    output.write_bytes(wav_bytes(pcm))
    for sentence in announcement.sentences:
        print(" | ".join(clip.tts for clip in sentence))
    print(f"{output}: {len(pcm) / 2 / RATE:.2f} s")
    return 0


_MINIMAL_CONFIG = """
hall: {id: try, name: try}
services: [{code: A, name: 企业开办, prefix: A}]
counters: [{id: 1, name: 1号窗口, services: [A]}]
voice: {output: folder, folder: /tmp}
mqtt: {enabled: false}
"""


if __name__ == "__main__":
    sys.exit(main())

"""config.yaml: the hall's services, counters, devices, screens, voice, MQTT and web.

`load_config` checks the file in two passes, pydantic's (shapes, types, ranges) and then
the cross-references between sections (a counter naming a service, a keypad naming a
counter), and reports every problem as ``config.yaml:42 counters[3].services[1]: unknown
service 'X'``: the people who edit this file are a hall's IT staff, who should be able to
fix it from the message alone. `HallConfig.to_spec()` hands the engine the part it needs.

Secrets never live in the file: the MQTT password comes from a file or an environment
variable it names, and a database URL may not carry a password.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import string
import types
import unicodedata
from collections.abc import Hashable, Iterable, Iterator
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, Union, get_args, get_origin
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import ErrorDetails
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hall_daemon.model import CounterSpec, HallSpec, OpeningWindow, PolicySpec, ServiceSpec
from hall_daemon.yamlsource import LineMap, YamlSourceError, parse_yaml

Loc: TypeAlias = tuple[str | int, ...]
"""Where a value sits in the file: ("counters", 3, "services", 1)."""

_CONFIG_DIR = "config_dir"  # validation context key: relative paths are resolved against it

# The example hall's file is 15 KB; PyYAML reads 30 to 250 KB a second, so this bounds the
# time and memory a start (and check-config) can spend on a runaway file.
MAX_FILE_BYTES = 128 * 1024
MAX_PROBLEMS = 20  # reported; a file with more has one mistake copied many times

_WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


class ConfigError(Exception):
    """config.yaml cannot be used. str() is one ``file:line location: message`` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- value types -------------------------------------------------------------------------


def _matching(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{what} (got {value!r})")
        return value

    return AfterValidator(check)


def _parse_clock(value: object) -> object:
    """ "08:30" -> 08:30; "24:00" -> the day's last instant, so a window can end at midnight."""
    if isinstance(value, str):
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if match:
            hour, minute = int(match[1]), int(match[2])
            if (hour, minute) == (24, 0):
                return time.max
            if hour < 24 and minute < 60:
                return time(hour, minute)
    if isinstance(value, time):
        return value
    raise ValueError(f'expected a time of day such as "08:30" (00:00 to 24:00), got {value!r}')


def _hhmm(value: time) -> str:
    return "24:00" if value == time.max else value.strftime("%H:%M")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    # A relative path means "next to config.yaml", not "wherever the daemon was started".
    value = value.expanduser()
    base = (info.context or {}).get(_CONFIG_DIR)
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


def _template(fields: frozenset[str], required: str) -> AfterValidator:
    """A str.format template that may use only `fields` and must use `required`.

    Checked here so a typo such as {numbr} stops the daemon at start-up, not at the first
    call of the day.
    """

    def check(value: str) -> str:
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        unknown = sorted(used - fields)
        if unknown:
            allowed = ", ".join("{" + f + "}" for f in sorted(fields))
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; allowed: {allowed}")
        if required not in used:
            raise ValueError(f"the template must contain {{{required}}}")
        return value

    return AfterValidator(check)


def _not_a_shell_string(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(
            "give the command as a list of arguments, e.g. [aplay, -q]; "
            "it is run directly, never through a shell"
        )
    return value


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"unknown time zone '{value}' (use an IANA name such as Asia/Shanghai)"
        ) from None
    return value


def _database_url(value: str) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"not a SQLAlchemy database URL: {value!r}") from None
    if url.password:
        raise ValueError(
            "the URL contains a password; keep it out of config.yaml "
            "(for PostgreSQL use ~/.pgpass or the PGPASSWORD environment variable)"
        )
    return value


def _mqtt_base(value: str) -> str:
    if not value or value.startswith(("/", "$")) or value.endswith("/"):
        raise ValueError(f"not a usable topic prefix: {value!r} (e.g. hall/my-hall)")
    if "+" in value or "#" in value:
        raise ValueError("a topic prefix cannot contain the wildcards + or #")
    return value


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Names go to LED screens (60 bytes a line), receipts and the voice: a page of text is a mistake.
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
Notice = Annotated[str, Field(max_length=1000)]
Slug = Annotated[str, _matching(r"[a-z0-9-]{1,64}", "use lowercase letters, digits and -")]
ClockTime = Annotated[time, BeforeValidator(_parse_clock)]
LocalPath = Annotated[Path, AfterValidator(_resolve_path)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
EnvName = Annotated[str, _matching(r"[A-Za-z_][A-Za-z0-9_]*", "not an environment variable name")]
Argv = Annotated[tuple[str, ...], BeforeValidator(_not_a_shell_string)]
Port = Annotated[int, Field(ge=1, le=65535)]
MAX_BUS_DEVICES = 247  # the addresses of a bus68 bus
Baud = Annotated[int, Field(gt=0, le=4_000_000)]  # beyond what any UART here runs

VOICE_FIELDS = frozenset({"number", "counter", "counter_name", "service", "service_name"})
"""What a voice template may mention: {number} A012, {counter} 3, {counter_name} 3号窗口,
{service} A, {service_name} 企业开办."""


# --- the sections --------------------------------------------------------------------------


class _Model(BaseModel):
    # frozen: the running daemon shares one config between tasks; nobody may change it.
    # extra="forbid": a misspelt key must be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class HallInfo(_Model):
    id: Slug
    name: Text
    name_en: Annotated[str, Field(max_length=200)] = ""
    timezone: Annotated[str, AfterValidator(_known_timezone)] = "Asia/Shanghai"
    day_reset_hour: int = Field(default=4, ge=0, le=23)
    notice: Notice = ""


class StorageConfig(_Model):
    url: Annotated[str, AfterValidator(_database_url)] | None = None
    snapshot_every: int = Field(default=1000, ge=1)
    outbox_retention_days: int = Field(default=7, ge=1, le=3650)


class QueueConfig(_Model):
    policy: Literal["weighted-wait", "fifo"] = "weighted-wait"
    priority_streak_limit: int = Field(default=3, ge=1)
    preference_decay: float = Field(default=0.5, gt=0, le=1)
    no_show_after_recalls: int = Field(default=3, ge=0)
    checkin_early_minutes: int = Field(default=30, ge=0, le=24 * 60)


class OpeningHours(_Model):
    open: ClockTime
    close: ClockTime
    days: tuple[Weekday, ...] | None = None  # None: every day

    def to_window(self) -> OpeningWindow:
        days = self.days if self.days is not None else tuple(_WEEKDAYS)
        return OpeningWindow(self.open, self.close, frozenset(_WEEKDAYS[d] for d in days))


class ServiceConfig(_Model):
    code: Annotated[str, _matching(r"[A-Za-z0-9_-]{1,8}", "use 1 to 8 letters, digits, _ or -")]
    name: Text
    name_en: Annotated[str, Field(max_length=200)] = ""
    prefix: Annotated[str, _matching(r"[A-Z]{1,2}", "use 1 or 2 capital letters A-Z")]
    number: int | None = Field(default=None, ge=1, le=99)  # None: its position in the list, from 1
    daily_limit: int = Field(default=999, ge=1, le=999)
    mean_service_minutes: float = Field(default=5, gt=0, le=8 * 60)
    hours: tuple[OpeningHours, ...] = ()  # empty: always open


class CounterConfig(_Model):
    id: int = Field(ge=1, le=999)
    name: Text
    name_en: Annotated[str, Field(max_length=200)] = ""
    services: tuple[str, ...]  # in order of preference


class DeviceConfig(_Model):
    kind: Literal["keypad", "evaluator", "screen", "dispenser"]
    address: int | None = Field(default=None, ge=1, le=247)  # bus68 only
    counter: int | None = None  # keypads, evaluators and window screens
    id: Annotated[str, _matching(r"\S{1,32}", "use up to 32 characters without spaces")] | None = (
        None  # line protocol: the id the device says in HELLO
    )


class PortConfig(_Model):
    name: Annotated[
        str, _matching(r"[A-Za-z0-9_.-]{1,32}", "use up to 32 letters, digits, _, . or -")
    ]
    url: Text
    protocol: Literal["bus68", "line"]
    baud: Baud = 9600
    devices: Annotated[tuple[DeviceConfig, ...], Field(max_length=MAX_BUS_DEVICES)] = ()


_PRINTER_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # connection: (required fields, further fields that belong to it)
    "serial": (("url",), ("baud",)),
    "usb": (("vendor_id", "product_id"), ()),
    "network": (("host",), ("port",)),
    "file": (("path",), ()),
}


class PrinterConfig(_Model):
    connection: Literal["serial", "usb", "network", "file"]
    url: str | None = None
    baud: Baud = 9600
    vendor_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    product_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    host: str | None = None
    port: Port = 9100
    path: LocalPath | None = None
    profile: Text = "default"
    paper_mm: Literal[58, 80] = 80
    chinese: Literal["native", "image"] = "native"
    qr_url: Annotated[str, _template(frozenset({"token"}), "token")] | None = None
    notice: Notice = ""


class ScreenConfig(_Model):
    id: Slug
    title: Annotated[str, Field(max_length=200)] = ""
    orientation: Literal["landscape", "portrait"] = "landscape"
    language: Literal["zh", "en", "both"] = "both"
    services: tuple[str, ...] | None = None  # None: all
    counters: tuple[int, ...] | None = None  # None: all
    recent_calls: int = Field(default=6, ge=0, le=20)


class TtsConfig(_Model):
    engine: Literal["espeak-ng"] = "espeak-ng"
    zh_voice: Text = "cmn-latn-pinyin"
    en_voice: Text = "en"


class VoiceTemplates(_Model):
    zh: Annotated[str, _template(VOICE_FIELDS, "number")] = "请{number}号到{counter}号窗口办理"
    en: Annotated[str, _template(VOICE_FIELDS, "number")] = (
        "Number {number}, please go to counter {counter}"
    )


class TimeRange(_Model):
    """From `start` to `end` local time; may run past midnight (22:00 to 07:00)."""

    start: ClockTime = Field(alias="from")
    end: ClockTime = Field(alias="to")


class VolumeWindow(TimeRange):
    percent: int = Field(ge=0, le=100)


class VoiceConfig(_Model):
    enabled: bool = True
    output: Literal["player", "folder"] = "player"
    player: Argv = ("aplay", "-q")
    folder: LocalPath | None = None
    voice_pack: LocalPath | None = None
    tts: TtsConfig = Field(default_factory=TtsConfig)
    repeat: int = Field(default=2, ge=1, le=5)
    max_delay_s: float = Field(default=60, gt=0)
    templates: VoiceTemplates = Field(default_factory=VoiceTemplates)
    quiet_hours: tuple[TimeRange, ...] = ()
    volume: tuple[VolumeWindow, ...] = ()


class TlsConfig(_Model):
    ca: LocalPath | None = None  # None: the system's CA certificates
    cert: LocalPath | None = None
    key: LocalPath | None = None


class MqttConfig(_Model):
    enabled: bool = True
    host: str | None = None
    port: Port = 1883
    base: Annotated[str, AfterValidator(_mqtt_base)] | None = None  # None: hall/<hall.id>
    client_id: str | None = Field(default=None, min_length=1, max_length=64)
    username: str | None = None
    password_file: LocalPath | None = None
    password_env: EnvName | None = None
    tls: TlsConfig | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    protocol: Literal[5, 311] = 5


class WebLimits(_Model):
    """What one client, and all of them together, may hold of the web server."""

    # Also kept 256 under the process's open-file limit, for the database, ports and voice.
    connections: int = Field(default=768, ge=16, le=1_000_000)
    connections_per_client: int = Field(default=256, ge=1)
    head_timeout_s: float = Field(default=5.0, gt=0, le=300)
    idle_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    # Screen and kiosk WebSockets from one address; an applicant page's are capped per ticket.
    feeds_per_client: int = Field(default=16, ge=1)
    feeds_per_ticket: int = Field(default=4, ge=1)


class WebConfig(_Model):
    host: Text = "127.0.0.1"
    port: Port = 8080
    public_url: Annotated[str, AfterValidator(_http_url)] | None = None
    # A file holding the token Prometheus sends as `Authorization: Bearer` for /metrics.
    metrics_token_file: LocalPath | None = None
    limits: WebLimits = Field(default_factory=WebLimits)

    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def _ip_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError("not an IP address or network (192.168.1.21, 192.168.1.0/28)") from None


KioskId = Annotated[str, _matching(r"[A-Za-z0-9_.-]{1,32}", "1-32 of A-Z a-z 0-9 _ . -")]
KIOSK_KEY_MIN = 16


class KioskConfig(_Model):
    """A machine allowed to issue tickets from /kiosk: known by its address, or by the key
    its browser sends (opened once as /kiosk?key=<key>), read from a file."""

    id: KioskId
    address: Annotated[str, AfterValidator(_ip_network)] | None = None
    key_file: LocalPath | None = None

    def read_key(self) -> str:
        assert self.key_file is not None
        return self.key_file.read_text(encoding="utf-8").strip()


# Only this PC is a kiosk unless the hall lists its kiosks.
THIS_PC_KIOSKS = (
    KioskConfig(id="this-pc", address="127.0.0.1"),
    KioskConfig(id="this-pc-v6", address="::1"),
)


class RateLimit(_Model):
    """`burst` at once, then one more every `every_s` seconds."""

    burst: int = Field(ge=1, le=100_000)
    every_s: float = Field(gt=0, le=86_400)


class KioskLimits(_Model):
    # A kiosk serves one applicant at a time, a few seconds each; a script does not.
    tickets: RateLimit = RateLimit(burst=10, every_s=5)
    # Refused check-in codes (unknown, too early, ...), per kiosk and for the whole hall.
    wrong_codes: RateLimit = RateLimit(burst=5, every_s=900)
    wrong_codes_hall: RateLimit = RateLimit(burst=10, every_s=600)


class HallConfig(_Model):
    hall: HallInfo
    state_dir: LocalPath = Path("/var/lib/hall-daemon")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    # Service numbers are 1..99 and counter ids 1..999, each unique: no hall can have more.
    services: Annotated[tuple[ServiceConfig, ...], Field(max_length=99)]
    counters: Annotated[tuple[CounterConfig, ...], Field(max_length=999)]
    ports: Annotated[tuple[PortConfig, ...], Field(max_length=64)] = ()
    printer: PrinterConfig | None = None
    screens: Annotated[tuple[ScreenConfig, ...], Field(max_length=200)] = ()
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    kiosks: tuple[KioskConfig, ...] = THIS_PC_KIOSKS
    kiosk_limits: KioskLimits = Field(default_factory=KioskLimits)

    # Not part of the file: where it came from, so later messages can point into it.
    _source: Path | None = PrivateAttr(default=None)
    _lines: LineMap | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    def where(self, *loc: str | int) -> str:
        """``config.yaml:57 ports[1].url``, for messages about a setting found wanting later
        (a port that will not open, a password file that cannot be read)."""
        location = format_loc(loc)
        if self._source is None:
            return location
        line = self._lines.line_of(loc) if self._lines is not None else 1
        return f"{self._source}:{line} {location}".rstrip()

    def service_numbers(self) -> dict[str, int]:
        """Service code -> the number a keypad's TRANSFER key takes for it."""
        return {s.code: s.number or i for i, s in enumerate(self.services, start=1)}

    def database_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{(self.state_dir / 'hall.db').absolute().as_posix()}"

    def mqtt_base(self) -> str:
        return self.mqtt.base or f"hall/{self.hall.id}"

    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"hall-daemon-{self.hall.id}"

    def mqtt_password(self) -> str | None:
        """Read the password now (it may be rotated between restarts); ConfigError if named
        but unavailable."""
        if self.mqtt.password_file is not None:
            try:
                return self.mqtt.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    [f"{self.where('mqtt', 'password_file')}: cannot read: {exc.strerror}"]
                ) from exc
        if self.mqtt.password_env is not None:
            password = os.environ.get(self.mqtt.password_env)
            if password is None:
                raise ConfigError(
                    [
                        f"{self.where('mqtt', 'password_env')}: environment variable "
                        f"{self.mqtt.password_env} is not set"
                    ]
                )
            return password
        return None

    def receipt_qr_url(self) -> str:
        """The URL template, with {token}, that a receipt's QR code carries."""
        if self.printer is not None and self.printer.qr_url:
            return self.printer.qr_url
        return self.web.base_url() + "/t/{token}"

    def to_spec(self) -> HallSpec:
        numbers = self.service_numbers()
        services = tuple(
            ServiceSpec(
                code=s.code,
                name=s.name,
                prefix=s.prefix,
                number=numbers[s.code],
                name_en=s.name_en,
                hours=tuple(h.to_window() for h in s.hours),
                daily_limit=s.daily_limit,
                mean_service_s=s.mean_service_minutes * 60.0,
            )
            for s in self.services
        )
        counters = tuple(
            CounterSpec(id=c.id, name=c.name, services=c.services, name_en=c.name_en)
            for c in self.counters
        )
        policy = PolicySpec(
            name=self.queue.policy,
            priority_streak_limit=self.queue.priority_streak_limit,
            preference_decay=self.queue.preference_decay,
            no_show_after_recalls=self.queue.no_show_after_recalls,
            checkin_early_s=self.queue.checkin_early_minutes * 60,
        )
        return HallSpec(
            services=services,
            counters=counters,
            timezone=self.hall.timezone,
            day_reset_hour=self.hall.day_reset_hour,
            policy=policy,
        )

    def reference_problems(self) -> list[tuple[Loc, str]]:
        """What pydantic cannot see: names and numbers that must agree across sections."""
        return [
            *_check_services(self),
            *_check_counters(self),
            *_check_ports(self),
            *_check_printer(self),
            *_check_screens(self),
            *_check_voice(self),
            *_check_mqtt(self),
            *_check_kiosks(self),
        ]


# --- loading -------------------------------------------------------------------------------


def load_config(path: str | Path) -> HallConfig:
    """Read and check config.yaml; raise ConfigError listing every problem found."""
    name = _printable(str(path))
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)  # a FIFO or /dev/zero must not hang us either
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError([f"{name}:1: cannot read the file: {reason}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            [f"{name}:1: the file is larger than {MAX_FILE_BYTES // 1024} KiB; is it config.yaml?"]
        )
    try:
        text = raw.decode("utf-8-sig")  # -sig: Windows editors like to start with a BOM
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{name}:{line}: not UTF-8 text; save the file as UTF-8"]) from None
    return parse_config(text, source=Path(path), base_dir=Path(path).absolute().parent)


def parse_config(
    text: str, source: str | Path = "config.yaml", base_dir: Path | None = None
) -> HallConfig:
    """Check config.yaml's text; messages name `source`, relative paths start at `base_dir`."""
    name = _printable(str(source))
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError([f"{name}:1: the text is longer than {MAX_FILE_BYTES // 1024} KiB"])
    try:
        document = parse_yaml(text)
    except YamlSourceError as exc:
        raise ConfigError(
            _capped([_problem(name, p.line, _as_loc(p.path), p.message) for p in exc.problems])
        ) from None
    data, lines = document.data, document.lines
    if data is None:
        raise ConfigError([f"{name}:1: the file is empty"])
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{name}:{lines.line_of(())}: expected sections such as hall:, services:, counters:"]
        )
    controls = list(_control_characters(data, ()))
    if controls:
        raise ConfigError(_report(name, lines, controls))

    try:
        config = HallConfig.model_validate(data, context={_CONFIG_DIR: base_dir})
    except ValidationError as exc:
        found = [_pydantic_problem(error, data) for error in exc.errors()]
        raise ConfigError(_report(name, lines, found)) from None
    config._source = Path(source)
    config._lines = lines

    found = config.reference_problems()
    if found:
        raise ConfigError(_report(name, lines, found))
    return config


def format_loc(loc: Iterable[object]) -> str:
    """("counters", 3, "services", 1) -> counters[3].services[1]"""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem(name: str, line: int, loc: Loc, message: str) -> str:
    location = format_loc(loc)
    text = f"{name}:{line} {location}: {message}" if location else f"{name}:{line}: {message}"
    return _printable(text)


def _printable(text: str) -> str:
    """One line a terminal shows as it is: a value quoted from the file may hold anything."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _report(name: str, lines: LineMap, found: list[tuple[Loc, str]]) -> list[str]:
    # In file order: the reader fixes the file from top to bottom.
    ordered = sorted(enumerate(found), key=lambda item: (lines.line_of(item[1][0]), item[0]))
    return _capped(
        [_problem(name, lines.line_of(loc), loc, message) for _, (loc, message) in ordered]
    )


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], f"... and {more} more problems"]


# Control characters (ESC, NUL, line breaks) would reach the ESC/POS printer, the LED screens'
# frames and espeak as commands; format characters (bidi overrides, zero-width) would make a
# name read differently from what it is. No setting needs either.
_UNWANTED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _control_characters(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        bad = next((ch for ch in value if unicodedata.category(ch) in _UNWANTED), None)
        if bad in ("\n", "\r"):
            yield loc, "a line break is not allowed; write the value on one line"
        elif bad is not None:
            yield loc, f"control character {_char_name(bad)} is not allowed"
    elif isinstance(value, dict):
        for key, item in value.items():
            here = (*loc, key if isinstance(key, int | str) else str(key))
            yield from _control_characters(key, here)
            yield from _control_characters(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _control_characters(item, (*loc, index))


def _char_name(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}".rstrip() if name else f"U+{ord(ch):04X}"


def _as_loc(path: tuple[object, ...]) -> Loc:
    return tuple(p if isinstance(p, int | str) else str(p) for p in path)


# --- pydantic's errors, in the file's words ------------------------------------------------


def _pydantic_problem(error: ErrorDetails, data: Any) -> tuple[Loc, str]:
    loc = _data_loc(error["loc"], data)
    kind = error["type"]
    if kind == "missing":
        return loc, "required field is missing"
    if kind == "extra_forbidden":
        return loc, _unknown_field(loc)
    message = _PLAIN_MESSAGES.get(kind) or error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    given = error.get("input")
    if kind != "value_error" and isinstance(given, str | int | float | bool):
        message += f" (got {given!r})"
    return loc, message


_PLAIN_MESSAGES = {
    # pydantic's own words name Python types and classes
    "model_type": "expected a mapping of key: value lines",
    "model_attributes_type": "expected a mapping of key: value lines",
    "dict_type": "expected a mapping of key: value lines",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}


def _data_loc(loc: tuple[int | str, ...], data: Any) -> Loc:
    """Keep the parts of pydantic's loc that are keys and indexes in the data.

    pydantic also puts validator and union-member names in a loc; those mean nothing to
    someone reading config.yaml.
    """
    kept: list[str | int] = []
    cursor = data
    for part in loc:
        if isinstance(cursor, dict) and (isinstance(part, str) or part in cursor):
            kept.append(part)
            cursor = cursor.get(part)
        elif isinstance(cursor, list) and isinstance(part, int):
            kept.append(part)
            cursor = cursor[part] if 0 <= part < len(cursor) else None
    return tuple(kept)


def _unknown_field(loc: Loc) -> str:
    if loc == ("mqtt", "password"):
        return (
            "a password does not belong in config.yaml; name a file holding it "
            "(password_file, readable only by the daemon) or an environment variable "
            "(password_env)"
        )
    model = _model_at(loc[:-1])
    if model is None or not loc:
        return "unknown field"
    allowed = [field.alias or name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f"unknown field; did you mean '{close[0]}'?"
    return f"unknown field; expected one of: {', '.join(allowed)}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose fields are expected at `loc`, following the annotations."""
    current: Any = HallConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, str):
            if not _is_model(current):
                return None
            fields = current.model_fields.items()
            field = next((f for n, f in fields if (f.alias or n) == part), None)
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (tuple, list):
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if _is_model(current) else None


def _unwrap(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return (
        get_origin(annotation) is None
        and isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
    )


# --- cross-references ----------------------------------------------------------------------

Problems = Iterator[tuple[Loc, str]]
T = TypeVar("T", bound=Hashable)


def _first_seen(items: Iterable[tuple[T, Loc]]) -> Iterator[tuple[T, Loc, Loc]]:
    """Yield (value, where, where it was first given) for each repeat of a value."""
    seen: dict[T, Loc] = {}
    for value, loc in items:
        if value in seen:
            yield value, loc, seen[value]
        else:
            seen[value] = loc


def _check_services(config: HallConfig) -> Problems:
    services = config.services
    if not services:
        yield ("services",), "configure at least one service"
    for code, loc, first in _first_seen((s.code, ("services", i)) for i, s in enumerate(services)):
        yield (*loc, "code"), f"service code '{code}' is already used by {format_loc(first)}"
    for prefix, loc, first in _first_seen(
        (s.prefix, ("services", i)) for i, s in enumerate(services)
    ):
        yield (*loc, "prefix"), f"prefix '{prefix}' is already used by {format_loc(first)}"

    def number_of(i: int, s: ServiceConfig) -> tuple[int, Loc]:
        if s.number is not None:
            return s.number, ("services", i, "number")
        return i + 1, ("services", i)

    for i, s in enumerate(services):
        if s.number is None and i + 1 > 99:
            yield ("services", i), "give this service a number (1..99); its position is over 99"
    for number, loc, first in _first_seen(number_of(i, s) for i, s in enumerate(services)):
        where = format_loc(first[:2])
        if len(loc) == 2:
            yield (
                loc,
                (
                    f"its default number {number} (its position) is already used by {where}; "
                    "give it a number"
                ),
            )
        else:
            yield loc, f"number {number} is already used by {where}"

    for i, s in enumerate(services):
        for j, hours in enumerate(s.hours):
            if hours.open >= hours.close:
                yield (
                    ("services", i, "hours", j),
                    (f"open {_hhmm(hours.open)} must be before close {_hhmm(hours.close)}"),
                )
            if hours.days is not None and not hours.days:
                yield ("services", i, "hours", j, "days"), "leave days out to mean every day"


def _check_counters(config: HallConfig) -> Problems:
    known = {s.code for s in config.services}
    if not config.counters:
        yield ("counters",), "configure at least one counter"
    for cid, loc, first in _first_seen(
        (c.id, ("counters", i)) for i, c in enumerate(config.counters)
    ):
        yield (*loc, "id"), f"counter id {cid} is already used by {format_loc(first)}"
    for i, counter in enumerate(config.counters):
        if not counter.services:
            yield ("counters", i, "services"), "a counter must offer at least one service"
        yield from _check_codes(counter.services, known, ("counters", i, "services"))


def _check_codes(codes: Iterable[str], known: set[str], loc: Loc) -> Problems:
    seen: dict[str, int] = {}
    for j, code in enumerate(codes):
        if code not in known:
            yield (*loc, j), f"unknown service '{code}'"
        elif code in seen:
            yield (
                (*loc, j),
                f"service '{code}' is listed twice (also at {format_loc(loc)}[{seen[code]}])",
            )
        else:
            seen[code] = j


def _check_ports(config: HallConfig) -> Problems:
    counters = {c.id for c in config.counters}
    ports = config.ports
    for name, loc, first in _first_seen((p.name, ("ports", i)) for i, p in enumerate(ports)):
        yield (*loc, "name"), f"port name '{name}' is already used by {format_loc(first)}"
    for url, loc, first in _first_seen((p.url, ("ports", i)) for i, p in enumerate(ports)):
        yield (*loc, "url"), f"{url} is already used by {format_loc(first)}"
    for i, port in enumerate(ports):
        yield from _check_devices(port, ("ports", i, "devices"), counters)


def _check_devices(port: PortConfig, loc: Loc, counters: set[int]) -> Problems:
    for j, device in enumerate(port.devices):
        here = (*loc, j)
        if port.protocol == "bus68":
            if device.address is None:
                yield here, "a bus68 device needs its address (1..247, as set on its DIP switches)"
            if device.kind == "dispenser":
                yield (*here, "kind"), "dispensers speak the line protocol, not bus68"
        elif device.address is not None:
            yield (*here, "address"), "address applies to bus68 devices only"
        if device.kind == "dispenser":
            if device.counter is not None:
                yield (*here, "counter"), "a dispenser serves the whole hall, not one counter"
        elif device.counter is None:
            yield here, f"{device.kind} devices need the counter they belong to"
        elif device.counter not in counters:
            yield (*here, "counter"), f"unknown counter {device.counter}"
    addresses = (
        (d.address, (*loc, j)) for j, d in enumerate(port.devices) if d.address is not None
    )
    for address, where, first in _first_seen(addresses):
        yield (*where, "address"), f"address {address} is already used by {format_loc(first)}"
    ids = ((d.id, (*loc, j)) for j, d in enumerate(port.devices) if d.id is not None)
    for device_id, where, first in _first_seen(ids):
        yield (*where, "id"), f"device id '{device_id}' is already used by {format_loc(first)}"


def _check_printer(config: HallConfig) -> Problems:
    printer = config.printer
    if printer is None:
        return
    required, optional = _PRINTER_FIELDS[printer.connection]
    for name in required:
        if getattr(printer, name) is None:
            yield ("printer",), f"connection: {printer.connection} needs {name}"
    for connection, (other_required, other_optional) in _PRINTER_FIELDS.items():
        if connection == printer.connection:
            continue
        for name in (*other_required, *other_optional):
            if name in printer.model_fields_set and name not in (*required, *optional):
                yield (
                    ("printer", name),
                    (f"{name} is for a {connection} printer, not a {printer.connection} one"),
                )


def _check_screens(config: HallConfig) -> Problems:
    known = {s.code for s in config.services}
    counters = {c.id for c in config.counters}
    for sid, loc, first in _first_seen(
        (s.id, ("screens", i)) for i, s in enumerate(config.screens)
    ):
        yield (*loc, "id"), f"screen id '{sid}' is already used by {format_loc(first)}"
    for i, screen in enumerate(config.screens):
        if screen.services is not None:
            yield from _check_codes(screen.services, known, ("screens", i, "services"))
        for j, cid in enumerate(screen.counters or ()):
            if cid not in counters:
                yield ("screens", i, "counters", j), f"unknown counter {cid}"


def _check_voice(config: HallConfig) -> Problems:
    voice = config.voice
    if voice.enabled and voice.output == "folder" and voice.folder is None:
        yield ("voice",), "output: folder needs folder (where to write the WAV files)"
    if voice.enabled and voice.output == "player" and not voice.player:
        yield ("voice", "player"), "name the program that plays a WAV file, e.g. [aplay, -q]"
    for section, windows in (("quiet_hours", voice.quiet_hours), ("volume", voice.volume)):
        for j, window in enumerate(windows):
            if window.start == window.end:
                yield ("voice", section, j), "from and to are the same time"


def _check_mqtt(config: HallConfig) -> Problems:
    mqtt = config.mqtt
    if mqtt.enabled and not mqtt.host:
        yield ("mqtt", "host"), "required while mqtt is enabled (or set enabled: false)"
    if mqtt.password_file is not None and mqtt.password_env is not None:
        yield ("mqtt", "password_env"), "give password_file or password_env, not both"
    if mqtt.tls is not None and (mqtt.tls.cert is None) != (mqtt.tls.key is None):
        yield ("mqtt", "tls"), "cert and key go together"


def _check_kiosks(config: HallConfig) -> Problems:
    ids = ((k.id, ("kiosks", i)) for i, k in enumerate(config.kiosks))
    for kiosk_id, loc, first in _first_seen(ids):
        yield (*loc, "id"), f"kiosk {kiosk_id!r} is already listed at {format_loc(first)}"
    for i, k in enumerate(config.kiosks):
        if (k.address is None) == (k.key_file is None):
            yield ("kiosks", i), "give address or key_file (one of them)"
        elif k.key_file is not None:
            yield from ((("kiosks", i, "key_file"), p) for p in _key_file_problems(k))


def _key_file_problems(kiosk: KioskConfig) -> Iterator[str]:
    assert kiosk.key_file is not None
    # Its permissions are judged with the other secret files (filemodes.secret_file_problems).
    try:
        key = kiosk.read_key()
    except OSError as exc:
        yield f"cannot read {kiosk.key_file}: {exc.strerror or exc}"
        return
    except UnicodeDecodeError:
        yield f"{kiosk.key_file} is not UTF-8 text"
        return
    if len(key) < KIOSK_KEY_MIN:
        yield f"the key in {kiosk.key_file} is shorter than {KIOSK_KEY_MIN} characters"

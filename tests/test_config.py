"""config.yaml: the example loads, and every kind of mistake names the right file line."""

from __future__ import annotations

import re
from datetime import datetime, time
from pathlib import Path

import pytest

from hall_daemon.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.yaml"

# A small valid hall. Line numbers in the tests below count from here: line 1 is "hall:".
MINIMAL = """\
hall:
  id: test-hall
  name: 测试大厅
services:
  - {code: A, name: 企业开办, prefix: A}
  - code: B
    name: 不动产登记
    prefix: B
counters:
  - {id: 1, name: 1号窗口, services: [A]}
  - id: 2
    name: 2号窗口
    services: [B, A]
mqtt:
  host: 127.0.0.1
"""


def problems_in(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Load `text` as ./config.yaml (so messages read as a hall's IT staff see them)."""
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("config.yaml")
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


@pytest.mark.unit
def test_example_config_loads_into_a_spec() -> None:
    config = load_config(EXAMPLE)
    spec = config.to_spec()

    assert [s.code for s in spec.services] == ["A", "B", "C"]
    assert [s.number for s in spec.services] == [1, 2, 3]
    assert [c.id for c in spec.counters] == [1, 2, 3, 4, 5, 6]
    assert spec.counters[5].services == ("C", "A", "B")
    assert spec.timezone == "Asia/Shanghai"
    assert all(not s.hours for s in spec.services)  # the demo must work at any hour
    assert spec.policy.name == "weighted-wait"
    assert spec.policy.checkin_early_s == 1800

    bus = next(p for p in config.ports if p.protocol == "bus68")
    assert bus.url == "socket://127.0.0.1:7002"
    assert sorted(d.address for d in bus.devices if d.kind == "evaluator") == list(range(33, 39))
    assert sorted(d.address for d in bus.devices if d.kind == "screen") == list(range(65, 71))
    # Relative paths are next to config.yaml, wherever the daemon was started.
    assert config.state_dir == EXAMPLE.parent / "state"
    assert config.database_url() == f"sqlite:///{EXAMPLE.parent}/state/hall.db"
    assert config.mqtt_base() == "hall/demo-hall"
    assert config.source == EXAMPLE


@pytest.mark.unit
def test_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    (tmp_path / "hall.yaml").write_text(MINIMAL, encoding="utf-8")
    config = load_config(tmp_path / "hall.yaml")

    assert config.state_dir == Path("/var/lib/hall-daemon")
    assert config.database_url() == "sqlite:////var/lib/hall-daemon/hall.db"
    assert config.mqtt_base() == "hall/test-hall"
    assert config.mqtt_client_id() == "hall-daemon-test-hall"
    assert config.receipt_qr_url() == "http://127.0.0.1:8080/t/{token}"
    assert config.mqtt_password() is None
    spec = config.to_spec()
    assert spec.day_reset_hour == 4
    assert spec.services[1].mean_service_s == 300.0
    assert spec.services[1].daily_limit == 999
    assert (
        config.where("counters", 1, "services", 0)
        == f"{tmp_path / 'hall.yaml'}:13 counters[1].services[0]"
    )


@pytest.mark.unit
def test_unknown_service_in_a_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace("services: [B, A]", "services: [B, X]")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:13 counters[1].services[1]: unknown service 'X'"
    ]


@pytest.mark.unit
def test_unknown_top_level_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL + "servics: []\nlanguage: zh\n"
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:16 servics: unknown field; did you mean 'services'?",
        "config.yaml:17 language: unknown field; expected one of: hall, state_dir, storage, "
        "queue, services, counters, ports, printer, screens, voice, mqtt, web, kiosks, "
        "kiosk_limits",
    ]


@pytest.mark.unit
def test_wrong_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL + "  port: abc\n"
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:16 mqtt.port: input should be a valid integer, "
        "unable to parse string as an integer (got 'abc')"
    ]


@pytest.mark.unit
def test_missing_field_points_at_the_mapping_that_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = MINIMAL.replace("    name: 2号窗口\n", "")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:11 counters[1].name: required field is missing"
    ]
    no_hall = MINIMAL.replace("hall:\n  id: test-hall\n  name: 测试大厅\n", "")
    assert problems_in(no_hall, tmp_path, monkeypatch) == [
        "config.yaml:1 hall: required field is missing"
    ]


@pytest.mark.unit
def test_duplicate_counter_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace("  - id: 2\n", "  - id: 1\n")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:11 counters[1].id: counter id 1 is already used by counters[0]"
    ]


@pytest.mark.unit
def test_duplicate_yaml_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace("    name: 2号窗口\n", "    name: 2号窗口\n    name: 3号窗口\n")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:13 counters[1].name: duplicate key 'name' (first given on line 12)"
    ]


@pytest.mark.unit
def test_yaml_syntax_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace("services: [B, A]", "services: [B, A")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:14: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that starts on line 13)"
    ]
    tab = MINIMAL.replace("  name: 测试大厅", "\tname: 测试大厅")
    assert problems_in(tab, tmp_path, monkeypatch) == [
        "config.yaml:3: YAML syntax error: found character '\\t' that cannot start any token "
        "(while scanning for the next token)"
    ]


@pytest.mark.unit
def test_bad_timezone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace("  name: 测试大厅\n", "  name: 测试大厅\n  timezone: Asia/Beijing\n")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:4 hall.timezone: unknown time zone 'Asia/Beijing' "
        "(use an IANA name such as Asia/Shanghai)"
    ]


@pytest.mark.unit
def test_literal_mqtt_password_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL + "  username: hall\n  password: hunter2\n"
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:17 mqtt.password: a password does not belong in config.yaml; name a file "
        "holding it (password_file, readable only by the daemon) or an environment variable "
        "(password_env)"
    ]


@pytest.mark.unit
def test_mqtt_password_from_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n", encoding="utf-8")
    from_file = parse_config(MINIMAL + "  password_file: mqtt-password\n", base_dir=tmp_path)
    assert from_file.mqtt_password() == "s3cret"

    from_env = parse_config(MINIMAL + "  password_env: HALL_TEST_MQTT_PW\n")
    monkeypatch.setenv("HALL_TEST_MQTT_PW", "from-env")
    assert from_env.mqtt_password() == "from-env"
    monkeypatch.delenv("HALL_TEST_MQTT_PW")
    with pytest.raises(ConfigError) as caught:
        from_env.mqtt_password()
    assert caught.value.problems == [
        "config.yaml:16 mqtt.password_env: environment variable HALL_TEST_MQTT_PW is not set"
    ]


@pytest.mark.unit
def test_problems_are_all_reported_in_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        MINIMAL.replace("prefix: B", "prefix: A")
        .replace("services: [B, A]", "services: [B, B, Q]")
        .replace(
            "  - {id: 1, name: 1号窗口, services: [A]}", "  - {id: 1, name: 1号窗口, services: []}"
        )
        + """\
ports:
  - name: bus
    url: socket://127.0.0.1:7002
    protocol: bus68
    devices:
      - {address: 1, kind: keypad, counter: 1}
      - {address: 1, kind: evaluator, counter: 9}
      - {kind: screen, counter: 2}
screens:
  - {id: hall, services: [C]}
"""
    )
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:8 services[1].prefix: prefix 'A' is already used by services[0]",
        "config.yaml:10 counters[0].services: a counter must offer at least one service",
        "config.yaml:13 counters[1].services[1]: service 'B' is listed twice "
        "(also at counters[1].services[0])",
        "config.yaml:13 counters[1].services[2]: unknown service 'Q'",
        "config.yaml:22 ports[0].devices[1].counter: unknown counter 9",
        "config.yaml:22 ports[0].devices[1].address: address 1 is already used by "
        "ports[0].devices[0]",
        "config.yaml:23 ports[0].devices[2]: a bus68 device needs its address "
        "(1..247, as set on its DIP switches)",
        "config.yaml:25 screens[0].services[0]: unknown service 'C'",
    ]


@pytest.mark.unit
def test_default_service_number_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A's explicit number 2 is what B gets by default from its position.
    text = MINIMAL.replace("prefix: A}", "prefix: A, number: 2}")
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:6 services[1]: its default number 2 (its position) is already used by "
        "services[0]; give it a number"
    ]


@pytest.mark.unit
def test_opening_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hours = (
        'prefix: A, hours: [{open: 8:30, close: "12:00", days: [mon, tue, wed, thu, fri]},'
        ' {open: "13:30", close: "24:00"}]}'
    )
    config = parse_config(MINIMAL.replace("prefix: A}", hours))
    service = config.to_spec().services[0]
    # Unquoted 8:30 is a time here, not YAML 1.1's base-60 integer 510.
    assert service.hours[0].start == time(8, 30)
    assert service.hours[0].weekdays == frozenset({1, 2, 3, 4, 5})
    assert service.hours[1].weekdays == frozenset(range(1, 8))
    monday = datetime(2024, 6, 3)
    assert service.is_open(monday.replace(hour=9))
    assert not service.is_open(monday.replace(hour=12, minute=30))
    assert service.is_open(monday.replace(hour=23, minute=59, second=59))
    assert not service.is_open(datetime(2024, 6, 8, 9))  # Saturday morning

    backwards = MINIMAL.replace(
        "prefix: A}", 'prefix: A, hours: [{open: "12:00", close: "08:30"}]}'
    )
    assert problems_in(backwards, tmp_path, monkeypatch) == [
        "config.yaml:5 services[0].hours[0]: open 12:00 must be before close 08:30"
    ]


@pytest.mark.unit
def test_player_must_be_an_argument_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL + "voice:\n  player: aplay -q\n"
    assert problems_in(text, tmp_path, monkeypatch) == [
        "config.yaml:17 voice.player: give the command as a list of arguments, e.g. [aplay, -q];"
        " it is run directly, never through a shell"
    ]


@pytest.mark.unit
def test_unreadable_and_empty_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("missing.yaml")
    assert caught.value.problems == [
        "missing.yaml:1: cannot read the file: No such file or directory"
    ]
    assert problems_in("# only a comment\n", tmp_path, monkeypatch) == [
        "config.yaml:1: the file is empty"
    ]


def test_the_web_limits_example_is_valid_and_says_the_defaults() -> None:
    from hall_daemon.config import WebLimits

    text = EXAMPLE.read_text(encoding="utf-8")
    block = re.search(r"(?m)^  # limits:\n(?:  #   .*\n)+", text)
    assert block is not None
    uncommented = "".join(line.replace("# ", "", 1) for line in block[0].splitlines(True))
    text = text.replace(block[0], uncommented)
    config = parse_config(text, "config.yaml", EXAMPLE.parent)
    assert config.web.limits == WebLimits()
    with pytest.raises(ConfigError, match=r"web\.limits\.head_timeout_s"):
        parse_config(text.replace("head_timeout_s: 5 ", "head_timeout_s: 0 "), "config.yaml")

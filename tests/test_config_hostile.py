"""config.yaml as an attacker (or a broken editor) writes it: each file fails fast, in bounded
memory, with one line per problem naming file, line and field, and never a traceback."""

from __future__ import annotations

import signal
import time
import tracemalloc
from pathlib import Path

import pytest

from hall_daemon.config import MAX_FILE_BYTES, MAX_PROBLEMS, ConfigError, load_config
from tests.daemon_harness import Daemon, free_port, hall_daemon, write_config

# Line 1 is "hall:"; the service's name is on line 6.
HALL = """\
hall:
  id: test-hall
  name: 测试大厅
services:
  - code: A
    name: {service_name}
    prefix: A
counters:
  - {{id: 1, name: 1号窗口, services: [A]}}
mqtt:
  enabled: false
"""


def hall(service_name: str = "企业开办") -> str:
    return HALL.format(service_name=service_name)


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": ten aliases of ten aliases of ... of one small list."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]")
    return hall() + "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[str, str]] = {
    # name: (file text, what the one line says after "config.yaml:")
    "alias bomb": (alias_bomb(), "16 l4: more than 100000 values"),
    "deep nesting": (hall() + "deep: " + "[" * 5000 + "]" * 5000 + "\n", "12: nested deeper"),
    "deep mappings": (hall() + "deep: " + "{a: " * 500 + "1" + "}" * 500 + "\n", "12: nested"),
    "ESC in a name": (hall('"A\\e@\\x1b!"'), "6 services[0].name: control character U+001B"),
    "NUL in a service name": (hall('"A\\0"'), "6 services[0].name: control character U+0000"),
    "line break in a name": (hall('"A\\nB"'), "6 services[0].name: a line break is not allowed"),
    "bidi override": (hall('"A\\u202eB"'), "6 services[0].name: control character U+202E"),
    "blank name": (hall('"   "'), "6 services[0].name: must not be blank"),
    "a page as a name": (hall("x" * 5000), "6 services[0].name: string should have at most"),
    "NUL in the state folder": (hall() + 'state_dir: "/tmp/a\\0b"\n', "12 state_dir: control"),
    "ESC in a key": (hall() + '"x\\e": 1\n', "12 x\\x1b: control character U+001B"),
    "day_reset_hour 24": (
        hall().replace("  name: 测试大厅\n", "  name: 测试大厅\n  day_reset_hour: 24\n"),
        "4 hall.day_reset_hour: input should be less than or equal to 23",
    ),
    "day_reset_hour 10**100": (
        hall().replace("  name: 测试大厅\n", f"  name: 测试大厅\n  day_reset_hour: {10**100}\n"),
        "4 hall.day_reset_hour: input should be less than or equal to 23",
    ),
    "daily_limit 0": (
        hall().replace("    prefix: A\n", "    prefix: A\n    daily_limit: 0\n"),
        "8 services[0].daily_limit: input should be greater than or equal to 1",
    ),
    "1e308 minutes": (
        hall().replace("    prefix: A\n", "    prefix: A\n    mean_service_minutes: 1e308\n"),
        "8 services[0].mean_service_minutes: input should be less than or equal to 480",
    ),
    "time zone that does not exist": (
        hall().replace("  name: 测试大厅\n", "  name: 测试大厅\n  timezone: Mars/Olympus_Mons\n"),
        "4 hall.timezone: unknown time zone 'Mars/Olympus_Mons'",
    ),
    "time zone that is a path": (
        hall().replace("  name: 测试大厅\n", "  name: 测试大厅\n  timezone: ../../etc/passwd\n"),
        "4 hall.timezone: unknown time zone '../../etc/passwd'",
    ),
    "a baud rate of 10**30": (
        hall() + f"ports:\n  - {{name: p, url: /dev/ttyS0, protocol: line, baud: {10**30}}}\n",
        "13 ports[0].baud: input should be less than or equal to 4000000",
    ),
    "tab indentation": (hall().replace("  id: test-hall", "\tid: test-hall"), "2: YAML syntax"),
    "duplicate key": (hall() + "mqtt: {enabled: true}\n", "12 mqtt: duplicate key 'mqtt'"),
}


def one_problem(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "config.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("config.yaml")
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert problems[0].isprintable(), problems[0]  # one line, no terminal escapes
    return problems[0]


@pytest.mark.unit
@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_file_fails_fast_with_one_line(
    attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, says = HOSTILE[attack]
    tracemalloc.start()
    started = time.monotonic()
    try:
        problem = one_problem(text, tmp_path, monkeypatch)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert problem.startswith(f"config.yaml:{says}"), problem
    assert time.monotonic() - started < 5.0
    assert peak < 64 * 2**20


@pytest.mark.unit
def test_a_file_beyond_the_size_limit_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = hall() + "# " + "x" * (8 * 2**20) + "\n"  # a comment: valid YAML, if slow to scan
    started = time.monotonic()
    assert one_problem(huge, tmp_path, monkeypatch) == (
        f"config.yaml:1: the file is larger than {MAX_FILE_BYTES // 1024} KiB; is it config.yaml?"
    )
    assert time.monotonic() - started < 1.0


@pytest.mark.unit
def test_a_list_beyond_what_a_hall_can_have_is_reported_in_a_few_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counters = ", ".join(f"{{id: {i}, name: c, services: [A]}}" for i in range(1, 1200))
    text = hall().replace("counters:\n  - {id: 1, name: 1号窗口, services: [A]}", "counters: []")
    text = text.replace("counters: []", f"counters: [{counters}]")
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("config.yaml")
    problems = caught.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].startswith("config.yaml:8 counters")
    assert problems[-1].startswith("... and ") and problems[-1].endswith(" more problems")


@pytest.mark.unit
def test_not_utf8_and_a_bom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_bytes(hall().encode("gb18030"))
    with pytest.raises(ConfigError) as caught:
        load_config("config.yaml")
    assert caught.value.problems == ["config.yaml:3: not UTF-8 text; save the file as UTF-8"]
    (tmp_path / "config.yaml").write_bytes(b"\xef\xbb\xbf" + hall().encode())
    assert load_config("config.yaml").hall.id == "test-hall"


@pytest.mark.unit
def test_a_path_with_a_nul_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "config\0.yaml"))
    (problem,) = caught.value.problems
    assert problem.startswith(str(tmp_path) + "/config\\x00.yaml:1: cannot read the file")


@pytest.mark.service
def test_check_config_refuses_hostile_files_in_one_line(tmp_path: Path) -> None:
    files = {
        "bomb.yaml": alias_bomb().encode(),
        "huge.yaml": hall().encode() + b"#" * (50 * 2**20),
        "esc.yaml": hall('"A\\e[2J"').encode(),
        "deep.yaml": (hall() + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        started = time.monotonic()
        done = hall_daemon("check-config", str(tmp_path / name))
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"{tmp_path / name}:"), line
        assert time.monotonic() - started < 10.0, name


@pytest.mark.service
def test_a_slow_file_on_reload_does_not_stall_the_hall(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, web_port=(port := free_port()), **{r"(?m)^(mqtt:\n  enabled:) true": r"\1 false"}
    )
    daemon = Daemon(config, port)
    daemon.start()
    try:
        assert daemon.proc is not None
        good = config.read_text(encoding="utf-8")
        # Just under the size limit, and as slow to parse as YAML gets: seconds of work.
        slow = good + "extra: [" + "1," * ((MAX_FILE_BYTES - len(good.encode())) // 2 - 8) + "]\n"
        assert len(slow.encode()) <= MAX_FILE_BYTES
        config.write_text(slow, encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        slowest = 0.0
        while "is not valid, keeping the running config" not in daemon.log_text():
            started = time.monotonic()
            assert daemon.get("/healthz")[0] == 200
            slowest = max(slowest, time.monotonic() - started)
            assert slowest < 0.5, slowest
            time.sleep(0.05)
        assert "extra: unknown field" in daemon.log_text()
    finally:
        assert daemon.stop() == 0

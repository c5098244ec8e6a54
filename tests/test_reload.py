"""SIGHUP on the real daemon: live parts of config.yaml change at once, a bad file changes
nothing, and settings that need a restart are named in the log."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from hall_daemon.config import load_config
from hall_daemon.reload import plan_reload
from tests.daemon_harness import REPO, Daemon, free_port, write_config


def _page(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode("utf-8"))


def _wait_log(daemon: Daemon, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = daemon.log_text()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log:\n{daemon.log_text()[-3000:]}")


@pytest.mark.service
def test_sighup_swaps_screen_title_and_voice_and_names_restart_only_changes(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path, web_port=port)
    daemon = Daemon(config, port)
    daemon.start()
    try:
        assert "叫号信息 Now calling" in _page(port, "/screen/hall")
        assert daemon.proc is not None

        # A broken file first: logged, nothing changes, the daemon keeps serving.
        good = config.read_text(encoding="utf-8")
        config.write_text(good.replace("screens:", "screens: [", 1), encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        _wait_log(daemon, "is not valid, keeping the running config")
        assert "叫号信息 Now calling" in _page(port, "/screen/hall")

        text = good.replace("title: 叫号信息 Now calling", "title: 请看这里 Look here")
        text = text.replace(
            "en: Number {number}, please go to counter {counter}",
            "en: Ticket {number}, counter {counter} please",
        )
        text = re.sub(r"snapshot_every: \d+", "snapshot_every: 77", text)
        assert text.count("snapshot_every: 77") == 1
        config.write_text(text, encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        log = _wait_log(daemon, "reload: applied")
        assert "请看这里 Look here" in _page(port, "/screen/hall")
        assert "叫号信息" not in _page(port, "/screen/hall")
        assert re.search(r"reload: applied .*voice\.templates", log)
        assert re.search(r"reload: applied .*screens", log)
        assert re.search(r"needs a restart.*: storage", log)
        assert daemon.get("/healthz")[0] == 200
    finally:
        assert daemon.stop() == 0


@pytest.mark.unit
def test_the_plan_applies_voice_wording_and_keeps_counters_for_the_restart(
    tmp_path: Path,
) -> None:
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    old_path, new_path = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_path.write_text(text, encoding="utf-8")
    new_text = text.replace("please go to counter", "go to counter")
    new_text = new_text.replace("state_dir: ./state", "state_dir: ./elsewhere")
    new_path.write_text(new_text, encoding="utf-8")
    old, new = load_config(old_path), load_config(new_path)
    plan = plan_reload(old, new)
    assert plan.applied == ("voice.templates",)
    assert plan.needs_restart == ("state_dir",)
    assert plan.config.voice.templates.en.startswith("Number {number}, go to counter")
    assert plan.config.state_dir == old.state_dir  # restart-only: the running value stays

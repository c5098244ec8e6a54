"""SIGHUP: re-read config.yaml and swap in what can change while the hall runs.

Screens, the hall's names and notice, and the voice's wording (templates, repeat, quiet
hours, volume, max delay) are swapped in place. Everything else (services, counters, ports,
storage, MQTT, web, the printer...) is built into running parts at start-up: a change there
is logged as needing a restart and left as it was. A file that fails validation changes
nothing: the error is logged and the daemon keeps the config it has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import ConfigError, HallConfig, load_config

log = logging.getLogger(__name__)

HALL_LIVE = ("name", "name_en", "notice")
VOICE_LIVE = ("templates", "repeat", "quiet_hours", "volume", "max_delay_s")
LIVE_SECTIONS = ("screens",)


class Reloadable(Protocol):
    def reload(self, config: HallConfig) -> None: ...


@dataclass(frozen=True)
class ReloadPlan:
    config: HallConfig  # the running config with the live parts of the new file swapped in
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def _changed(old: object, new: object, names: tuple[str, ...], prefix: str) -> list[str]:
    return [f"{prefix}{n}" for n in names if getattr(old, n) != getattr(new, n)]


def plan_reload(old: HallConfig, new: HallConfig) -> ReloadPlan:
    """What of `new` can be applied to a daemon running `old`, and what needs a restart."""
    applied = _changed(old.hall, new.hall, HALL_LIVE, "hall.")
    applied += _changed(old.voice, new.voice, VOICE_LIVE, "voice.")
    applied += _changed(old, new, LIVE_SECTIONS, "")
    needs_restart = [
        f"hall.{n}"
        for n in type(old.hall).model_fields
        if n not in HALL_LIVE and getattr(old.hall, n) != getattr(new.hall, n)
    ]
    needs_restart += [
        f"voice.{n}"
        for n in type(old.voice).model_fields
        if n not in VOICE_LIVE and getattr(old.voice, n) != getattr(new.voice, n)
    ]
    needs_restart += [
        n
        for n in type(old).model_fields
        if n not in (*LIVE_SECTIONS, "hall", "voice") and getattr(old, n) != getattr(new, n)
    ]
    merged = old.model_copy(
        update={
            "hall": old.hall.model_copy(update={n: getattr(new.hall, n) for n in HALL_LIVE}),
            "voice": old.voice.model_copy(update={n: getattr(new.voice, n) for n in VOICE_LIVE}),
            "screens": new.screens,
        }
    )
    # Screens name services and counters: if those changed too, the new screens may name
    # ones the running hall does not have, so they wait for the restart as well.
    known_services = {s.code for s in old.services}
    known_counters = {c.id for c in old.counters}
    if any(
        not set(s.services or ()) <= known_services or not set(s.counters or ()) <= known_counters
        for s in new.screens
    ):
        merged = merged.model_copy(update={"screens": old.screens})
        applied = [a for a in applied if a != "screens"]
        needs_restart.append("screens")
    return ReloadPlan(merged, tuple(applied), tuple(needs_restart))


def reload_config(current: HallConfig, path: Path, parts: list[Reloadable | None]) -> HallConfig:
    """Re-read `path`; apply what is live to `parts`; return the config now running."""
    new = read_config(path)
    return current if new is None else apply_reload(current, new, parts)


def read_config(path: Path) -> HallConfig | None:
    """The checked file, or None (logged) if it is not valid. Safe to run on a thread."""
    try:
        return load_config(path)
    except ConfigError as exc:
        log.error("reload: %s is not valid, keeping the running config:\n%s", path, exc)
        return None


def apply_reload(
    current: HallConfig, new: HallConfig, parts: list[Reloadable | None]
) -> HallConfig:
    """Apply what is live in `new` to `parts`; return the config now running."""
    plan = plan_reload(current, new)
    for part in parts:
        if part is not None:
            part.reload(plan.config)
    if plan.applied:
        log.info("reload: applied %s", ", ".join(plan.applied))
    else:
        log.info("reload: nothing to apply")
    if plan.needs_restart:
        log.warning(
            "reload: changed but needs a restart (systemctl restart hall-daemon): %s",
            ", ".join(plan.needs_restart),
        )
    return plan.config

"""What a counter's devices show: the keypad's LCD and the window screen's text. Pure."""

from __future__ import annotations

from drivers import bus68
from hall_daemon.model import CounterSpec
from hall_daemon.state import PAUSED, HallState

SCREEN_LINE = 0
IDLE = "欢迎光临"
PAUSED_TEXT = "暂停服务"


def ticket_digits(number: str | None) -> int | None:
    """A012 -> 12: the LCD has digits only."""
    if not number:
        return None
    tail = number[-3:]
    return int(tail) if tail.isdigit() else None


def lcd(address: int, state: HallState, counter: int) -> bus68.Frame:
    """Left: tickets waiting for the counter; right: its current ticket; blank for none."""
    waiting = state.waiting_for_counter(counter)
    current = state.counters[counter].current
    return bus68.display(address, waiting or None, ticket_digits(current))


def window_label(spec: CounterSpec) -> str:
    """Where the applicant goes: the counter's name if it is a 窗口, else `{n}号窗口`."""
    return spec.name if spec.name.endswith("窗口") else f"{spec.id}号窗口"


def screen_text(spec: CounterSpec, state: HallState) -> str:
    counter = state.counters[spec.id]
    if counter.current is not None:
        return f"{counter.current} 请到{window_label(spec)}"
    return f"{spec.name} {PAUSED_TEXT if counter.state == PAUSED else IDLE}"


def screen(address: int, spec: CounterSpec, state: HallState) -> bus68.Frame:
    return bus68.text(address, SCREEN_LINE, screen_text(spec, state))

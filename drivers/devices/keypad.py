"""The keypad's key table (serial-protocols.md §1, "Key codes"): a key press -> what to do.

Pure: the caller passes the counter the keypad belongs to, the time and the service numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from drivers.bus68 import Key, KeyPress
from hall_daemon import commands as c

MAX_TRANSFER_DIGITS = 2


@dataclass(frozen=True)
class PromptEvaluator:
    """RATE: light up the counter's evaluator; the hall hears of it only with the rating."""

    counter: int


@dataclass(frozen=True)
class Unusable:
    """A press the key table does not allow (digits where none belong, an unknown CONFIRM)."""

    reason: str


KeyAction = c.Command | PromptEvaluator | Unusable

_CONFIRM: dict[int, Callable[[datetime, int], c.Command]] = {
    6: c.NoShow,
    0: c.Suspend,
    3: c.Resume,
}


def key_action(
    press: KeyPress, counter: int, at: datetime, service_by_number: Mapping[int, str]
) -> KeyAction:
    digits = press.digits
    key = press.key
    if key in (Key.CALL, Key.CONFIRM, Key.TRANSFER):
        if not digits:
            return Unusable("missing-digits")
    elif digits:
        return Unusable("unexpected-digits")
    match key:
        case Key.NEXT:
            return c.CallNext(at, counter)
        case Key.RECALL:
            return c.Recall(at, counter)
        case Key.RATE:
            return PromptEvaluator(counter)
        case Key.DONE:
            return c.Done(at, counter)
        case Key.PAUSE:
            return c.TogglePause(at, counter)
        case Key.CALL:
            return c.CallNumber(at, counter, digits)
        case Key.CONFIRM:
            confirm = _CONFIRM.get(int(digits))
            if confirm is None:
                return Unusable("unknown-confirm")
            return confirm(at, counter)
        case Key.TRANSFER:
            service = service_by_number.get(int(digits))
            if len(digits) > MAX_TRANSFER_DIGITS or service is None:
                return Unusable("unknown-service-number")
            return c.Transfer(at, counter, service)

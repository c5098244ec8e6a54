"""Calling policies: which waiting ticket a counter calls next.

A policy is one function `(state, counter, now) -> Ticket | None`, chosen by name in
config.yaml (`queue.policy`). It only reads the state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from .state import Counter, HallState, QueueKey, Ticket

Policy = Callable[[HallState, Counter, datetime], Ticket | None]


def _heads(state: HallState, counter: Counter, urgent: bool) -> list[tuple[int, QueueKey]]:
    """The first waiting ticket of each of the counter's services, with its preference rank."""
    queues = state.urgent_queue if urgent else state.normal_queue
    return [(rank, q[0]) for rank, s in enumerate(counter.services) if (q := queues[s])]


def _pool(state: HallState, counter: Counter) -> list[tuple[int, QueueKey]]:
    """Urgent tickets first, but a normal one after a streak of urgent ones (anti-starvation)."""
    urgent = _heads(state, counter, urgent=True)
    normal = _heads(state, counter, urgent=False)
    starving = counter.priority_streak >= state.spec.policy.priority_streak_limit
    if urgent and not (starving and normal):
        return urgent
    return normal


def weighted_wait(state: HallState, counter: Counter, now: datetime) -> Ticket | None:
    """The longest wait, weighted down by how far down the counter's preferences the service is.

    A counter that prefers A and also serves B takes a B ticket only once it has waited
    1/decay times longer than the oldest A ticket (twice as long with the default 0.5).
    """
    pool = _pool(state, counter)
    if not pool:
        return None
    decay = state.spec.policy.preference_decay
    t_now = now.timestamp()

    def score(item: tuple[int, QueueKey]) -> tuple[float, float, int]:
        rank, key = item
        # +1 s so that tickets issued this instant still differ by preference.
        return (-(max(t_now - key[0], 0.0) + 1.0) * decay**rank, key[0], key[1])

    return state.by_key[min(pool, key=score)[1]]


def fifo(state: HallState, counter: Counter, now: datetime) -> Ticket | None:
    """Strict issue order across the counter's services (urgent tickets still first)."""
    pool = _pool(state, counter)
    if not pool:
        return None
    return state.by_key[min(key for _, key in pool)]


POLICIES: dict[str, Policy] = {"weighted-wait": weighted_wait, "fifo": fifo}

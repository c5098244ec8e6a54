"""The closed-form wait forecast.

This is the closed-form queue-length predictor, the fallback every hall has from day one:
the tickets ahead are shared among the counters that serve the service. The learned,
calibrated forecaster replaces it through the same `Forecaster` signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..state import HallState

Forecast = dict[str, Any]  # wait_s, p10_s, p90_s, method: the contract's `forecast` object
Forecaster = Callable[[HallState, str, int, datetime], Forecast]

Z80 = 1.2816  # the normal quantile for an 80 % two-sided interval


def queue_length_forecast(state: HallState, service: str, ahead: int, now: datetime) -> Forecast:
    """Expected wait of a ticket with `ahead` tickets before it in `service`."""
    mean = state.services[service].mean_service_s
    serving = [c for c in state.counters.values() if service in c.services]
    open_now = [c for c in serving if c.state == "open"]
    # Counters that are closed now will open; a hall with none open still gets a finite answer.
    servers = max(len(open_now) or len(serving), 1)
    busy = sum(1 for c in open_now if c.current is not None)
    if ahead == 0 and busy < len(open_now):
        return {"wait_s": 0, "p10_s": 0, "p90_s": 0, "method": "queue-length"}
    # Completions at `servers` counters come every mean/servers seconds; we need ahead+1 of
    # them (the counters busy now must free up first), so the wait is a sum with that many terms.
    n = ahead + 1
    wait = n * mean / servers - mean / (2 * servers)
    spread = Z80 * wait / math.sqrt(n)
    return {
        "wait_s": round(wait),
        "p10_s": round(max(wait - spread, 0.0)),
        "p90_s": round(wait + spread),
        "method": "queue-length",
    }

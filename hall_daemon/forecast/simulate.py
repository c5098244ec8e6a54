"""The snapshot Monte-Carlo: the hall played forward from now, a few hundred times at once.

Every replication starts from the same snapshot: the waiting tickets in their queues, the
counters that are open (busy for the rest of their current service, drawn from the
service-time law given the time already spent), paused counters coming back after a
learned pause. Counters free up, and each one calls by the hall's own policy (urgent lanes
first with anti-starvation, then the longest wait weighted by preference, or FIFO).
Priority tickets keep arriving at their learned rate and overtake; waiting applicants give
up at their learned rate; a called applicant who does not come costs the counter a little
time. The numpy arrays run across replications, so one pass of the loop is one call in
every replication. Each ticket's call time is recorded when a counter reaches it.

The random numbers are drawn from a fixed seed: the same snapshot and the same learned
figures give the same forecast (replays are deterministic), and consecutive snapshots share
their randomness, so forecasts do not jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from ..state import OPEN, PAUSED, HallState, Ticket
from .learn import Learned

REPLICATIONS = 128
MAX_CALLS = 32  # simulated calls per replication; tickets further back are extrapolated
HORIZON_S = 8 * 3600.0  # beyond this a forecast is not worth simulating
MAX_FUTURE_URGENT = 4  # per service: more priority arrivals than this within a wait are rare
SEED = 20261128


@dataclass(frozen=True, slots=True)
class Outcome:
    """Call times (seconds from now) of every target, across replications."""

    targets: list[str]  # ticket numbers, then "*<service>" for a ticket taken now
    times: np.ndarray  # replications x targets

    def index(self, target: str) -> int:
        return self.targets.index(target)


def _ndtri(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549671010115819e00, 4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)  # fmt: skip
    p = np.clip(p, 1e-12, 1 - 1e-12)
    out = np.empty_like(p)
    lo, hi = p < 0.02425, p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    den = ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
    out[mid] = num / den
    for mask, sign in ((lo, 1.0), (hi, -1.0)):
        pp = p[mask] if sign > 0 else 1 - p[mask]
        q = np.sqrt(-2 * np.log(pp))
        num = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
        den = (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        out[mask] = sign * num / den
    return out


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def simulate(
    state: HallState,
    learned: Learned,
    now: datetime,
    replications: int = REPLICATIONS,
    max_calls: int = MAX_CALLS,
) -> Outcome:
    """Play the hall forward from `state` at `now`; see the module's docstring."""
    # inf - inf happens on purpose in lanes with nobody (padding) and is masked out.
    with np.errstate(invalid="ignore"):
        return _simulate(state, learned, now, replications, max_calls)


def _simulate(
    state: HallState, learned: Learned, now: datetime, replications: int, max_calls: int
) -> Outcome:
    rng = np.random.default_rng(SEED)
    R = replications
    codes = list(state.services)
    S = len(codes)
    t_now = now.timestamp()
    policy = state.spec.policy
    fifo = policy.name == "fifo"

    # Lanes: 0..S-1 urgent, S..2S-1 normal. Urgent lanes end with future priority arrivals.
    targets: list[str] = []
    lane_issue: list[list[float]] = []
    lane_target: list[list[int]] = []
    for urgent in (True, False):
        queues = state.urgent_queue if urgent else state.normal_queue
        for code in codes:
            issue, tgt = [], []
            for key in queues[code]:
                waiting: Ticket = state.by_key[key]
                issue.append(key[0] - t_now)
                tgt.append(len(targets))
                targets.append(waiting.number)
            if not urgent:  # a ticket taken now queues behind all of them
                issue.append(0.0)
                tgt.append(len(targets))
                targets.append("*" + code)
            lane_issue.append(issue)
            lane_target.append(tgt)
    L = max(len(x) for x in lane_issue) + MAX_FUTURE_URGENT + 1  # +1: an inf sentinel
    T = len(targets)
    issue_arr = np.full((R, 2 * S, L), np.inf)
    target_arr = np.full((2 * S, L), T, dtype=np.int64)  # column T: not a target
    for lane, (iss, tgt) in enumerate(zip(lane_issue, lane_target, strict=True)):
        issue_arr[:, lane, : len(iss)] = iss
        target_arr[lane, : len(tgt)] = tgt
    for s, code in enumerate(codes):
        rate = learned.urgent_rate(code, now)
        if rate <= 0:
            continue
        n0 = len(lane_issue[s])
        gaps = rng.exponential(1.0 / rate, size=(R, MAX_FUTURE_URGENT))
        issue_arr[:, s, n0 : n0 + MAX_FUTURE_URGENT] = np.cumsum(gaps, axis=1)
    issue_flat = issue_arr.reshape(-1)
    target_flat = target_arr.reshape(-1)
    hazard = learned.abandon_rate()
    gap = learned.call_gap_s()

    # Counters: available ones, their services' ranks, and when each is free.
    desks = [c for c in state.counters.values() if c.state in (OPEN, PAUSED)]
    C = len(desks)
    times = np.full((R, T + 1), np.nan)
    if C == 0:
        return Outcome(targets, times[:, :T])
    col = {code: i for i, code in enumerate(codes)}
    rank = np.full((C, 2 * S), np.inf)
    mu = np.zeros((C, S))
    sigma = np.ones((C, S))
    for i, c in enumerate(desks):
        for r_, code in enumerate(c.services):
            if code in col:
                rank[i, col[code]] = rank[i, S + col[code]] = r_
        for code, j in col.items():
            mu[i, j], sigma[i, j] = learned.service_time(c.id, code)
    # An idle open counter calls at once (its clerk is there: an absent one pauses it).
    free = np.zeros((R, C))
    # Remaining service times of the tickets being served, drawn here and transformed all at
    # once below: one inverse-CDF pass over every counter instead of one per counter.
    serving: list[tuple[int, float, float, float, np.ndarray, float | np.ndarray]] = []
    for i, c in enumerate(desks):
        start: float | np.ndarray = 0.0
        if c.state == PAUSED:
            away = (t_now - c.since.timestamp()) if c.since else 0.0
            mean_pause = learned.pause.mean_s
            start = max(mean_pause - away, 0.0) + rng.exponential(mean_pause / 4, size=R)
            free[:, i] = start
        if c.current is not None and c.current in state.tickets:
            served = state.tickets[c.current]
            if served.service not in col:
                continue
            j = col[served.service]
            spent = max(t_now - (c.since or served.called_at or now).timestamp(), 0.0)
            m, sd = mu[i, j], sigma[i, j]
            f = _phi((math.log(max(spent, 1.0)) - m) / sd)
            serving.append((i, spent, m, sd, f + rng.random(R) * (1 - f), start))
    if serving:
        z = _ndtri(np.concatenate([u for *_, u, _ in serving])).reshape(len(serving), R)
        for (i, spent, m, sd, _, start), zi in zip(serving, z, strict=True):
            free[:, i] = np.maximum(np.exp(m + sd * zi) - spent, 0.0) + start
    no_show_p = np.array([learned.no_show_p(code) for code in codes])
    ns = learned.no_show_cost
    serves = np.isfinite(rank)
    weight = np.where(serves, policy.preference_decay ** np.where(serves, rank, 0.0), 0.0)
    # Per lane (urgent lanes, then normal ones) rather than per service: one lookup a call.
    # Thresholds are kept negated to compare with -u: `u > x` is exactly `-u < -x`.
    neg_present = -np.tile(1.0 - no_show_p, 2)
    mu_lane, sigma_lane = np.tile(mu, 2), np.tile(sigma, 2)
    neg_hazard = -hazard
    streak = np.zeros((R, C), dtype=np.int64)
    for i, c in enumerate(desks):
        streak[:, i] = c.priority_streak
    limit = policy.priority_streak_limit
    head = np.zeros((R, 2 * S), dtype=np.int64)
    rows = np.arange(R)
    base = rows[:, None] * (2 * S * L) + np.arange(2 * S)[None, :] * L
    urgent_lane = np.arange(2 * S) < S
    lane_base = np.arange(2 * S) * L
    left = np.full(R, T, dtype=np.int64)  # targets not reached yet, per replication
    times_flat = times.reshape(-1)
    z_all = neg_u_all = ns_all = np.empty((R, 0))
    max_steps = min(2 * (T + S * MAX_FUTURE_URGENT) + 20, max_calls)

    # Each pass is one call in every replication, so its cost is numpy's per-operation
    # overhead, not the arithmetic: the loop is written for few operations per pass.
    for step in range(max_steps):
        k = step % 64
        if k == 0:  # before any `continue`: a skipped refresh would index past the chunk
            z_all, u_all = rng.standard_normal((R, 64)), rng.random((R, 64))
            neg_u_all, ns_all = -u_all, ns.mean + ns.sigma * z_all
        ci = free.argmin(axis=1)
        t = free[rows, ci]
        if not (t < HORIZON_S).any():
            break
        hi = issue_flat[base + head]
        elig = (hi <= t[:, None]) & serves[ci]
        any_u = elig[:, :S].any(axis=1)
        any_n = elig[:, S:].any(axis=1)
        use_u = any_u & ~((streak[rows, ci] >= limit) & any_n)
        pool = elig & (urgent_lane[None, :] == use_u[:, None])
        if fifo:
            score = np.where(pool, hi, np.inf)
        else:
            score = np.where(pool, (hi - t[:, None] - 1.0) * weight[ci], np.inf)
        lane = score.argmin(axis=1)
        calls = pool[rows, lane]
        if calls.all():
            r, ln, c_, tr = rows, lane, ci, t
            z, neg_u, ns_z = z_all[:, k], neg_u_all[:, k], ns_all[:, k]
        else:
            # Nobody for this counter now: it waits for its next priority arrival, if any.
            idle = ~calls
            ahead = np.where(serves[ci] & (hi > t[:, None]), hi, np.inf).min(axis=1)
            free[idle, ci[idle]] = ahead[idle]
            r = np.nonzero(calls)[0]
            if r.size == 0:
                continue
            ln, c_, tr = lane[r], ci[r], t[r]
            z, neg_u, ns_z = z_all[r, k], neg_u_all[r, k], ns_all[r, k]
        pos = head[r, ln]
        tg = target_flat[lane_base[ln] + pos]
        times_flat[r * (T + 1) + tg] = tr
        still = left[r] - (tg < T)
        left[r] = still
        head[r, ln] = pos + 1
        # Whether the applicant is still there: given up meanwhile (memoryless), or absent.
        waited = tr - np.maximum(hi[r, ln], 0.0)
        quit = np.expm1(neg_hazard * waited) < neg_u  # u < 1 - exp(-hazard * waited)
        absent = ~quit & (neg_u < neg_present[ln])
        took = np.exp(np.where(absent, ns_z, mu_lane[c_, ln] + sigma_lane[c_, ln] * z))
        free[r, c_] = np.where(still > 0, tr + np.where(quit, 0.0, took + gap), np.inf)
        done = still == 0
        if done.any():
            free[r[done]] = np.inf
        was = streak[r, c_]
        streak[r, c_] = np.where(quit, was, np.where(ln < S, was + 1, 0))
    else:
        _extrapolate(times, head, target_arr, free, mu, sigma, serves, S, T, gap)
    return Outcome(targets, times[:, :T])


def _extrapolate(
    times: np.ndarray,
    head: np.ndarray,
    target_arr: np.ndarray,
    free: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    serves: np.ndarray,
    S: int,
    T: int,
    gap: float,
) -> None:
    """Tickets the capped simulation did not reach: at each lane's simulated pace from where
    the simulation stopped (or, for a lane it never served, the counters' joint pace)."""
    end = np.where(np.isfinite(free), free, -np.inf).max(axis=1)  # busy counters' horizon
    soonest = np.where(np.isfinite(free), free, np.inf).min(axis=1)
    end = np.where(np.isfinite(soonest), soonest, np.where(np.isfinite(end), end, 0.0))
    span = max(float(end.mean()), 1.0)
    for lane in range(2 * S):
        row = target_arr[lane]
        n = int((row < T).sum())
        h = head[:, lane]
        if n == 0 or (h >= n).all():
            continue
        # Calls per second in this lane, if the simulation saw enough of them to tell.
        pace = float(h.mean()) / span if h.mean() >= 1 else 0.0
        if pace <= 0:
            s = lane % S
            mean_s = np.exp(mu[:, s] + sigma[:, s] ** 2 / 2) + gap
            pace = float((serves[:, lane] / mean_s).sum()) / 2  # shared with other services
        if pace <= 0:
            continue
        k = np.arange(n)[None, :]
        later = end[:, None] + (k - h[:, None] + 1) / pace
        cols = row[:n]
        missing = k >= h[:, None]
        cur = times[:, cols]
        times[:, cols] = np.where(missing & np.isnan(cur), np.minimum(later, HORIZON_S), cur)

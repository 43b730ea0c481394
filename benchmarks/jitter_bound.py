"""How low any jitter buffer's median delay can go on a trace: a clairvoyant lower bound.

Issue 16 asks, on every trace, for late-concealed <= 0.5 %, no more underruns than the seed's
fixed settings and a median added delay <= 100 ms. This module asks whether *any* buffer could
do that on a given trace, even one that knows every arrival in advance. It can only move the
playout delay the way a buffer can:

* a packet of speech may be time-stretched, at most ``up`` ms longer or ``down`` ms shorter
  (the worker plays 3 packets as 4 or 4 as 3: +13.3 / -10 ms per 40 ms packet);
* a pause may be repeated any number of times or dropped (-1 packet);
* no stalls: on the traces where the goals conflict (wifi, heavy tail, turns) the seed's fixed
  settings never underrun, so the goal allows no underrun there either;
* each segment starts at any delay the buffer likes.

Packet ``k`` of a segment is late when the playout delay ``D_k`` (playout - arrival of the
segment's first packet - ``k`` packet periods, the benchmark's "added delay") is below its
lateness ``r_k`` (its own arrival on that timeline). The bound: the smallest ``T`` for which a
trajectory with at most the late budget and at most half the packets above ``T`` is not ruled
out. Ruling out uses Lagrangian duality on a dynamic programme over a grid of delays:
``min_D f(D) + mu * (g(D) - B) <= min {f(D) : g(D) <= B}`` for every ``mu >= 0``, so a dual
value above half the packets proves that no trajectory meets both goals. The grid is a
relaxation (a real trajectory rounded down to the grid is one of the programme's, with no more
cost), and pauses cost nothing in either count, so the bound is safe: no buffer does better.

The strict programme's best trajectory at the bound is also reported (steps within the limits,
late wherever the delay is below the lateness, pauses counted): what a clairvoyant buffer
reaches, so the answer is bracketed from both sides. And :func:`fixed_in_hindsight`: the lowest
steady delay meeting the late budget, chosen knowing the whole trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatar_pipeline.jitter_replay import speech_classes, worker_packets


@dataclass(frozen=True)
class Packets:
    """One trace as the worker sees it: per packet its segment, lateness (ms, NaN = lost) and
    whether it carries speech."""

    segment: np.ndarray
    lateness_ms: np.ndarray
    speech: np.ndarray
    packet_ms: float


def packets(trace: dict, packet_ms: float = 40.0, seed: int = 0) -> Packets:
    """The trace regrouped into the worker's packets, as :func:`replay_trace` replays it."""
    tpms = float(trace.get("packet_ms", 20.0))
    classes = speech_classes(trace["segment"], seed, tpms)
    wp = worker_packets(trace["arrival_ms"], trace["segment"], classes, tpms, packet_ms)
    seg = np.asarray(wp.segment)
    late = np.full(len(seg), np.nan)
    for s in np.unique(seg):
        idx = np.flatnonzero(seg == s)
        arr = [wp.arrival_ms[i] for i in idx]
        t0 = arr[0]
        if t0 is None:  # the buffer's timeline starts at the first packet that came
            first = next((k for k, a in enumerate(arr) if a is not None), None)
            if first is None:
                continue
            t0 = arr[first] - first * packet_ms
        for k, (i, a) in enumerate(zip(idx, arr, strict=True)):
            if a is not None:
                late[i] = a - (t0 + k * packet_ms)
    return Packets(seg, late, np.asarray([t.speech for t in wp.tags]), packet_ms)


@dataclass
class Bound:
    ruled_out_ms: float  # no buffer has a median added delay this low with the budget met
    late_budget: int  # late packets allowed (0.5 % of the slots)
    clairvoyant_median_ms: float  # what the programme's own best trajectory reaches...
    clairvoyant_late_pct: float  # ...and its late-concealed share
    up_ms: float
    down_ms: float


def _dp(p: Packets, threshold: float, mu: float, up: float, down: float, q: float,
        trajectory: bool = False):
    """min over delay trajectories of (#speech packets above ``threshold``) + mu * (#late);
    returns (value, delays of the best trajectory or None).

    Without ``trajectory`` the programme is the relaxation the proof needs (every real
    trajectory rounded down to the grid is in it: steps one cell wider, late only where surely
    late). With it, the programme is strict (steps within the limits, late wherever the grid
    delay is below the lateness, pauses counted like speech), so the trajectory it returns is
    one a buffer could play, judged as the replay judges it."""
    grid = np.arange(0.0, max(200.0, float(np.nanmax(p.lateness_ms)) + 2 * q) + q, q)
    if trajectory:
        n_up, n_down, n_drop = (int(math.floor(x / q + 1e-9)) for x in (up, down, p.packet_ms))
    else:  # rounding to the grid moves a step by < q either way
        n_up, n_down, n_drop = (int(math.ceil(x / q)) + 1 for x in (up, down, p.packet_ms))
    above = (grid > threshold).astype(float)
    idx = np.arange(len(grid))
    total = 0.0
    picks: list[np.ndarray] = []
    seg_ends: list[tuple[int, np.ndarray]] = []
    value = None
    for i in range(len(p.segment)):
        new_seg = i == 0 or p.segment[i] != p.segment[i - 1]
        r = p.lateness_ms[i]
        if (p.speech[i] or trajectory) and not np.isnan(r):
            late = grid < r if trajectory else grid + q <= r  # relaxed: surely late
            cost = np.where(late, mu, above)
        else:
            cost = np.zeros_like(grid)
        if new_seg:
            if value is not None:
                total += float(value.min())
                seg_ends.append((i - 1, value.copy()))
            value = cost.copy()
            picks.append(np.full(len(grid), -1, dtype=np.int32))
            continue
        if p.speech[i - 1]:  # G' - G in [-down, +up]: G in [G' - up, G' + down]
            best = np.full(len(grid), np.inf)
            arg = np.full(len(grid), -1, dtype=np.int32)
            for s in range(-n_up, n_down + 1):
                src = idx + s
                ok = (src >= 0) & (src < len(grid))
                cand = np.full(len(grid), np.inf)
                cand[ok] = value[src[ok]]
                better = cand < best
                best[better] = cand[better]
                arg[better] = src[better]
        else:  # a pause: any increase, or one packet dropped: G <= G' + packet
            run_min = np.minimum.accumulate(value)
            run_arg = np.maximum.accumulate(np.where(value == run_min, idx, 0)).astype(np.int32)
            lim = np.minimum(idx + n_drop, len(grid) - 1)
            best, arg = run_min[lim], run_arg[lim]
        value = cost + best
        picks.append(arg)
    total += float(value.min())
    seg_ends.append((len(p.segment) - 1, value.copy()))
    if not trajectory:
        return total, None
    delays = np.zeros(len(p.segment))
    for end, v in reversed(seg_ends):
        i, j = end, int(np.argmin(v))
        while True:
            delays[i] = grid[j]
            if i == 0 or p.segment[i] != p.segment[i - 1]:
                break
            j = int(picks[i][j])
            i -= 1
    return total, delays


def _counts(p: Packets, delays: np.ndarray) -> tuple[np.ndarray, int]:
    """A trajectory's delays of the packets it plays, and how many come late."""
    ok = ~np.isnan(p.lateness_ms)
    late = ok & (delays < np.nan_to_num(p.lateness_ms, nan=-1e9))
    return delays[ok & ~late], int(late.sum())


def ruled_out(p: Packets, threshold: float, budget: int, up: float, down: float, q: float,
              mus: tuple[float, ...]) -> bool:
    """True if no trajectory has <= ``budget`` late packets and half or fewer of the packets
    above ``threshold`` (some ``mu``'s dual value exceeds half the packets)."""
    half = np.count_nonzero(~np.isnan(p.lateness_ms)) / 2.0
    return any(_dp(p, threshold, mu, up, down, q)[0] - mu * budget > half for mu in mus)


def median_bound(trace: dict, packet_ms: float = 40.0, late_pct: float = 0.5,
                 up_ms: float | None = None, down_ms: float | None = None, q: float = 5.0,
                 resolution_ms: float = 5.0) -> Bound:
    """The lowest median added delay any buffer could have on ``trace`` with late-concealed <=
    ``late_pct`` % and no stall, stretching speech by at most +``up_ms``/-``down_ms`` per
    packet (default: the worker's 3-as-4 and 4-as-3)."""
    p = packets(trace, packet_ms)
    up = packet_ms / 3.0 if up_ms is None else up_ms
    down = packet_ms / 4.0 if down_ms is None else down_ms
    budget = int(math.floor(late_pct / 100.0 * len(p.segment)))
    mus = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    lo, hi = 0.0, float(np.nanmax(p.lateness_ms)) + q
    if not ruled_out(p, lo, budget, up, down, q, mus):
        hi = lo
    while hi - lo > resolution_ms:  # ruled out at lo, not at hi
        mid = (lo + hi) / 2
        if ruled_out(p, mid, budget, up, down, q, mus):
            lo = mid
        else:
            hi = mid
    # the clairvoyant trajectory at the answer: the smallest mu that keeps it within budget
    med, late = float("nan"), float("nan")
    for mu in mus:
        _, d = _dp(p, hi, mu, up, down, q, trajectory=True)
        played, n_late = _counts(p, d)
        med, late = float(np.median(played)), 100.0 * n_late / len(p.segment)
        if n_late <= budget:
            break
    return Bound(round(lo, 1), budget, round(med, 1), round(late, 3), round(up, 2),
                 round(down, 2))


def fixed_in_hindsight(trace: dict, packet_ms: float = 40.0, late_pct: float = 0.5) -> float:
    """The lowest constant added delay with late-concealed <= ``late_pct`` %, chosen knowing
    the whole trace: what a buffer that holds one steady delay could reach at best."""
    p = packets(trace, packet_ms)
    budget = int(math.floor(late_pct / 100.0 * len(p.segment)))
    r = np.sort(p.lateness_ms[~np.isnan(p.lateness_ms)])[::-1]
    return float(max(0.0, r[budget])) if budget < len(r) else 0.0

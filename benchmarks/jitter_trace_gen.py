"""Our own network traces for the jitter-buffer benchmark, beside ``shared/traces``: the
conditions those four do not cover. Deterministic (fixed seeds), built like the shared ones
(10 minutes of 20 ms packets, ``arrival_ms`` with None for lost, ``segment``):

==============  ==============================================================================
congestion      a queue that fills and drains: every 25-60 s the delay ramps up 100-300 ms over
                4-12 s and back down over 4-12 s, 8 ms half-normal jitter (in order)
heavy_tail      Pareto jitter (alpha 1.6, scale 8 ms, capped at 800 ms): mostly tight, with a
                long tail of late packets (reordered)
loss_bursts     Gilbert-Elliott loss: bursts of 2-10 lost packets about every 8 s, 0.3 % random
                loss besides, 12 ms half-normal jitter
clock_drift     the sender's clock 0.5 % slow for 5 minutes, then 0.5 % fast (1.5 s of drift
                each way), 10 ms half-normal jitter
turns           a conversation: turns of 2-15 s with 0.5-4 s between them, 20 ms half-normal
                jitter and 0.5 % of packets 60-200 ms late
==============  ==============================================================================

    .venv/bin/python -m benchmarks.jitter_trace_gen [--out DIR]   # writes <name>.json each
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PACKET_MS = 20.0
N = 30_000  # 10 minutes


def _trace(name: str, description: str, arrival: np.ndarray, lost: np.ndarray | None = None,
           segment: np.ndarray | None = None) -> dict:
    arr = [None if lost is not None and lost[k] else round(float(a), 3)
           for k, a in enumerate(arrival)]
    seg = [0] * len(arrival) if segment is None else [int(s) for s in segment]
    return {"name": name, "description": description, "packet_ms": PACKET_MS,
            "arrival_ms": arr, "segment": seg}


def congestion(seed: int = 11) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(N) * PACKET_MS
    extra = np.zeros(N)
    at = rng.uniform(5_000, 20_000)
    while at < t[-1]:
        height = rng.uniform(100, 300)
        up, down = rng.uniform(4_000, 12_000), rng.uniform(4_000, 12_000)
        rise = (t >= at) & (t < at + up)
        fall = (t >= at + up) & (t < at + up + down)
        extra[rise] = np.maximum(extra[rise], height * (t[rise] - at) / up)
        extra[fall] = np.maximum(extra[fall], height * (1 - (t[fall] - at - up) / down))
        at += up + down + rng.uniform(25_000, 60_000) - (up + down) / 2
    arrival = t + 30 + extra + np.abs(rng.normal(0, 8, N))
    arrival = np.maximum.accumulate(arrival)  # a queue keeps order
    return _trace("congestion", "delay ramps of 100-300 ms over 4-12 s up and down, 8 ms jitter",
                  arrival)


def heavy_tail(seed: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    jitter = np.minimum(800.0, (rng.pareto(1.6, N)) * 8.0)
    arrival = np.arange(N) * PACKET_MS + 30 + jitter
    return _trace("heavy_tail", "Pareto jitter (alpha 1.6, scale 8 ms, capped at 800 ms)", arrival)


def loss_bursts(seed: int = 13) -> dict:
    rng = np.random.default_rng(seed)
    lost = rng.random(N) < 0.003
    k = int(rng.integers(100, 600))
    while k < N:
        lost[k:k + int(rng.integers(2, 11))] = True
        k += int(rng.exponential(400)) + 20  # about every 8 s
    arrival = np.arange(N) * PACKET_MS + 30 + np.abs(rng.normal(0, 12, N))
    return _trace("loss_bursts", "bursts of 2-10 lost packets about every 8 s, 0.3 % random loss, "
                  "12 ms jitter", arrival, lost)


def clock_drift(seed: int = 14) -> dict:
    rng = np.random.default_rng(seed)
    half = N // 2
    step = np.where(np.arange(N) < half, PACKET_MS * 1.005, PACKET_MS * 0.995)
    send = np.concatenate([[0.0], np.cumsum(step)[:-1]])
    arrival = send + 30 + np.abs(rng.normal(0, 10, N))
    return _trace("clock_drift", "sender clock 0.5 % slow for 5 min, then 0.5 % fast; 10 ms jitter",
                  arrival)


def turns(seed: int = 15) -> dict:
    rng = np.random.default_rng(seed)
    arrival, segment, t, s = [], [], 0.0, 0
    while len(arrival) < N:
        n = int(rng.uniform(2_000, 15_000) / PACKET_MS)
        base = t + np.arange(n) * PACKET_MS + 30 + np.abs(rng.normal(0, 20, n))
        late = rng.random(n) < 0.005
        base[late] += rng.uniform(60, 200, int(late.sum()))
        arrival.extend(base.tolist())
        segment.extend([s] * n)
        t += n * PACKET_MS + rng.uniform(500, 4_000)
        s += 1
    return _trace("turns", "turns of 2-15 s, 0.5-4 s apart; 20 ms jitter, 0.5 % of packets "
                  "60-200 ms late", np.asarray(arrival[:N]), segment=np.asarray(segment[:N]))


GENERATORS = {"congestion": congestion, "heavy_tail": heavy_tail, "loss_bursts": loss_bursts,
              "clock_drift": clock_drift, "turns": turns}


def generated() -> dict[str, dict]:
    return {name: gen() for name, gen in GENERATORS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/data/traces"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, trace in generated().items():
        (args.out / f"{name}.json").write_text(json.dumps(trace))
        print(args.out / f"{name}.json")


if __name__ == "__main__":
    main()

"""Jitter-buffer benchmark: replay the standard network traces through the adaptive buffer and
through seed 003's fixed settings; report underruns per 10 minutes and the median / p95 added
delay of each (see shared/traces/README.md for the traces and how they are scored).

    .venv/bin/python -m benchmarks.jitter_traces [--traces DIR]

Writes benchmarks/results/jitter_traces.json and .png. A simulated clock: the numbers do not
depend on the machine's speed (the machine is still named).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from avatar_pipeline.jitter import SEED_FIXED, JitterConfig, replay_trace  # noqa: E402
from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402

TRACES = ("wifi", "handover", "lossy", "tts_burst")
CONFIGS = {"adaptive": JitterConfig(), "seed fixed": SEED_FIXED}


def default_traces_dir() -> Path:
    env = os.environ.get("AVATAR_TRACES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "traces"


def run(traces_dir: Path) -> dict:
    rows, results = [], {}
    for name in tqdm(TRACES, desc="traces"):
        trace = json.loads((traces_dir / f"{name}.json").read_text())
        for cname, cfg in CONFIGS.items():
            r = replay_trace(trace["arrival_ms"], trace["segment"], cfg, name, cname)
            rows.append(r.summary())
            results[(name, cname)] = r
    payload = {
        "benchmark": "jitter_traces",
        "machine": machine(),
        "configs": {k: v.__dict__ for k, v in CONFIGS.items()},
        "goal": {"underruns_per_10min_wifi": 1, "delay_median_ms": 100},
        "results": rows,
    }
    write_json("jitter_traces", payload)
    plot(results, payload["machine"])
    return payload


def plot(results: dict, m: dict) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = np.arange(len(TRACES))
    w = 0.38
    colors = {"adaptive": "#1f77b4", "seed fixed": "#ff7f0e"}
    for i, cname in enumerate(CONFIGS):
        rs = [results[(t, cname)] for t in TRACES]
        axes[0].bar(x + (i - 0.5) * w, [r.underruns_per_10min for r in rs], w, label=cname,
                    color=colors[cname])
        med = [float(np.median(r.delays_ms)) for r in rs]
        p95 = [float(np.percentile(r.delays_ms, 95)) for r in rs]
        axes[1].bar(x + (i - 0.5) * w, med, w, label=f"{cname} median", color=colors[cname])
        axes[1].scatter(x + (i - 0.5) * w, p95, marker="_", s=300, color="k",
                        label="p95" if i == 0 else None, zorder=3)
    axes[0].axhline(1, ls="--", c="gray", lw=1)
    axes[0].set(title="underruns per 10 min (goal ≤ 1 on wifi)", xticks=x, xticklabels=TRACES)
    axes[1].axhline(100, ls="--", c="gray", lw=1)
    axes[1].set(title="added delay, ms (goal: median ≤ 100)", xticks=x, xticklabels=TRACES)
    axes[0].legend()
    axes[1].legend(fontsize=8)
    for t in ("wifi", "handover"):
        r = results[(t, "adaptive")]
        axes[2].plot(np.arange(len(r.target_ms)), r.target_ms, label=f"{t} target")
    axes[2].set(title="adaptive target delay over time", xlabel="s", ylabel="ms")
    axes[2].legend()
    fig.suptitle(f"Jitter buffer on the standard traces — {machine_label(m)} (simulated clock)",
                 fontsize=10)
    fig.tight_layout()
    path = RESULTS / "jitter_traces.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, default=default_traces_dir())
    args = ap.parse_args()
    payload = run(args.traces)
    for row in payload["results"]:
        print(f"{row['trace']:10s} {row['config']:11s} underruns/10min {row['underruns_per_10min']:5}"
              f"  delay median {row['delay_median_ms']:6} ms  p95 {row['delay_p95_ms']:6} ms")


if __name__ == "__main__":
    main()

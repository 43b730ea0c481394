"""Composition cost per 512x512 frame, numpy vs torch-CPU, batch 1/8/64 (and, with --gpu, torch on
CUDA at batch 64/256/1024 plus the neural slot at batch 16/64).

    python benchmarks/compose_bench.py            # CPU: writes benchmarks/results/compose_bench.{json,png}
    python benchmarks/compose_bench.py --gpu      # on a GPU machine: compose_bench_gpu.{json,png}

Every number is the median of repeated timed calls in one run; compare them as ratios. Work is
pinned to one thread (numpy is single-threaded here; torch gets ``set_num_threads(1)``) so
"sessions at 25 fps per core" is 40 ms / (ms per frame).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar_pipeline.avatar.default import default_avatar  # noqa: E402
from avatar_pipeline.compose import FrameState, make_compositor  # noqa: E402
from avatar_pipeline.viseme_set import NUM_VISEMES  # noqa: E402
from benchmarks.machine import machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_MS = 2.0
FPS = 25


def make_states(aid: str, n: int, seed: int = 0) -> list[FrameState]:
    """Realistic load: top-3 blends of random visemes, ~5 % of sessions mid-blink."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = rng.random(NUM_VISEMES).astype(np.float32) ** 4
        blink = float(rng.uniform(0.2, 1.0)) if rng.random() < 0.05 else 0.0
        out.append(FrameState(aid, w, t=float(rng.uniform(0, 60)), blink=blink,
                              idle_phase=float(rng.uniform())))
    return out


def time_compose(comp, states, reps: int, sync=None, to_host: bool = False) -> float:
    """Median seconds per compose() call."""
    for _ in range(3):  # warm up
        b = comp.compose(states)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        b = comp.compose(states)
        if to_host:
            b.numpy()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def encode_cost(asset, n: int = 50) -> float:
    """ms per 512x512 frame to H.264-encode (libx264 veryfast, 1 thread), for context."""
    import av

    comp = make_compositor("numpy", "i420", max_batch=n)
    aid = comp.add_avatar(asset)
    frames = comp.compose(make_states(aid, n)).numpy().copy()
    with tempfile.TemporaryDirectory() as d, av.open(os.path.join(d, "x.mp4"), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width = s.height = 512
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "veryfast", "tune": "zerolatency", "threads": "1"}
        t0 = time.perf_counter()
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(frames[i].reshape(768, 512), format="yuv420p")
            vf.pts = i
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
        return (time.perf_counter() - t0) / n * 1000


def run_cpu(reps: int, rounds: int = 5) -> dict:
    """Configurations are measured round-robin (``rounds`` passes) so load from other processes
    on a shared machine spreads over all of them instead of biasing one."""
    import torch

    torch.set_num_threads(1)
    asset = default_avatar()
    configs = []
    for fmt in ("i420", "rgba"):
        for backend in ("numpy", "torch-cpu"):
            comp = make_compositor(backend, fmt, max_batch=64)
            aid = comp.add_avatar(asset)
            for batch in (1, 8, 64):
                configs.append((fmt, backend, batch, comp, make_states(aid, batch)))
    samples: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for _ in range(rounds):
        for i, (_fmt, _backend, batch, comp, states) in enumerate(configs):
            r = max(3, reps // batch // rounds)
            for _ in range(2):
                comp.compose(states)
            for _ in range(r):
                t0 = time.perf_counter()
                comp.compose(states)
                samples[i].append((time.perf_counter() - t0) / batch)
    rows = []
    for i, (fmt, backend, batch, _comp, _states) in enumerate(configs):
        ms = statistics.median(samples[i]) * 1000
        rows.append({"backend": backend, "format": fmt, "batch": batch,
                     "ms_per_frame": round(ms, 4),
                     "sessions_at_25fps_per_core": round(1000 / FPS / ms, 1),
                     "meets_2ms_target": ms <= TARGET_MS, "samples": len(samples[i])})
        print(f"{fmt:5s} {backend:10s} batch {batch:4d}: {ms:7.3f} ms/frame  "
              f"{1000 / FPS / ms:7.1f} sessions@25fps/core")
    ratios = {}
    for fmt in ("i420", "rgba"):
        for batch in (1, 8, 64):
            n = next(r for r in rows if r["backend"] == "numpy" and r["format"] == fmt
                     and r["batch"] == batch)
            t = next(r for r in rows if r["backend"] == "torch-cpu" and r["format"] == fmt
                     and r["batch"] == batch)
            ratios[f"torch_cpu_over_numpy_{fmt}_b{batch}"] = round(
                t["ms_per_frame"] / n["ms_per_frame"], 3)
    # the neural slot on CPU, for reference (its targets are for a GPU)
    neural = run_neural(asset, batches=(1, 8), reps=max(3, reps // 20), providers=None)
    enc = encode_cost(asset)
    print(f"H.264 encode (libx264 veryfast, 1 thread): {enc:.2f} ms/frame")
    return {"rows": rows, "ratios": ratios, "neural_cpu": neural,
            "h264_encode_ms_per_frame_1thread": round(enc, 3),
            "gpu": "not measured: no GPU on this machine (run with --gpu on a GPU machine)"}


def run_neural(asset, batches, reps: int, providers) -> list[dict]:
    from avatar_pipeline.neural import NeuralRenderer
    from avatar_pipeline.neural.testmodel import DEFAULT_WIDTH, make_test_model

    out = []
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "w2l_test.onnx")
        info = make_test_model(p, width=DEFAULT_WIDTH)
        r = NeuralRenderer(p, providers=providers)
        r.add_avatar(asset)
        base = np.dstack([asset.poses[0], np.full(asset.poses[0].shape[:2] + (1,), 255,
                                                   np.uint8)])
        for batch in batches:
            frames = np.repeat(base[None], batch, 0)
            mels = np.random.default_rng(0).uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
            ids = [asset.id] * batch
            for _ in range(2):
                r.render(frames, mels, ids)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                r.render(frames, mels, ids)
                ts.append(time.perf_counter() - t0)
            ms = statistics.median(ts) / batch * 1000
            out.append({"batch": batch, "ms_per_frame": round(ms, 3),
                        "frames_per_s": round(1000 / ms, 1),
                        "sessions_at_25fps": round(1000 / FPS / ms, 1),
                        "model_params": info["params"],
                        "providers": r.session.get_providers()})
            print(f"neural slot batch {batch:4d}: {ms:8.3f} ms/frame "
                  f"({info['params'] / 1e6:.1f} M params, {r.session.get_providers()[0]})")
    return out


def run_gpu(reps: int, device: str = "cuda") -> dict:
    """``device="cpu"`` runs the same code on CPU torch: a smoke test of this mode only."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu: torch sees no CUDA device")
    sync = torch.cuda.synchronize if device == "cuda" else None
    asset = default_avatar()
    rows = []
    for fmt in ("i420", "rgba"):
        comp = make_compositor("torch", fmt, max_batch=1024, device=device)
        aid = comp.add_avatar(asset)
        for batch in (64, 256, 1024):
            states = make_states(aid, batch)
            for host in (False, True):
                sec = time_compose(comp, states, reps, sync=sync, to_host=host)
                fps = batch / sec
                rows.append({"backend": f"torch-{device}", "format": fmt, "batch": batch,
                             "copy_to_host": host, "ms_per_batch": round(sec * 1000, 3),
                             "frames_per_s": round(fps, 1),
                             "sessions_at_25fps_per_gpu": round(fps / FPS, 1)})
                print(f"{fmt:5s} torch-{device} batch {batch:5d} host={host}: {fps:9.0f} frames/s "
                      f"= {fps / FPS:7.1f} sessions@25fps")
    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                 else ["CPUExecutionProvider"])
    neural = run_neural(asset, batches=(16, 64), reps=reps, providers=providers)
    return {"rows": rows, "neural_gpu": neural}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    rows = result["cpu"]["rows"] if "cpu" in result else []
    labels, vals, colors = [], [], []
    palette = {"numpy": "#2e6270", "torch-cpu": "#e0a030"}
    for r in rows:
        labels.append(f"{r['backend']}\n{r['format']} b{r['batch']}")
        vals.append(r["ms_per_frame"])
        colors.append(palette.get(r["backend"], "#888"))
    if rows:
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.axhline(TARGET_MS, color="crimson", ls="--", lw=1)
        ax.text(len(vals) - 0.5, TARGET_MS * 1.03, "target 2 ms", color="crimson", ha="right",
                fontsize=8)
        ax.set_ylabel("ms per 512x512 frame (1 thread)")
    if "gpu" in result and isinstance(result["gpu"], dict):
        g = [r for r in result["gpu"]["rows"] if not r["copy_to_host"]]
        ax.clear()
        ax.bar(range(len(g)), [r["sessions_at_25fps_per_gpu"] for r in g], color="#4a7")
        ax.set_xticks(range(len(g)))
        ax.set_xticklabels([f"{r['format']} b{r['batch']}" for r in g], fontsize=8)
        ax.axhline(200, color="crimson", ls="--", lw=1)
        ax.set_ylabel("sessions at 25 fps per GPU")
    m = result["machine"]
    ax.set_title(f"Frame composition - {m['cpu']} ({m['cores']} cores)"
                 + (f", {m['gpu']}" if m.get("gpu") else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="measure torch on CUDA + the neural slot")
    p.add_argument("--reps", type=int, default=200, help="timed calls at batch 1")
    p.add_argument("--device", default="cuda", help="with --gpu: 'cpu' smoke-tests the mode")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    from config.logs import setup_logging

    setup_logging("warning")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "compose", "frame": "512x512", "fps": FPS,
              "target_ms_per_frame_cpu": TARGET_MS, "machine": machine(),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if a.gpu:
        result["gpu"] = run_gpu(max(3, a.reps // 10), a.device)
        name = "compose_bench_gpu" if a.device == "cuda" else "compose_bench_gpu_smoke"
    else:
        result["cpu"] = run_cpu(a.reps)
        name = "compose_bench"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    plot(result, out / f"{name}.png")
    print(f"wrote {out / name}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

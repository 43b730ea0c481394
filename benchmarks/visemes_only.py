"""What a visemes-only lesson costs a worker against a video lesson, in one run.

Per session-frame at 25 fps, N sessions speaking without pause, on a simulated clock: the
engine's tick (jitter pull, one batched viseme-model run, and for video one batched 512x512
composition), and for video the VP8 encode of that frame (libvpx realtime, one layer, as the
worker publishes). A visemes-only session is the tick without composition and nothing to
encode (its viseme stream packets are ~1 kB/s of JSON). Sessions per core = frame period /
cost per session-frame.

    .venv/bin/python -m benchmarks.visemes_only [--sizes 1,4,16,64] [--ticks 80]

Writes benchmarks/results/visemes_only.json and .png, naming the machine.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import av
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from avatar_pipeline.avatar import AvatarRegistry  # noqa: E402
from avatar_pipeline.engine import AvatarEngine, EngineConfig  # noqa: E402
from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from benchmarks.worker_engine import FPS, RATE, SimClock, speech_pcm  # noqa: E402
from config.logs import setup_logging  # noqa: E402


def tick_ms_per_session(asset, pcm, n: int, render: bool, ticks: int) -> tuple[float, list]:
    """Median tick ms per session-frame, and the last tick's frames (to encode)."""
    clock = SimClock()
    eng = AvatarEngine(asset, EngineConfig(fps=FPS, sample_rate=RATE, max_batch=max(64, n)),
                       clock=clock)
    frames: list = []
    sessions = [eng.open_session(frames.append, render=render) for _ in range(n)]
    times = []
    for k in range(ticks + 20):
        if k % 50 == 0:  # keep every session speaking
            for s in sessions:
                s.push_audio(pcm)
        frames.clear()
        t0 = time.perf_counter()
        eng.tick()
        if k >= 20:  # after the jitter buffers started playing
            times.append(time.perf_counter() - t0)
        clock.t += 1 / FPS
    return float(np.median(times)) * 1000 / n, list(frames)


def vp8_ms_per_frame(asset, frames: list, repeats: int = 60) -> float:
    c = av.CodecContext.create("libvpx", "w")
    c.width, c.height, c.pix_fmt = asset.width, asset.height, "yuv420p"
    c.time_base, c.framerate, c.bit_rate = Fraction(1, FPS), Fraction(FPS, 1), 1_200_000
    c.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "threads": "1"}
    y = asset.width * asset.height
    times = []
    for i in range(repeats + 10):
        buf = np.frombuffer(frames[i % len(frames)].video, np.uint8)
        f = av.VideoFrame(asset.width, asset.height, "yuv420p")
        f.planes[0].update(buf[:y])
        f.planes[1].update(buf[y:y + y // 4])
        f.planes[2].update(buf[y + y // 4:])
        t0 = time.perf_counter()
        c.encode(f)
        if i >= 10:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,16,64")
    ap.add_argument("--ticks", type=int, default=80)
    args = ap.parse_args()
    setup_logging("warning", "console")
    asset = AvatarRegistry().default()
    pcm = speech_pcm()
    period_ms = 1000 / FPS
    rows = []
    for n in tqdm([int(x) for x in args.sizes.split(",")], desc="sessions"):
        video_tick, frames = tick_ms_per_session(asset, pcm, n, True, args.ticks)
        encode = vp8_ms_per_frame(asset, frames)
        visemes_tick, _ = tick_ms_per_session(asset, pcm, n, False, args.ticks)
        video = video_tick + encode
        rows.append({"sessions": n, "video_tick_ms": round(video_tick, 3),
                     "vp8_encode_ms": round(encode, 3), "video_ms": round(video, 3),
                     "visemes_only_ms": round(visemes_tick, 3),
                     "video_sessions_per_core": round(period_ms / video, 1),
                     "visemes_only_sessions_per_core": round(period_ms / visemes_tick, 1),
                     "ratio": round(video / visemes_tick, 1)})
        print(rows[-1])
    payload = {"benchmark": "visemes_only", "machine": machine(), "fps": FPS,
               "size": [asset.width, asset.height], "rows": rows,
               "median_ratio": float(np.median([r["ratio"] for r in rows]))}
    write_json("visemes_only", payload)
    plot(payload)


def plot(p: dict) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ns = [r["sessions"] for r in p["rows"]]
    ax.plot(ns, [r["video_sessions_per_core"] for r in p["rows"]], "o-",
            label="video lesson (compose + VP8 encode)")
    ax.plot(ns, [r["visemes_only_sessions_per_core"] for r in p["rows"]], "s-",
            label="visemes-only lesson (model only)")
    ax.set(xscale="log", yscale="log", xticks=ns, xticklabels=ns, xlabel="sessions batched",
           ylabel="sessions per CPU core at 25 fps",
           title=f"Visemes only: {p['median_ratio']:.1f}x the sessions per core (median)")
    ax.legend()
    fig.suptitle(machine_label(p["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "visemes_only.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

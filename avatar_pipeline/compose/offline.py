"""Offline rendering: a whole viseme track -> frames of one session, through the same batched
compositor the worker uses (frames are composed ``batch`` at a time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from avatar_pipeline.avatar.asset import AvatarAsset
from avatar_pipeline.compose import SessionClock, make_compositor
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEMES
from config.logs import get_logger

log = get_logger(__name__)


def render_frames(asset: AvatarAsset, track: np.ndarray, fps: int, seed: int = 0,
                  backend: str = "numpy", fmt: str = "i420", batch: int = 25,
                  post: Callable[[np.ndarray, int], None] | None = None
                  ) -> Iterator[np.ndarray]:
    """Yield one frame per row of ``track`` (I420 rows or RGBA arrays). Each yielded array is a
    view into the compositor's buffer: use it (encode it) before asking for the next batch.
    ``post(frames, first_index)`` may repaint a batch of RGBA frames in place (the neural
    slot does)."""
    track = np.asarray(track, np.float32)
    if track.ndim != 2 or track.shape[1] != NUM_VISEMES:
        raise ValueError(f"viseme track must be (n_frames, {NUM_VISEMES}), got {track.shape}")
    if post is not None and fmt != "rgba":
        raise ValueError("post-processing works on RGBA frames")
    comp = make_compositor(backend, fmt=fmt, max_batch=batch)
    aid = comp.add_avatar(asset)
    clock = SessionClock(seed, asset)
    for start in range(0, len(track), batch):
        rows = range(start, min(start + batch, len(track)))
        states = [clock.state(aid, track[i], i / fps) for i in rows]
        frames = comp.compose(states).numpy()
        if fmt == "rgba":
            frames = frames.reshape(len(states), comp.height, comp.width, 4)
            if post is not None:
                post(frames, start)
        yield from frames


def draw_timeline(path, pcm: np.ndarray, sample_rate: int, track: np.ndarray, fps: int,
                  title: str = "") -> None:
    """The waveform on top and the viseme track (15 rows) under it, on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dur = len(pcm) / sample_rate
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True,
                                   gridspec_kw={"height_ratios": [1, 2.2]})
    t = np.arange(len(pcm)) / sample_rate
    step = max(1, len(pcm) // 20000)
    ax1.plot(t[::step], pcm[::step] / 32768.0, lw=0.6, color="#2e6270")
    ax1.set_ylabel("audio")
    ax1.set_ylim(-1, 1)
    if title:
        ax1.set_title(title, fontsize=10)
    ax2.imshow(np.asarray(track).T, aspect="auto", origin="upper", cmap="magma_r",
               extent=(0, len(track) / fps, NUM_VISEMES - 0.5, -0.5), vmin=0, vmax=1,
               interpolation="nearest")
    ax2.set_yticks(range(NUM_VISEMES))
    ax2.set_yticklabels(VISEMES, fontsize=8)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("viseme")
    ax2.set_xlim(0, max(dur, len(track) / fps))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mouth_sheet(asset: AvatarAsset, cols: int = 5, pad: float = 0.25) -> np.ndarray:
    """The 15 visemes of any avatar as composed frames, cropped to the lower face and labelled
    (RGB uint8): what a viewer sees for each mouth shape."""
    from PIL import Image, ImageDraw, ImageFont

    from avatar_pipeline.compose import FrameState, NumpyCompositor

    comp = NumpyCompositor("rgba", max_batch=NUM_VISEMES)
    aid = comp.add_avatar(asset)
    states = []
    for i in range(NUM_VISEMES):
        w = np.zeros(NUM_VISEMES, np.float32)
        w[i] = 1
        states.append(FrameState(aid, w, t=0.0))
    batch = comp.compose(states)
    b = asset.mouth_box
    px, py = int(b.width * pad), int(b.height * pad)
    x0, y0 = max(0, b.x - px // 2), max(0, b.y - py)
    x1, y1 = min(asset.width, b.x + b.width + px // 2), min(asset.height, b.y + b.height)
    tw, th = x1 - x0, y1 - y0
    label = 26
    rows = -(-NUM_VISEMES // cols)
    sheet = Image.new("RGB", (cols * tw, rows * (th + label)), (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for i, v in enumerate(VISEMES):
        tile = Image.fromarray(np.ascontiguousarray(batch.rgba(i)[y0:y1, x0:x1, :3]))
        x, y = (i % cols) * tw, (i // cols) * (th + label)
        sheet.paste(tile, (x, y + label))
        d.text((x + 8, y + 3), f"{i}  {v}", fill=(30, 30, 30), font=font)
    return np.asarray(sheet)

"""What both compositors share: the per-frame state, the blink schedule, pose selection and the
prepared (render-ready) form of an avatar.

The worker calls a compositor once per tick for all its sessions::

    comp = NumpyCompositor(fmt="i420", max_batch=64)      # or TorchCompositor(device="cuda")
    comp.add_avatar(asset)                                  # once per avatar (no detection later)
    sessions = {sid: SessionClock(seed=hash(sid))}          # per session: idle phase + blinks
    states = [sessions[s].state(asset.id, weights[s], t[s]) for s in active]
    batch = comp.compose(states)                            # one call, N frames
    for i, s in enumerate(active):
        rtc.VideoFrame(w, h, VideoBufferType.I420, batch.data(i))   # a memoryview, no copy

Frames live in a preallocated ring of two buffers: a batch stays valid until the call after the
next one, so the caller can hand the previous tick's frames to the encoder while composing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatar_pipeline.avatar.asset import MID_PAIRS, AvatarAsset
from avatar_pipeline.viseme_set import NUM_VISEMES, SILENCE

TOP_K = 2
"""Visemes considered per frame (the largest weights, renormalised): the mouth shown is the
top one's or the one between the top two (``MID_FROM``)."""

SHARPEN = 2.0
"""Weights are raised to this power before the top-k renormalisation."""

MID_FROM = 0.25
"""One mouth is drawn per frame, never two cross-faded (a learner would see two sets of lips):
the top viseme's, or, once the runner-up has this share of the top two, the asset's mouth drawn
half way between them (``AvatarAsset.mids``)."""

TOLERANCE = 1
"""numpy and torch frames agree within this many uint8 levels per channel (float32 rounding)."""

# BT.601 limited range, as libyuv / LiveKit use for I420 <-> RGB.
_YUV = np.array([
    [0.2568, 0.5041, 0.0979],
    [-0.1482, -0.2910, 0.4392],
    [0.4392, -0.3678, -0.0714],
], dtype=np.float32)
_YUV_OFF = np.array([16.0, 128.0, 128.0], dtype=np.float32)


@dataclass
class FrameState:
    """One session's request for one frame."""

    avatar_id: str
    weights: np.ndarray  # (15,) viseme weights, any scale >= 0
    t: float  # seconds since the session started (drives idle motion)
    blink: float = 0.0  # 0 = eyes open .. 1 = shut
    idle_phase: float = 0.0  # per-session offset into the idle cycle, 0..1


class BlinkSchedule:
    """Deterministic blinks for one session: intervals drawn from a seeded generator
    (at least 1.2 s apart, ``mean_interval_s`` on average), each a quick close and a slower open."""

    def __init__(self, seed: int, mean_interval_s: float = 4.0, duration_s: float = 0.16):
        self._rng = np.random.default_rng(seed & 0xFFFFFFFF)
        self.mean = max(mean_interval_s, 1.5)
        self.duration = duration_s
        self._starts: list[float] = [float(0.8 + self._rng.uniform(0, self.mean))]

    def _extend(self, t: float) -> None:
        while self._starts[-1] <= t:
            gap = 1.2 + self._rng.exponential(self.mean - 1.2)
            self._starts.append(self._starts[-1] + float(gap))

    def amount(self, t: float) -> float:
        self._extend(t)
        import bisect

        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        x = (t - self._starts[i]) / self.duration
        if x >= 1.0:
            return 0.0
        return x / 0.4 if x < 0.4 else (1.0 - x) / 0.6

    def amounts(self, ts: np.ndarray) -> np.ndarray:
        return np.array([self.amount(float(t)) for t in ts], dtype=np.float32)


class SessionClock:
    """Per-session idle phase and blink schedule derived from one seed."""

    def __init__(self, seed: int, asset: AvatarAsset | None = None):
        self.seed = seed
        self.idle_phase = (seed * 0.6180339887) % 1.0
        self.blinks = BlinkSchedule(
            seed,
            asset.blink_mean_interval_s if asset else 4.0,
            asset.blink_duration_s if asset else 0.16,
        )

    def state(self, avatar_id: str, weights: np.ndarray, t: float) -> FrameState:
        return FrameState(avatar_id, weights, t, self.blinks.amount(t), self.idle_phase)


_MID_INDEX = np.full((NUM_VISEMES, NUM_VISEMES), -1, np.int64)
for _k, (_i, _j) in enumerate(MID_PAIRS):
    _MID_INDEX[_i, _j] = _MID_INDEX[_j, _i] = NUM_VISEMES + _k


def pick_mouth(idx: np.ndarray, w: np.ndarray, has_mids: bool) -> np.ndarray:
    """(N, k) top visemes and weights -> (N,) the one sprite each frame shows: the top viseme
    (0..14) or the in-between of the top two (15 + its :data:`MID_PAIRS` index)."""
    top = idx[:, 0].copy()
    if not has_mids or idx.shape[1] < 2:
        return top
    pair = w[:, 0] + w[:, 1]
    share = np.where(pair > 0, w[:, 1] / np.maximum(pair, 1e-12), 0)
    mid = _MID_INDEX[idx[:, 0], idx[:, 1]]
    return np.where((share >= MID_FROM) & (mid >= 0), mid, top)


def top_k(weights: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """(N, 15) weights -> (N, k) indices and renormalised, sharpened (``SHARPEN``) weights.
    All-zero rows mean silence."""
    w = np.clip(np.asarray(weights, dtype=np.float32).reshape(-1, NUM_VISEMES), 0, None)
    w = np.nan_to_num(w, nan=0.0, posinf=0.0) ** np.float32(SHARPEN)
    idx = np.argsort(-w, axis=1, kind="stable")[:, :k]
    sel = np.take_along_axis(w, idx, axis=1)
    tot = sel.sum(1, keepdims=True)
    empty = tot[:, 0] <= 1e-6
    sel = np.where(tot > 1e-6, sel / np.maximum(tot, 1e-12), 0).astype(np.float32)
    idx[empty, 0] = SILENCE
    sel[empty, 0] = 1.0
    return idx.astype(np.int64), sel


def rgb_to_i420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., H, W, 3) RGB (uint8 or float of integers) -> Y (H, W), U, V (H/2, W/2) uint8."""
    f = rgb.astype(np.float32)
    y = _dot3(f, _YUV[0]) + _YUV_OFF[0]
    sub = ((f[..., 0::2, 0::2, :] + f[..., 1::2, 0::2, :])
           + (f[..., 0::2, 1::2, :] + f[..., 1::2, 1::2, :])) * np.float32(0.25)
    u = _dot3(sub, _YUV[1]) + _YUV_OFF[1]
    v = _dot3(sub, _YUV[2]) + _YUV_OFF[2]
    cv = [np.clip(np.rint(a), 0, 255).astype(np.uint8) for a in (y, u, v)]
    return cv[0], cv[1], cv[2]


def _dot3(f, c):
    # written out (not a matmul) so numpy and torch sum in the same order
    return f[..., 0] * c[0] + f[..., 1] * c[1] + f[..., 2] * c[2]


def i420_to_rgb(buf: np.ndarray, width: int, height: int) -> np.ndarray:
    """Decode one I420 frame (for tests and previews)."""
    return i420_region_to_rgb(buf, width, height, 0, 0, width, height)


def _planes(buf: np.ndarray, width: int, height: int):
    n = width * height
    return (buf[:n].reshape(height, width), buf[n:n + n // 4].reshape(height // 2, width // 2),
            buf[n + n // 4:n + n // 2].reshape(height // 2, width // 2))


def i420_region_to_rgb(buf: np.ndarray, width: int, height: int, x: int, y: int, w: int,
                       h: int) -> np.ndarray:
    """The RGB pixels of an even-aligned region (``x``, ``y``, ``w``, ``h`` even) of one I420
    frame, (h, w, 3) uint8."""
    yp, up, vp = _planes(buf, width, height)
    yy = yp[y:y + h, x:x + w].astype(np.float32) - 16
    u = up[y // 2:(y + h) // 2, x // 2:(x + w) // 2].astype(np.float32) - 128
    v = vp[y // 2:(y + h) // 2, x // 2:(x + w) // 2].astype(np.float32) - 128
    u = u.repeat(2, 0).repeat(2, 1)
    v = v.repeat(2, 0).repeat(2, 1)
    r = 1.164 * yy + 1.596 * v
    g = 1.164 * yy - 0.392 * u - 0.813 * v
    b = 1.164 * yy + 2.017 * u
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def write_i420_region(buf: np.ndarray, width: int, height: int, x: int, y: int,
                      rgb: np.ndarray, mask: np.ndarray) -> None:
    """Encode ``rgb`` (h, w, 3) into an even-aligned region of an I420 frame in place, only where
    ``mask`` (h, w) is set (for chroma: each 2x2 block with any pixel set), so pixels around a
    pasted shape keep their exact bytes."""
    h, w = rgb.shape[:2]
    yp, up, vp = _planes(buf, width, height)
    ny, nu, nv = rgb_to_i420_planes(rgb)
    m = np.asarray(mask, bool)
    mc = m.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))
    ry = yp[y:y + h, x:x + w]
    ry[m] = ny[m]
    for plane, new in ((up, nu), (vp, nv)):
        rc = plane[y // 2:(y + h) // 2, x // 2:(x + w) // 2]
        rc[mc] = new[mc]


def pose_index(t, phase, period_s: float, n_poses: int) -> np.ndarray:
    """The idle pose shown at session time ``t`` (s) with idle ``phase`` (0..1)."""
    p = (np.asarray(t, np.float64) / period_s + np.asarray(phase, np.float64)) % 1.0
    return (np.floor(p * n_poses + 0.5).astype(np.int64)) % n_poses


def head_offset(asset: AvatarAsset, t: float, phase: float) -> tuple[int, int]:
    """The head's (dx, dy) in the pose shown at session time ``t``, rounded as the
    compositors round it."""
    i = int(pose_index(t, phase, asset.idle_period_s, len(asset.poses)))
    dx, dy = np.rint(asset.head_offsets[i]).astype(np.int64)
    return int(dx), int(dy)


@dataclass
class PreparedAvatar:
    """An avatar laid out for composition (numpy arrays; the torch backend moves them).

    Sprites are premultiplied float32 (colour 0..255, alpha 0..1) and padded to even-aligned
    windows: ``blink[py, px]`` is the stack for a window whose origin is (px, py) pixels left/up
    of the sprite's top-left corner. Windows are even in size and origin, so an I420 frame can be
    updated in place, plane by plane. Mouths (15, plus the in-betweens when the asset has them)
    are kept once, with a pixel of padding, and cut into windows by :meth:`mouth_window`.
    """

    asset_id: str
    width: int
    height: int
    poses_rgb: np.ndarray  # (P, H, W, 3) uint8
    poses_rgba: np.ndarray  # (P, H, W, 4) uint8
    poses_i420: np.ndarray  # (P, H*W*3/2) uint8
    offsets: np.ndarray  # (P, 2) int64 rounded head offsets
    mouth: np.ndarray  # (15 [+ len(MID_PAIRS)], wh + 1, ww + 1, 4) float32, sprite at (1, 1)
    mouth_xy: tuple[int, int]
    blink: np.ndarray  # (2, 2, B, eh, ew, 4) float32
    eyes_xy: tuple[int, int]
    period_s: float

    @property
    def has_mids(self) -> bool:
        return self.mouth.shape[0] > NUM_VISEMES

    @property
    def mouth_window_size(self) -> tuple[int, int]:
        return self.mouth.shape[1] - 1, self.mouth.shape[2] - 1

    def mouth_window(self, sprite: int, py: int, px: int) -> np.ndarray:
        """Mouth ``sprite``'s window whose origin is (px, py) left/up of it (a view)."""
        hh, ww = self.mouth_window_size
        return self.mouth[sprite, 1 - py:1 - py + hh, 1 - px:1 - px + ww]

    @property
    def n_poses(self) -> int:
        return int(self.poses_rgb.shape[0])

    def pose_index(self, t: np.ndarray, phase: np.ndarray) -> np.ndarray:
        return pose_index(t, phase, self.period_s, self.n_poses)

    def windows(self, pose_idx: np.ndarray, xy: tuple[int, int]):
        """Window origins (wx, wy) and parities (px, py) of a sprite for the given poses."""
        off = self.offsets[pose_idx]
        x = xy[0] + off[:, 0]
        y = xy[1] + off[:, 1]
        return x & ~1, y & ~1, x & 1, y & 1


def _premul_windows(sprites: np.ndarray) -> np.ndarray:
    """(S, h, w, 4) uint8 RGBA -> (2, 2, S, h + 2 (+1), w + 2 (+1), 4) premultiplied float32,
    padded so the window size is even and the sprite sits at each parity offset."""
    s, h, w, _ = sprites.shape
    hh, ww = h + 2 + (h % 2), w + 2 + (w % 2)
    f = sprites.astype(np.float32)
    a = f[..., 3:4] / 255.0
    pm = np.concatenate([f[..., :3] * a, a], -1)
    out = np.zeros((2, 2, s, hh, ww, 4), np.float32)
    for py in (0, 1):
        for px in (0, 1):
            out[py, px, :, py:py + h, px:px + w] = pm
    return out


def _premul_padded(sprites: np.ndarray) -> np.ndarray:
    """(S, h, w, 4) uint8 RGBA -> (S, hh + 1, ww + 1, 4) premultiplied float32 with the sprite at
    (1, 1), where (hh, ww) is the even window size of :func:`_premul_windows`."""
    s, h, w, _ = sprites.shape
    hh, ww = h + 2 + (h % 2), w + 2 + (w % 2)
    f = sprites.astype(np.float32)
    a = f[..., 3:4] / 255.0
    out = np.zeros((s, hh + 1, ww + 1, 4), np.float32)
    out[:, 1:1 + h, 1:1 + w] = np.concatenate([f[..., :3] * a, a], -1)
    return out


def prepare_avatar(asset: AvatarAsset) -> PreparedAvatar:
    asset.validate()
    poses = np.ascontiguousarray(asset.poses)
    p, h, w, _ = poses.shape
    rgba = np.empty((p, h, w, 4), np.uint8)
    rgba[..., :3] = poses
    rgba[..., 3] = 255
    i420 = np.empty((p, h * w * 3 // 2), np.uint8)
    for i in range(p):
        y, u, v = rgb_to_i420_planes(poses[i])
        i420[i] = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    offsets = np.rint(asset.head_offsets).astype(np.int64)
    return PreparedAvatar(
        asset_id=asset.id or asset.name,
        width=w,
        height=h,
        poses_rgb=poses,
        poses_rgba=rgba,
        poses_i420=i420,
        offsets=offsets,
        mouth=_premul_padded(asset.mouths if asset.mids is None
                             else np.concatenate([asset.mouths, asset.mids])),
        mouth_xy=(asset.mouth_box.x, asset.mouth_box.y),
        blink=_premul_windows(asset.blinks),
        eyes_xy=(asset.eyes_box.x, asset.eyes_box.y),
        period_s=asset.idle_period_s,
    )


def frame_nbytes(fmt: str, width: int, height: int) -> int:
    if fmt == "rgba":
        return width * height * 4
    if fmt == "i420":
        return width * height * 3 // 2
    raise ValueError(f"unknown frame format {fmt!r} (rgba or i420)")


def blink_levels(blink: np.ndarray, n: int) -> np.ndarray:
    """(N,) blink amounts 0..1 -> (N, n) per-sprite blend weights, applied in order."""
    lv = np.clip(np.asarray(blink, np.float32), 0, 1)[:, None] * n
    return np.clip(lv - np.arange(n, dtype=np.float32)[None, :], 0, 1)


def ceil_even(x: int) -> int:
    return int(math.ceil(x / 2) * 2)

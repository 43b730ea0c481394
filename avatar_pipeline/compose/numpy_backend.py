"""CPU compositor in numpy: one call composes the frames of N sessions into a preallocated
buffer, as RGBA or I420. Only the mouth and eye windows are computed per frame; the rest of each
frame is a copy of a pre-rendered idle pose (already in the output format)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avatar_pipeline.avatar.asset import AvatarAsset
from avatar_pipeline.compose.base import (
    FrameState,
    PreparedAvatar,
    blink_levels,
    frame_nbytes,
    pick_mouth,
    prepare_avatar,
    rgb_to_i420_planes,
    top_k,
)
from config.logs import get_logger

log = get_logger(__name__)


class FrameBatch:
    """N composed frames, rows of one preallocated buffer (valid until the next-but-one call)."""

    def __init__(self, buf, fmt: str, width: int, height: int, host=None):
        self.buf = buf  # (N, nbytes) uint8: numpy array or torch tensor
        self.fmt = fmt
        self.width = width
        self.height = height
        self._host = host  # a pinned CPU tensor to copy a GPU batch into (once)
        self._np: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.buf.shape[0])

    def numpy(self) -> np.ndarray:
        """The frames as a host array (for a GPU batch: one copy, made on first use)."""
        if self._np is None:
            b = self.buf
            if isinstance(b, np.ndarray):
                self._np = b
            elif b.device.type == "cpu":
                self._np = b.numpy()
            elif self._host is not None:
                self._host.copy_(b)
                self._np = self._host.numpy()
            else:
                self._np = b.cpu().numpy()
        return self._np

    def data(self, i: int) -> memoryview:
        """Frame i's bytes, for ``rtc.VideoFrame(width, height, type, data)``. No copy on CPU."""
        return memoryview(self.numpy()[i])

    def rgba(self, i: int) -> np.ndarray:
        if self.fmt != "rgba":
            raise ValueError("this batch is I420; use rgb()")
        return self.numpy()[i].reshape(self.height, self.width, 4)

    def rgb(self, i: int) -> np.ndarray:
        from avatar_pipeline.compose.base import i420_to_rgb

        if self.fmt == "rgba":
            return self.rgba(i)[..., :3]
        return i420_to_rgb(self.numpy()[i], self.width, self.height)


class _Ring:
    """Two preallocated output buffers, used alternately."""

    def __init__(self, alloc, max_batch: int):
        self.max_batch = max_batch
        self.alloc = alloc
        self.bufs = [alloc(max_batch), alloc(max_batch)]
        self.i = 0

    def next(self, n: int):
        if n > self.max_batch:
            self.max_batch = n
            self.bufs = [self.alloc(n), self.alloc(n)]
        self.i ^= 1
        return self.bufs[self.i][:n]


class NumpyCompositor:
    """``compose(states) -> FrameBatch``; all avatars added must share one frame size."""

    backend = "numpy"

    def __init__(self, fmt: str = "rgba", max_batch: int = 64):
        if fmt not in ("rgba", "i420"):
            raise ValueError(f"unknown frame format {fmt!r} (rgba or i420)")
        self.fmt = fmt
        self.max_batch = max_batch
        self.avatars: dict[str, PreparedAvatar] = {}
        self.width = self.height = 0
        self._ring: _Ring | None = None

    def add_avatar(self, asset: AvatarAsset) -> str:
        prep = prepare_avatar(asset)
        if self.avatars and (prep.width, prep.height) != (self.width, self.height):
            raise ValueError(f"avatar {prep.asset_id} is {prep.width}x{prep.height}; this "
                             f"compositor makes {self.width}x{self.height} frames")
        self.width, self.height = prep.width, prep.height
        self.avatars[prep.asset_id] = prep
        if self._ring is None:
            nbytes = frame_nbytes(self.fmt, self.width, self.height)
            self._ring = _Ring(lambda n: np.empty((n, nbytes), np.uint8), self.max_batch)
        log.debug("compose.avatar_added", avatar_id=prep.asset_id, backend=self.backend)
        return prep.asset_id

    def compose(self, states: Sequence[FrameState]) -> FrameBatch:
        if self._ring is None:
            raise RuntimeError("add an avatar first")
        n = len(states)
        out = self._ring.next(n)
        if n == 0:
            return FrameBatch(out, self.fmt, self.width, self.height)
        weights = np.stack([np.asarray(s.weights, np.float32) for s in states])
        idx, w = top_k(weights)
        t = np.array([s.t for s in states], np.float64)
        phase = np.array([s.idle_phase for s in states], np.float64)
        blink = np.array([s.blink for s in states], np.float32)
        ids = [s.avatar_id for s in states]
        for aid in dict.fromkeys(ids):
            av = self.avatars.get(aid)
            if av is None:
                raise KeyError(f"avatar {aid} was not added to this compositor")
            rows = np.array([i for i, a in enumerate(ids) if a == aid])
            pidx = av.pose_index(t[rows], phase[rows])
            self._compose_group(av, out, rows, pidx, idx[rows], w[rows], blink[rows])
        return FrameBatch(out, self.fmt, self.width, self.height)

    # ------------------------------------------------------------------ internals

    def _compose_group(self, av, out, rows, pidx, idx, w, blink):
        src = (av.poses_rgba.reshape(av.n_poses, -1) if self.fmt == "rgba"
               else av.poses_i420)
        mx, my, mpx, mpy = av.windows(pidx, av.mouth_xy)
        ex, ey, epx, epy = av.windows(pidx, av.eyes_xy)
        levels = blink_levels(blink, av.blink.shape[2])
        sprite = pick_mouth(idx, w, av.has_mids)
        for j, r in enumerate(rows):
            p = pidx[j]
            np.copyto(out[r], src[p])
            # mouth: one sprite (pick_mouth) over the pose, premultiplied
            mix = av.mouth_window(sprite[j], mpy[j], mpx[j])
            hh, ww = mix.shape[:2]
            base = av.poses_rgb[p, my[j]:my[j] + hh, mx[j]:mx[j] + ww].astype(np.float32)
            comp = mix[..., :3] + (np.float32(1) - mix[..., 3:4]) * base
            self._write(out[r], mx[j], my[j], comp)
            # blink: sprites half-closed .. closed, each blended by its level
            if levels[j, 0] > 0:
                eh, ew = av.blink.shape[3:5]
                region = av.poses_rgb[p, ey[j]:ey[j] + eh, ex[j]:ex[j] + ew].astype(np.float32)
                for b in range(levels.shape[1]):
                    lv = levels[j, b]
                    if lv > 0:
                        s = av.blink[epy[j], epx[j], b]
                        region = region + lv * (s[..., :3] - s[..., 3:4] * region)
                self._write(out[r], ex[j], ey[j], region)

    def _write(self, frame: np.ndarray, x: int, y: int, comp: np.ndarray) -> None:
        u8 = np.clip(np.rint(comp), 0, 255).astype(np.uint8)
        hh, ww = u8.shape[:2]
        H, W = self.height, self.width
        if self.fmt == "rgba":
            frame.reshape(H, W, 4)[y:y + hh, x:x + ww, :3] = u8
            return
        yp, up, vp = rgb_to_i420_planes(u8)
        n = H * W
        frame[:n].reshape(H, W)[y:y + hh, x:x + ww] = yp
        frame[n:n + n // 4].reshape(H // 2, W // 2)[y // 2:(y + hh) // 2,
                                                    x // 2:(x + ww) // 2] = up
        frame[n + n // 4:].reshape(H // 2, W // 2)[y // 2:(y + hh) // 2,
                                                   x // 2:(x + ww) // 2] = vp

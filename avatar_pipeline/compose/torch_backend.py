"""Batched compositor in torch (CUDA, or CPU torch): the same frames as the numpy backend within
``TOLERANCE`` levels, computed for all sessions of an avatar with gathers/scatters instead of a
per-session loop, so a GPU composes hundreds of frames in a handful of kernel launches.

On a CUDA device the batch lives on the GPU; ``FrameBatch.numpy()`` copies it to the host once
per batch, into a preallocated pinned buffer (a ring of two, like the device buffers). On CPU the output tensors share memory with
preallocated numpy buffers, so nothing is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avatar_pipeline.avatar.asset import AvatarAsset
from avatar_pipeline.compose.base import (
    _YUV,
    _YUV_OFF,
    FrameState,
    blink_levels,
    frame_nbytes,
    pick_mouth,
    prepare_avatar,
    top_k,
)
from avatar_pipeline.compose.numpy_backend import FrameBatch, _Ring
from config.logs import get_logger

log = get_logger(__name__)


class _TorchAvatar:
    def __init__(self, prep, fmt: str, device):
        import torch

        self.prep = prep
        self.device = device
        src = prep.poses_rgba.reshape(prep.n_poses, -1) if fmt == "rgba" else prep.poses_i420
        self.src = torch.from_numpy(np.ascontiguousarray(src)).to(device)
        self.rgb = torch.from_numpy(prep.poses_rgb).to(device)
        # the mouths as windows at each parity, (2, 2, S, hh, ww, 4), gathered per frame
        hh, ww = prep.mouth_window_size
        self.mouth = torch.from_numpy(np.ascontiguousarray(np.stack([
            np.stack([prep.mouth[:, 1 - py:1 - py + hh, 1 - px:1 - px + ww] for px in (0, 1)])
            for py in (0, 1)]))).to(device)
        self.blink = torch.from_numpy(prep.blink).to(device)


class TorchCompositor:
    backend = "torch"

    def __init__(self, fmt: str = "rgba", max_batch: int = 64, device: str | None = None):
        import torch

        if fmt not in ("rgba", "i420"):
            raise ValueError(f"unknown frame format {fmt!r} (rgba or i420)")
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.fmt = fmt
        self.max_batch = max_batch
        self.avatars: dict[str, _TorchAvatar] = {}
        self.width = self.height = 0
        self._ring: _Ring | None = None
        self._host_ring: _Ring | None = None
        self._yuv = torch.from_numpy(_YUV.copy()).to(self.device)
        self._yuv_off = [float(v) for v in _YUV_OFF]

    @property
    def backend_name(self) -> str:
        return f"torch-{self.device.type}"

    def add_avatar(self, asset: AvatarAsset) -> str:
        prep = prepare_avatar(asset)
        if self.avatars and (prep.width, prep.height) != (self.width, self.height):
            raise ValueError(f"avatar {prep.asset_id} is {prep.width}x{prep.height}; this "
                             f"compositor makes {self.width}x{self.height} frames")
        self.width, self.height = prep.width, prep.height
        self.avatars[prep.asset_id] = _TorchAvatar(prep, self.fmt, self.device)
        if self._ring is None:
            nbytes = frame_nbytes(self.fmt, self.width, self.height)
            torch = self.torch
            if self.device.type == "cpu":
                def alloc(n):
                    return torch.from_numpy(np.empty((n, nbytes), np.uint8))
            else:
                def alloc(n):
                    return torch.empty((n, nbytes), dtype=torch.uint8, device=self.device)

                def alloc_host(n):
                    return torch.empty((n, nbytes), dtype=torch.uint8, pin_memory=True)

                self._host_ring = _Ring(alloc_host, self.max_batch)
            self._ring = _Ring(alloc, self.max_batch)
        return prep.asset_id

    def compose(self, states: Sequence[FrameState]) -> FrameBatch:
        torch = self.torch
        if self._ring is None:
            raise RuntimeError("add an avatar first")
        n = len(states)
        out = self._ring.next(n)
        host = self._host_ring.next(n) if self._host_ring is not None else None
        if n == 0:
            return FrameBatch(out, self.fmt, self.width, self.height, host)
        weights = np.stack([np.asarray(s.weights, np.float32) for s in states])
        idx, w = top_k(weights)
        t = np.array([s.t for s in states], np.float64)
        phase = np.array([s.idle_phase for s in states], np.float64)
        blink = np.array([s.blink for s in states], np.float32)
        ids = [s.avatar_id for s in states]
        with torch.inference_mode():
            for aid in dict.fromkeys(ids):
                av = self.avatars.get(aid)
                if av is None:
                    raise KeyError(f"avatar {aid} was not added to this compositor")
                rows = np.array([i for i, a in enumerate(ids) if a == aid])
                pidx = av.prep.pose_index(t[rows], phase[rows])
                self._compose_group(av, out, rows, pidx, idx[rows], w[rows], blink[rows])
        return FrameBatch(out, self.fmt, self.width, self.height, host)

    def _t(self, a: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    def _compose_group(self, av: _TorchAvatar, out, rows, pidx, idx, w, blink):
        torch = self.torch
        prep = av.prep
        n = len(rows)
        contiguous = rows[0] == 0 and np.all(np.diff(rows) == 1) if n > 1 else rows[0] == 0
        rows_t = self._t(rows)
        pidx_t = self._t(pidx)
        if contiguous:
            torch.index_select(av.src, 0, pidx_t, out=out[:n])
        else:
            out[rows_t] = av.src[pidx_t]
        # mouth
        mx, my, mpx, mpy = prep.windows(pidx, prep.mouth_xy)
        mpx_t, mpy_t = self._t(mpx), self._t(mpy)
        mix = av.mouth[mpy_t, mpx_t, self._t(pick_mouth(idx, w, prep.has_mids))]
        hh, ww = mix.shape[1:3]
        ys, xs = self._grid(my, mx, hh, ww)
        base = av.rgb[pidx_t[:, None, None], ys, xs].float()
        comp = mix[..., :3] + (1 - mix[..., 3:4]) * base
        self._write(out, rows_t, ys, xs, comp)
        # blink, only for the sessions that are blinking
        levels = blink_levels(blink, prep.blink.shape[2])
        sel = np.nonzero(levels[:, 0] > 0)[0]
        if len(sel):
            ex, ey, epx, epy = prep.windows(pidx[sel], prep.eyes_xy)
            eh, ew = prep.blink.shape[3:5]
            ys, xs = self._grid(ey, ex, eh, ew)
            p_t = self._t(pidx[sel])
            region = av.rgb[p_t[:, None, None], ys, xs].float()
            epx_t, epy_t = self._t(epx), self._t(epy)
            lv = self._t(levels[sel])
            for b in range(levels.shape[1]):
                s = av.blink[epy_t, epx_t, b]
                region = region + lv[:, b, None, None, None] * (
                    s[..., :3] - s[..., 3:4] * region)
            self._write(out, self._t(rows[sel]), ys, xs, region)

    def _grid(self, y0: np.ndarray, x0: np.ndarray, hh: int, ww: int):
        torch = self.torch
        ys = self._t(y0)[:, None, None] + torch.arange(hh, device=self.device)[None, :, None]
        xs = self._t(x0)[:, None, None] + torch.arange(ww, device=self.device)[None, None, :]
        return ys, xs

    def _write(self, out, rows_t, ys, xs, comp) -> None:
        torch = self.torch
        u8f = torch.clamp(torch.round(comp), 0, 255)
        H, W = self.height, self.width
        r = rows_t[:, None, None]
        if self.fmt == "rgba":
            frames = out.view(-1, H, W, 4)
            frames[r, ys, xs, 0:3] = u8f.to(torch.uint8)
            return
        c = self._yuv
        f = u8f
        y = f[..., 0] * c[0, 0] + f[..., 1] * c[0, 1] + f[..., 2] * c[0, 2] + self._yuv_off[0]
        sub = ((f[:, 0::2, 0::2] + f[:, 1::2, 0::2]) + (f[:, 0::2, 1::2] + f[:, 1::2, 1::2])) * 0.25
        u = sub[..., 0] * c[1, 0] + sub[..., 1] * c[1, 1] + sub[..., 2] * c[1, 2] + self._yuv_off[1]
        v = sub[..., 0] * c[2, 0] + sub[..., 1] * c[2, 1] + sub[..., 2] * c[2, 2] + self._yuv_off[2]

        def q(a):
            return torch.clamp(torch.round(a), 0, 255).to(torch.uint8)

        n = H * W
        yplane = out[:, :n].unflatten(1, (H, W))
        uplane = out[:, n:n + n // 4].unflatten(1, (H // 2, W // 2))
        vplane = out[:, n + n // 4:].unflatten(1, (H // 2, W // 2))
        yplane[r, ys, xs] = q(y)
        ys2, xs2 = ys[:, 0::2] // 2, xs[:, :, 0::2] // 2
        uplane[r, ys2, xs2] = q(u)
        vplane[r, ys2, xs2] = q(v)

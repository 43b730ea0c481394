"""Photo mouths: the 15 visemes (and the in-betweens) made from one photo's mouth by warping.

A backward map moves the jaw and lower lip down (and the upper lip a little up) by the viseme's
opening, narrows or spreads the mouth horizontally (oh/ou rounding, E/ih spread), and paints the
interior between the lips, tinted to the photo's lighting. Geometry comes from
:func:`avatar_pipeline.avatar.photo.locate_mouth`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_pipeline.avatar.asset import Box
from avatar_pipeline.viseme_set import VISEMES


@dataclass
class MouthGeometry:
    """In output-frame coordinates."""

    cx: float
    line_y: float  # where the lips meet (or the middle of the opening)
    half_w: float  # centre to corner
    gap: float  # the photo's own opening at the centre (0 = closed)
    lip_top: float  # outer top of the upper lip
    lip_bottom: float  # outer bottom of the lower lip
    iod: float  # inter-ocular distance
    from_segmentation: bool
    curv: float = 0.0  # the lip line is line_y + curv * (x - cx)^2 (a smile: < 0)
    teeth_rgb: tuple[float, float, float] | None = None  # the photo's own teeth, when shown
    open_half_w: float = 0.0  # half-width of the photo's own opening

    def line_at(self, x):
        return self.line_y + self.curv * (np.asarray(x, np.float32) - self.cx) ** 2


# --------------------------------------------------------------------------- synthesis


@dataclass(frozen=True)
class PhotoMouth:
    """open: gap at the centre in units of the mouth half-width; sx: width scale; k:
    superellipse exponent of the opening; teeth_u/l: teeth height (units of half-width);
    tongue: none|low|tip_up|tip_out|back; press: squeeze the lips (PP)."""

    open: float = 0.0
    sx: float = 1.0
    k: float = 2.4
    teeth_u: float = 0.0
    teeth_l: float = 0.0
    tongue: str = "none"
    press: float = 0.0


PHOTO_MOUTHS: dict[str, PhotoMouth] = {
    "sil": PhotoMouth(),
    "PP": PhotoMouth(press=0.25, sx=0.97),
    "FF": PhotoMouth(open=0.14, teeth_u=0.14, k=3.0),
    "TH": PhotoMouth(open=0.22, teeth_u=0.08, teeth_l=0.05, tongue="tip_out"),
    "DD": PhotoMouth(open=0.25, teeth_u=0.1, teeth_l=0.06, tongue="tip_up"),
    "kk": PhotoMouth(open=0.34, teeth_u=0.1, teeth_l=0.05, tongue="back"),
    "CH": PhotoMouth(open=0.2, sx=0.88, k=2.2, teeth_u=0.1, teeth_l=0.1),
    "SS": PhotoMouth(open=0.12, sx=1.05, k=3.2, teeth_u=0.07, teeth_l=0.07),
    "nn": PhotoMouth(open=0.2, teeth_u=0.08, teeth_l=0.05, tongue="tip_up"),
    "RR": PhotoMouth(open=0.26, sx=0.85, k=2.1, teeth_u=0.07, tongue="low"),
    "aa": PhotoMouth(open=0.85, sx=1.02, k=2.3, teeth_u=0.12, tongue="low"),
    "E": PhotoMouth(open=0.36, sx=1.1, k=3.0, teeth_u=0.12, teeth_l=0.06, tongue="low"),
    "ih": PhotoMouth(open=0.26, sx=1.07, k=3.0, teeth_u=0.1, teeth_l=0.05, tongue="low"),
    "oh": PhotoMouth(open=0.62, sx=0.85, k=2.0, teeth_u=0.05, tongue="low"),
    "ou": PhotoMouth(open=0.32, sx=0.76, k=2.0),
}
assert tuple(PHOTO_MOUTHS) == VISEMES


def blend_mouths(a: PhotoMouth, b: PhotoMouth, t: float = 0.5) -> PhotoMouth:
    """The mouth ``t`` of the way from ``a`` to ``b``; the tongue of the more open one."""
    lerp = lambda x, y: (1 - t) * x + t * y  # noqa: E731
    return PhotoMouth(open=lerp(a.open, b.open), sx=lerp(a.sx, b.sx), k=lerp(a.k, b.k),
                      teeth_u=lerp(a.teeth_u, b.teeth_u), teeth_l=lerp(a.teeth_l, b.teeth_l),
                      tongue=(a if a.open >= b.open else b).tongue,
                      press=lerp(a.press, b.press))


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def _superellipse_profile(u: np.ndarray, k: float) -> np.ndarray:
    return np.clip(1 - np.abs(u) ** k, 0, 1) ** (1 / k)


def synth_mouth(img: np.ndarray, g: MouthGeometry, m: PhotoMouth, box: Box,
                tint: np.ndarray) -> np.ndarray:
    """The mouth box of ``img`` with viseme ``m``: RGB float32 (box.height, box.width, 3)."""
    import cv2

    ys, xs = np.mgrid[box.y:box.y + box.height, box.x:box.x + box.width].astype(np.float32)
    a, iod = g.half_w, g.iod
    x1 = xs[0]
    # rounded visemes (oh, ou, CH, RR) pucker: the smile's curve flattens
    rnd = float(np.clip((1 - m.sx) / 0.35, 0, 1))
    line_d = (g.line_y + g.curv * (1 - 0.8 * rnd) * (x1 - g.cx) ** 2)[None, :]
    # horizontal: narrow/spread around the mouth, fading out over the cheeks
    gx = np.exp(-(((xs - g.cx) / (1.1 * a)) ** 2) - ((ys - line_d) / (0.25 * iod)) ** 2)
    sx = 1 + (m.sx - 1) * gx
    src_x = g.cx + (xs - g.cx) / sx
    # per column: where the lip content comes from (the source x on the lip line)
    sx_line = 1 + (m.sx - 1) * np.exp(-(((x1 - g.cx) / (1.1 * a)) ** 2))
    x_src = g.cx + (x1 - g.cx) / sx_line
    line_s = g.line_at(x_src)[None, :]
    # the opening at each column: wanted (destination) and the photo's own (source)
    # the opening ends a little inside where the (moved) lip corners land
    u = (x1 - g.cx) / (0.86 * a * (1 + 0.5 * (m.sx - 1)))
    gap_v = (m.open * a * _superellipse_profile(u, m.k))[None, :]
    u_src = (x_src - g.cx) / max(g.open_half_w, 1.0)
    gap_s = (g.gap * _superellipse_profile(u_src, 3.0))[None, :]
    top_v = line_d - 0.3 * gap_v  # inner edge of the upper lip, destination
    bot_v = line_d + 0.7 * gap_v
    # near the lips each column follows the opening's shape; further away the jaw (below) and
    # the upper lip's skin (above) move as one piece with the centre, fading at the face's sides
    lip_up_s = line_s - 0.5 * gap_s
    lip_lo_s = line_s + 0.5 * gap_s
    shift_up = top_v - lip_up_s  # how far upper content moves (down > 0)
    shift_lo = bot_v - lip_lo_s
    c = int(np.argmin(np.abs(x1 - g.cx)))
    wj = (1 - smoothstep(1.0 * a, 3.0 * a, np.abs(x1 - g.cx)))[None, :]
    jaw = shift_lo[:, c:c + 1] * wj
    lip_lo_h = max(g.lip_bottom - g.line_y, 4.0)
    lip_up_h = max(g.line_y - g.lip_top, 3.0)
    near_lo = 1 - smoothstep(lip_lo_h * 0.8, lip_lo_h * 2.5, ys - line_d)
    near_up = 1 - smoothstep(lip_up_h * 0.8, lip_up_h * 2.5, line_d - ys)
    lip_w = 1 - smoothstep(0.9 * a, 1.4 * a, np.abs(x1 - g.cx))[None, :]
    lo = shift_lo * near_lo * lip_w + jaw * (1 - near_lo * lip_w)
    up = shift_up * near_up * lip_w + shift_up[:, c:c + 1] * wj * 0.5 * (1 - near_up * lip_w)
    chin = g.line_y + 0.78 * iod
    fall_lo = 1 - smoothstep(chin - 0.2 * iod, chin + 0.8 * iod, ys)
    fall_up = smoothstep(line_d - 0.55 * iod, line_d - 0.05 * iod, ys)
    below = ys >= line_d
    dy = np.where(below, lo * fall_lo, up * fall_up)
    line = line_d
    if m.press:  # PP: squeeze the lips towards the line where they meet
        lip_h = np.where(below, g.lip_bottom - g.line_y, g.line_y - g.lip_top) + 1e-3
        d = np.abs(ys - line)
        zone = 1 - smoothstep(lip_h * 1.0, lip_h * 2.2, d)
        zone = zone * (1 - smoothstep(0.9 * a, 1.3 * a, np.abs(xs - g.cx)))
        dy = dy - np.sign(ys - line) * m.press * np.minimum(d, lip_h) * zone
    src_y = ys - dy
    warped = cv2.remap(img, src_x.astype(np.float32), src_y.astype(np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = warped.astype(np.float32)
    if m.open <= 0:
        if g.gap > 0:  # the photo's own opening closes: shade the line where the lips meet
            seam = np.exp(-((ys - line) / 0.9) ** 2) * (np.abs(u_src) < 1.0)[None, :]
            out = out * (1 - 0.35 * seam[..., None])
        return out
    # the interior, anti-aliased against the lips
    inside = (np.clip(ys - top_v + 0.5, 0, 1) * np.clip(bot_v - ys + 0.5, 0, 1)
              * (np.abs(u) < 1)[None, :])
    depth = np.clip((ys - top_v) / np.maximum(bot_v - top_v, 1), 0, 1)
    cavity = np.array([70, 22, 28], np.float32) * (1.0 - 0.35 * depth[..., None])
    interior = cavity
    teeth = (np.asarray(g.teeth_rgb, np.float32) / tint if g.teeth_rgb is not None
             else np.array([240, 234, 222], np.float32))
    tongue = np.array([196, 92, 100], np.float32)
    # tongue
    if m.tongue in ("low", "back", "tip_up"):
        ty = bot_v - (0.35 if m.tongue != "back" else 0.55) * (bot_v - top_v)
        tmask = np.clip((ys - ty) / 1.5, 0, 1) * (np.abs(u) < 0.75)[None, :]
        interior = interior * (1 - tmask[..., None]) + tongue * tmask[..., None]
    if m.tongue == "tip_up":
        tip = np.exp(-(((xs - g.cx) / (0.28 * a)) ** 2)
                     - ((ys - (top_v + m.teeth_u * a + 0.05 * a)) / (0.09 * a)) ** 2)
        interior = interior * (1 - tip[..., None]) + tongue * tip[..., None]
    # teeth: a band under the upper lip (and over the lower one), gently curved edge
    if m.teeth_u > 0:
        edge = top_v + m.teeth_u * a + 0.04 * a * u[None, :] ** 2
        tm = np.clip(edge - ys + 0.5, 0, 1)
        interior = interior * (1 - tm[..., None]) + teeth * tm[..., None]
    if m.teeth_l > 0:
        edge = bot_v - m.teeth_l * a
        tm = np.clip(ys - edge + 0.5, 0, 1) * (np.abs(u) < 0.8)[None, :]
        interior = interior * (1 - tm[..., None]) + teeth * 0.93 * tm[..., None]
    if m.tongue == "tip_out":
        tip = np.clip(1.2 - (((xs - g.cx) / (0.34 * a)) ** 2
                             + ((ys - (line + 0.12 * gap_v.max())) / (0.11 * a)) ** 2), 0, 1)
        interior = interior * (1 - tip[..., None]) + tongue * tip[..., None]
    interior = interior * tint  # match the photo's light
    # a soft shadow where the lips meet the interior
    edge_shade = np.exp(-((ys - top_v) / 1.0) ** 2)  # the upper lip's shadow on the teeth
    interior = interior * (1 - 0.12 * edge_shade[..., None])
    inside = inside[..., None]
    return out * (1 - inside) + interior * inside

"""Photo mouths: the 15 visemes (and the in-betweens) made from one photo's mouth by warping.

A backward map moves the jaw and lower lip down (and the upper lip a little up) by the viseme's
opening, narrows or spreads the mouth horizontally (oh/ou rounding, E/ih spread), and paints the
interior between the lips, tinted to the photo's lighting. Geometry comes from
:func:`avatar_pipeline.avatar.photo.find_mouth`. This smooth field is the warp for photos without
face-mesh points; with them, :mod:`avatar_pipeline.avatar.mouth_mesh` warps over the mesh's
triangles and paints the same interior.
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
    mesh: np.ndarray | None = None  # (468, 2) face-mesh points, when the face mesh found them

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


def superellipse_profile(u: np.ndarray, k: float) -> np.ndarray:
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
    gap_v = (m.open * a * superellipse_profile(u, m.k))[None, :]
    u_src = (x_src - g.cx) / max(g.open_half_w, 1.0)
    gap_s = (g.gap * superellipse_profile(u_src, 3.0))[None, :]
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
    return finish_mouth(img, warped.astype(np.float32), g, m, ys, xs, u, top_v, bot_v, line,
                        gap_v, tint, seam_cols=np.abs(u_src) < 1.0)


def finish_mouth(img, out, g: MouthGeometry, m: PhotoMouth, ys, xs, u, top_v, bot_v, line, gap_v,
                 tint, seam_cols) -> np.ndarray:
    """A warped mouth box finished: an open mouth gets its interior (:func:`paint_interior`);
    a closed one, where the photo's own mouth was open (``seam_cols``), a shaded line where the
    lips now meet."""
    if m.open > 0:
        return paint_interior(img, out, g, m, ys, xs, u, top_v, bot_v, line, gap_v, tint)
    if g.gap > 0:
        seam = np.exp(-((ys - line) / 0.9) ** 2) * seam_cols[None, :]
        out = out * (1 - 0.35 * seam[..., None])
    return out


def inside_mask(ys, top_v, bot_v, u) -> np.ndarray:
    """The opening between the lips, anti-aliased and softened like a lip's edge."""
    import cv2

    hard = (np.clip(ys - top_v + 0.5, 0, 1) * np.clip(bot_v - ys + 0.5, 0, 1)
            * (np.abs(u) < 1)[None, :]).astype(np.float32)
    return cv2.GaussianBlur(hard, (0, 0), 0.7)


def lip_colour(img: np.ndarray, g: MouthGeometry) -> np.ndarray:
    """The photo's lip colour: the redder half of the lips' pixels near the centre."""
    y0, y1 = int(g.lip_top), int(max(g.lip_bottom, g.lip_top + 2))
    x0, x1 = int(g.cx - 0.5 * g.half_w), int(g.cx + 0.5 * g.half_w)
    px = img[max(0, y0):y1, max(0, x0):x1].reshape(-1, 3).astype(np.float32)
    if len(px) < 10:
        return np.array([160, 80, 80], np.float32)
    red = px[:, 0] - px[:, 1]
    return np.median(px[red >= np.median(red)], 0)


def paint_interior(img, out, g: MouthGeometry, m: PhotoMouth, ys, xs, u, top_v, bot_v, line,
                   gap_v, tint) -> np.ndarray:
    """Paint the inside of the open mouth, shaded as light falls into one: the inner lips
    (reddish, just inside the edge), a throat that darkens away from the lips and into the
    corners, teeth that recede into the corners and sit in the upper lip's shadow, with faint
    gaps between them, and a tongue lit from above; then the photo's grain, so the interior does
    not read as flat paint on a photo."""
    import cv2

    a = g.half_w
    inside = inside_mask(ys, top_v, bot_v, u)
    h_open = np.maximum(bot_v - top_v, 1e-3)
    mid = np.clip(1 - np.abs(ys - (top_v + bot_v) / 2) / (h_open / 2), 0, 1)  # 0 lips..1 middle
    across = np.clip(1 - np.abs(u), 0, 1)[None, :]  # 1 centre..0 corners
    lip = lip_colour(img, g) / np.maximum(tint, 1e-3)
    mucosa = lip * 0.42
    throat = lip * 0.22 + np.array([6, 1, 2], np.float32)
    dark = np.maximum(np.clip(mid * 4.0, 0, 1) ** 0.7, 1 - across ** 0.6)[..., None]
    interior = mucosa * (1 - dark) + throat * dark
    # tongue: lip-coloured, lit on its upper surface, falling into shadow at its sides
    tongue_c = lip * 0.8 + np.array([10, 0, 4], np.float32)
    if m.tongue in ("low", "back", "tip_up"):
        ty = bot_v - (0.35 if m.tongue != "back" else 0.55) * (bot_v - top_v)
        tmask = np.clip((ys - ty) / 1.5, 0, 1) * np.clip((0.78 - np.abs(u)) / 0.15, 0, 1)[None, :]
        lit = np.clip(0.85 - 0.5 * (ys - ty) / np.maximum(bot_v - ty, 1), 0.35, 1) * (
            0.55 + 0.45 * across)
        interior = interior * (1 - tmask[..., None]) + (tongue_c * lit[..., None]) * tmask[..., None]
    if m.tongue == "tip_up":
        tip = np.exp(-(((xs - g.cx) / (0.28 * a)) ** 2)
                     - ((ys - (top_v + m.teeth_u * a + 0.05 * a)) / (0.09 * a)) ** 2)
        interior = interior * (1 - tip[..., None]) + tongue_c * 0.85 * tip[..., None]
    teeth = (np.asarray(g.teeth_rgb, np.float32) / tint if g.teeth_rgb is not None
             else np.array([242, 236, 222], np.float32))
    # teeth recede: full light at the centre, into shadow towards the corners
    recede = (0.72 + 0.28 * np.clip(across * 1.6, 0, 1))[..., None]
    # faint gaps between the four front teeth
    edges = g.cx + np.array([-0.22, 0.0, 0.22]) * a
    gaps = np.zeros_like(xs[0])
    for e in edges:
        gaps = np.maximum(gaps, np.exp(-((xs[0] - e) / 0.6) ** 2))
    if m.teeth_u > 0:
        edge = top_v + m.teeth_u * a + 0.04 * a * u[None, :] ** 2
        tm = np.clip((edge - ys) / 1.2 + 0.5, 0, 1)
        shadow = 1 - 0.2 * np.exp(-np.clip(ys - top_v, 0, None) / max(0.04 * a, 0.8))
        shade = recede * shadow[..., None] * (1 - 0.05 * gaps[None, :, None])
        interior = interior * (1 - tm[..., None]) + teeth * shade * tm[..., None]
    if m.teeth_l > 0:
        edge = bot_v - m.teeth_l * a
        tm = np.clip((ys - edge) / 1.2 + 0.5, 0, 1) * np.clip((0.8 - np.abs(u)) / 0.1, 0,
                                                               1)[None, :]
        interior = interior * (1 - tm[..., None]) + teeth * 0.82 * recede * tm[..., None]
    if m.tongue == "tip_out":
        tip = np.clip(1.2 - (((xs - g.cx) / (0.34 * a)) ** 2
                             + ((ys - (line + 0.12 * gap_v.max())) / (0.11 * a)) ** 2), 0, 1)
        interior = interior * (1 - tip[..., None]) + tongue_c * tip[..., None]
    interior = interior * tint  # the photo's light
    # the photo's grain (deterministic: the same photo makes the same mouths)
    rng = np.random.default_rng(int(g.cx * 1000 + g.line_y) & 0xFFFFFFFF)
    interior = interior + rng.normal(0, 1.3, interior.shape[:2])[..., None].astype(np.float32)
    # the lips curl in: a soft shadow on them just outside the opening
    rim = np.clip(cv2.GaussianBlur(inside, (0, 0), 1.6) - inside, 0, 1)
    out = out * (1 - 0.6 * rim[..., None])
    inside = inside[..., None]
    return out * (1 - inside) + interior * inside

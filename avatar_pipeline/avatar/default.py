"""The shipped default avatar: a friendly tutor drawn by this code with Pillow.

Everything is vector drawing at ``SS`` x supersampling, downsampled with a Lanczos filter for
anti-aliasing; nothing is loaded from disk, so there are no licence questions and the same code
always draws the same pixels. The drawing is split in layers so idle motion (head sway, breathing)
only moves layers:

    background  ->  head-back (hair behind, neck)  ->  body (sweater, collar)  ->  head-front

Mouth sprites are crops of full renders (pose 0) with each viseme's mouth; blink sprites are crops
with the eyes half-closed and closed. Units below are pixels of the 512x512 frame.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from avatar_pipeline.avatar.asset import MID_PAIRS, AvatarAsset, Box
from avatar_pipeline.viseme_set import VISEMES


def _source_tag() -> str:
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]


DEFAULT_REF = f"default-v1-{_source_tag()}"
"""Registry name of the drawn tutor; it changes with this file, so a cache never serves an
older drawing."""
SIZE = 512
SS = 4  # supersampling factor

# Palette
BG_TOP = (214, 233, 240)
BG_BOTTOM = (160, 200, 214)
SKIN = (240, 196, 160)
SKIN_SHADE = (222, 170, 134)
SKIN_DEEP = (200, 146, 112)
HAIR = (70, 46, 34)
HAIR_LIGHT = (104, 70, 50)
SWEATER = (46, 98, 112)
SWEATER_DARK = (34, 76, 88)
SHIRT = (247, 245, 240)
SHIRT_SHADE = (214, 212, 205)
LIP_UP = (190, 96, 96)
LIP_LOW = (206, 112, 110)
LIP_LINE = (120, 50, 56)
CAVITY = (72, 24, 32)
TEETH = (250, 248, 242)
TONGUE = (214, 104, 112)
TONGUE_DARK = (180, 80, 90)
EYE_WHITE = (252, 252, 250)
IRIS = (92, 62, 36)
PUPIL = (28, 18, 14)
BROW = (64, 42, 30)
GLASSES = (52, 46, 52)
BLUSH = (238, 140, 140)

CX = 256.0
HEAD_CY = 246.0
MOUTH_Y = 326.0
EYE_Y = 240.0
EYE_DX = 42.0

MOUTH_BOX = Box(x=168, y=284, width=176, height=116)
EYES_BOX = Box(x=176, y=206, width=160, height=62)
N_POSES = 32
IDLE_PERIOD_S = 8.0


@dataclass(frozen=True)
class MouthShape:
    """a: half-width of the opening; ht/hb: opening above/below the lip line; k: superellipse
    exponent (2 round, >2 boxier/spread); lu/ll: lip thickness up/low; teeth_u/teeth_l: teeth
    visible (px); tongue: none|low|tip_up|tip_out|back; jaw: chin drop; tuck: lower lip tucked
    under the upper teeth (FF); press: lips pressed (PP); smile: corner lift."""

    a: float = 30
    ht: float = 0
    hb: float = 0
    k: float = 2.4
    lu: float = 7
    ll: float = 9
    teeth_u: float = 0
    teeth_l: float = 0
    tongue: str = "none"
    jaw: float = 0
    tuck: bool = False
    press: bool = False
    smile: float = 2.0


MOUTHS: dict[str, MouthShape] = {
    "sil": MouthShape(a=29, smile=3.0),
    "PP": MouthShape(a=30, lu=5, ll=6.5, press=True, smile=1.0),
    "FF": MouthShape(a=31, ht=5.5, hb=0, lu=6.5, ll=8, teeth_u=5.5, tuck=True, jaw=1, smile=1.5),
    "TH": MouthShape(a=29, ht=5, hb=6, teeth_u=4, teeth_l=2.5, tongue="tip_out", jaw=3),
    "DD": MouthShape(a=30, ht=5, hb=8, teeth_u=4, teeth_l=3, tongue="tip_up", jaw=4),
    "kk": MouthShape(a=30, ht=6, hb=11, teeth_u=4.5, teeth_l=2, tongue="back", jaw=6),
    "CH": MouthShape(a=23, ht=6, hb=7, k=2.2, lu=9, ll=11, teeth_u=5, teeth_l=5, jaw=3,
                     smile=0),
    "SS": MouthShape(a=33, ht=4.5, hb=4.5, k=3.2, teeth_u=4.5, teeth_l=4.5, jaw=1.5, smile=3),
    "nn": MouthShape(a=29, ht=4, hb=7, teeth_u=3.5, teeth_l=2, tongue="tip_up", jaw=3),
    "RR": MouthShape(a=22, ht=6, hb=9, k=2.1, lu=8.5, ll=10.5, teeth_u=3, tongue="low", jaw=4,
                     smile=0),
    "aa": MouthShape(a=32, ht=10, hb=30, k=2.3, teeth_u=6, tongue="low", jaw=16, smile=1),
    "E": MouthShape(a=36, ht=6, hb=13, k=3.0, teeth_u=5.5, teeth_l=3, tongue="low", jaw=7,
                    smile=4),
    "ih": MouthShape(a=34, ht=5, hb=9, k=3.0, teeth_u=4.5, teeth_l=2, tongue="low", jaw=4,
                     smile=3.5),
    "oh": MouthShape(a=21, ht=11, hb=19, k=2.0, lu=9, ll=11, teeth_u=2, tongue="low", jaw=11,
                     smile=0),
    "ou": MouthShape(a=14, ht=7, hb=9, k=2.0, lu=10, ll=11.5, tongue="none", jaw=5, smile=0),
}
assert tuple(MOUTHS) == VISEMES


def blend_shapes(a: MouthShape, b: MouthShape, t: float = 0.5) -> MouthShape:
    """The mouth ``t`` of the way from ``a`` to ``b``: sizes interpolated; the tongue of the more
    open of the two; lips tucked or pressed only when both are."""
    mix = {f.name: (1 - t) * getattr(a, f.name) + t * getattr(b, f.name)
           for f in dataclasses.fields(MouthShape) if f.type in ("float", float)}
    opener = a if a.ht + a.hb >= b.ht + b.hb else b
    return MouthShape(**mix, tongue=opener.tongue, tuck=a.tuck and b.tuck,
                      press=a.press and b.press)


def _superellipse(a: float, b: float, k: float, u: np.ndarray) -> np.ndarray:
    """Height of a superellipse |x/a|^k + |y/b|^k = 1 at x = u*a."""
    return b * np.clip(1 - np.abs(u) ** k, 0, 1) ** (1 / k)


class _Pen:
    """Draws in 512-frame units onto a supersampled RGBA layer covering ``origin``+``size``
    (frame units; the whole frame by default), shifted by (dx, dy)."""

    def __init__(self, dx: float = 0.0, dy: float = 0.0, origin=(0, 0), size=(SIZE, SIZE)):
        from PIL import Image, ImageDraw

        self.ox, self.oy = origin
        self.img = Image.new("RGBA", (size[0] * SS, size[1] * SS), (0, 0, 0, 0))
        self.d = ImageDraw.Draw(self.img)
        self.dx, self.dy = dx, dy

    def _p(self, pts):
        return [((x + self.dx - self.ox) * SS, (y + self.dy - self.oy) * SS) for x, y in pts]

    def sub(self, x0: float, y0: float, x1: float, y1: float, margin: float = 0.0) -> _Pen:
        """A pen over the frame-unit box (x0, y0, x1, y1) of this one, moved by (dx, dy)."""
        ox = math.floor(x0 + self.dx - margin) - 1
        oy = math.floor(y0 + self.dy - margin) - 1
        w = math.ceil(x1 + self.dx + margin) + 1 - ox
        h = math.ceil(y1 + self.dy + margin) + 1 - oy
        return _Pen(self.dx, self.dy, (ox, oy), (w, h))

    def put(self, sub: _Pen, mask=None) -> None:
        pos = ((sub.ox - self.ox) * SS, (sub.oy - self.oy) * SS)
        if mask is None:
            self.img.alpha_composite(sub.img, pos)
        else:
            self.img.paste(sub.img, pos, mask)

    def poly(self, pts, fill):
        self.d.polygon(self._p(pts), fill=fill)

    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=0.0):
        (x0, y0), (x1, y1) = self._p([(cx - rx, cy - ry), (cx + rx, cy + ry)])
        self.d.ellipse([x0, y0, x1, y1], fill=fill, outline=outline,
                       width=max(1, round(width * SS)) if outline else 0)

    def line(self, pts, fill, width):
        self.d.line(self._p(pts), fill=fill, width=max(1, round(width * SS)), joint="curve")
        r = width * SS / 2
        for x, y in self._p([pts[0], pts[-1]]):
            self.d.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def soft(self, bbox, draw_fn, color, alpha: float, blur: float):
        """A blurred translucent shape (blush, shadows) inside frame-unit ``bbox``:
        draw_fn(pen) draws it in white."""
        from PIL import Image, ImageFilter

        m = self.sub(*bbox, margin=3 * blur + 2)
        draw_fn(m)
        a = m.img.getchannel("A").filter(ImageFilter.GaussianBlur(blur * SS))
        a = a.point(lambda v: int(v * alpha))
        layer = Image.new("RGBA", m.img.size, color + (0,))
        layer.putalpha(a)
        self.put(_wrap(m, layer))

    def soft_ellipse(self, cx, cy, rx, ry, color, alpha, blur):
        self.soft((cx - rx, cy - ry, cx + rx, cy + ry),
                  lambda q: q.ellipse(cx, cy, rx, ry, fill=(255, 255, 255)), color, alpha, blur)


def _wrap(pen: _Pen, img) -> _Pen:
    pen.img = img
    return pen


def _arc(cx, cy, rx, ry, t0, t1, n=40):
    ts = np.linspace(math.radians(t0), math.radians(t1), n)
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in ts]


def _chaikin(pts, n: int = 3):
    """Round a closed polygon's corners (Chaikin corner cutting)."""
    p = np.asarray(pts, np.float64)
    for _ in range(n):
        q = np.roll(p, -1, axis=0)
        p = np.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], 1).reshape(-1, 2)
    return [tuple(v) for v in p]


def _face_contour(jaw: float, n: int = 160):
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        s, c = math.sin(t), -math.cos(t)  # t=0 top, clockwise
        if c <= 0:  # upper half: ellipse
            x, y = CX + 100 * s, HEAD_CY + 118 * c
        else:  # lower half: narrowing jaw, chin drops with the jaw
            narrow = 1 - 0.30 * c ** 2.5
            x = CX + 100 * s * narrow
            y = HEAD_CY + (120 + jaw * c ** 4) * c
        pts.append((x, y))
    return pts


_BG = None


def _draw_background():
    global _BG
    if _BG is None:
        _BG = _make_background()
    return _BG.copy()


def _make_background():
    from PIL import Image

    t = np.linspace(0, 1, SIZE, dtype=np.float32)[:, None, None]
    top, bottom = np.array(BG_TOP, np.float32), np.array(BG_BOTTOM, np.float32)
    bg = (top * (1 - t) + bottom * t) * np.ones((1, SIZE, 1), np.float32)
    # a soft light behind the head
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    glow = np.exp(-(((xx - CX) / 200) ** 2 + ((yy - 220) / 200) ** 2))[..., None]
    bg = bg + glow * 22
    img = Image.fromarray(np.clip(bg + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img.resize((SIZE * SS, SIZE * SS), Image.BILINEAR).convert("RGBA")


def _draw_head_back(p: _Pen):
    # hair behind the head: a bob to the jaw
    p.poly(_chaikin(_arc(CX, HEAD_CY - 8, 120, 128, 180, 360, 60)
                    + [(CX + 124, HEAD_CY + 60), (CX + 126, HEAD_CY + 104),
                       (CX + 112, HEAD_CY + 116), (CX - 112, HEAD_CY + 116),
                       (CX - 126, HEAD_CY + 104), (CX - 124, HEAD_CY + 60)]), HAIR)
    # neck, with the jaw's shadow on it
    p.poly([(CX - 36, HEAD_CY + 80), (CX + 36, HEAD_CY + 80), (CX + 40, 440), (CX - 40, 440)],
           SKIN_SHADE)
    p.soft_ellipse(CX, HEAD_CY + 120, 26, 9, SKIN_DEEP, 0.7, 4)


def _draw_body(p: _Pen, breath: float):
    s = 1 + 0.006 * breath  # shoulders widen a touch on the in-breath
    top = 402
    sh = [(CX - 190 * s, 512 + 20), (CX - 182 * s, 450), (CX - 150 * s, top + 14),
          (CX - 60, top - 2), (CX + 60, top - 2), (CX + 150 * s, top + 14),
          (CX + 182 * s, 450), (CX + 190 * s, 512 + 20)]
    p.poly(sh, SWEATER)
    # shirt collar V
    p.poly([(CX - 44, top - 4), (CX + 44, top - 4), (CX, top + 62)], SHIRT_SHADE)
    p.poly([(CX - 40, top - 6), (CX - 6, top + 40), (CX - 24, top + 50), (CX - 54, top + 10)],
           SHIRT)
    p.poly([(CX + 40, top - 6), (CX + 6, top + 40), (CX + 24, top + 50), (CX + 54, top + 10)],
           SHIRT)
    # neck opening shadow inside the collar
    p.poly([(CX - 30, top - 4), (CX + 30, top - 4), (CX, top + 34)], SKIN_SHADE)
    # sweater V neckline trim
    p.line([(CX - 62, top), (CX, top + 92), (CX + 62, top)], SWEATER_DARK, 6)
    # a book-pin / badge
    p.ellipse(CX + 104, top + 60, 9, 9, fill=(236, 184, 72))
    p.ellipse(CX + 104, top + 60, 4, 4, fill=(250, 222, 140))


def _draw_eye(p: _Pen, ex: float, closed: float):
    """closed: 0 open .. 1 shut."""
    rx, ry = 15.0, 10.0
    if closed < 0.95:
        p.ellipse(ex, EYE_Y, rx, ry * (1 - closed), fill=EYE_WHITE)
        p.ellipse(ex + 1, EYE_Y + 1, 8.5, 8.5, fill=IRIS)
        p.ellipse(ex + 1, EYE_Y + 1, 4.2, 4.2, fill=PUPIL)
        p.ellipse(ex + 4, EYE_Y - 3, 2.2, 2.2, fill=(255, 255, 255))
    if closed > 0:
        # the lid comes down from the top: skin above a lash line
        lid_y = EYE_Y - ry + 2 * ry * closed
        top = _arc(ex, EYE_Y, rx + 1.5, ry + 2, 180, 360, 24)
        bottom = [(ex + (rx + 1.5) * math.cos(t), lid_y + (2 if closed > 0.95 else 0)
                   + 3 * closed * math.sin(t))
                  for t in np.linspace(0, math.pi, 24)]
        p.poly(top + bottom, SKIN)
        p.line([(x, y) for x, y in bottom][::-1], PUPIL, 2.2)
    else:
        p.line(_arc(ex, EYE_Y, rx + 0.5, ry + 0.5, 190, 350, 20), PUPIL, 2.6)
        # lashes at the outer corner
        side = 1 if ex > CX else -1
        p.line([(ex + side * (rx - 1), EYE_Y - 4), (ex + side * (rx + 5), EYE_Y - 8)], PUPIL, 2)


def _draw_mouth(p: _Pen, m: MouthShape):
    cy = MOUTH_Y
    u = np.linspace(-1, 1, 41)
    xs = CX + m.a * u
    corner_lift = m.smile * u ** 2
    up_open = cy - _superellipse(m.a, m.ht, m.k, u) - corner_lift
    low_open = cy + _superellipse(m.a, m.hb, m.k, u) - corner_lift
    # outer lip contours: cupid's bow on the upper lip, fuller lower lip
    ext = 1.12  # lips reach a little past the opening's corners
    ue = np.linspace(-1, 1, 41)
    xe = CX + m.a * ext * ue
    lift_e = m.smile * ue ** 2
    bow = 2.2 * np.exp(-((ue * m.a * ext) / 6.5) ** 2)  # the dip at the centre
    peaks = 1.0 * np.exp(-((np.abs(ue * m.a * ext) - 9) / 5) ** 2)
    up_in = cy - _superellipse(m.a * ext, m.ht, m.k, ue) - lift_e
    up_out = up_in - m.lu * np.clip(1 - np.abs(ue) ** 2.2, 0.08, 1) + bow - peaks
    low_in = cy + _superellipse(m.a * ext, m.hb, m.k, ue) - lift_e
    low_out = low_in + m.ll * np.clip(1 - np.abs(ue) ** 2.0, 0.08, 1) ** 0.8
    if m.tuck:  # FF: the lower lip rides up under the upper teeth
        low_in = cy - lift_e + m.teeth_u - 1.5
        low_out = low_in + (m.ll - 2) * np.clip(1 - np.abs(ue) ** 2.0, 0.08, 1) ** 0.8
    if m.press:
        up_out = up_out + 1.5
        low_out = low_out - 1.5

    # soft shadow under the lower lip
    p.soft_ellipse(CX, float(low_out.max()) + 4, m.a * 0.7, 4, SKIN_DEEP, 0.55, 3)

    # the opening: cavity, tongue and teeth drawn on their own layer, clipped to the opening
    if m.ht + m.hb > 0.5 or m.tuck:
        top_y = float(up_open.min())
        bot_y = float(low_open.max()) if not m.tuck else cy + m.teeth_u
        inner = p.sub(CX - m.a - 2, top_y - 2, CX + m.a + 2, bot_y + 2)
        inner.poly([(CX - 60, top_y - 4), (CX + 60, top_y - 4), (CX + 60, bot_y + 4),
                    (CX - 60, bot_y + 4)], CAVITY)
        if m.tongue == "low":
            inner.ellipse(CX, bot_y - 1, m.a * 0.62, max(3.0, (bot_y - cy) * 0.45), fill=TONGUE)
        elif m.tongue == "back":
            inner.ellipse(CX, cy + m.hb * 0.55, m.a * 0.75, m.hb * 0.5, fill=TONGUE_DARK)
            inner.ellipse(CX, bot_y, m.a * 0.55, 3, fill=TONGUE)
        elif m.tongue == "tip_up":
            inner.ellipse(CX, bot_y - 1, m.a * 0.6, max(3.0, m.hb * 0.4), fill=TONGUE)
            inner.ellipse(CX, top_y + m.teeth_u + 1.5, 9, 4.5, fill=TONGUE)
        if m.teeth_u > 0:  # upper teeth: a band with a gently curved biting edge
            edge = top_y + m.ht * 0.15 + m.teeth_u + 1.2 * u ** 2 - corner_lift * 0.5
            inner.poly([(CX - m.a - 2, top_y - 4), (CX + m.a + 2, top_y - 4)]
                       + list(zip(xs[::-1] * 1.0, edge[::-1], strict=True)), TEETH)
            for tx in (-7.5, 0.0, 7.5):
                inner.line([(CX + tx, top_y), (CX + tx, float(edge[20]) - 1.0)],
                           (228, 224, 216), 0.6)
        if m.teeth_l > 0:
            edge = bot_y - m.hb * 0.1 - m.teeth_l - 1.0 * u ** 2
            inner.poly(list(zip(xs, edge, strict=True))
                       + [(CX + m.a + 2, bot_y + 4), (CX - m.a - 2, bot_y + 4)],
                       (236, 234, 226))
        if m.tongue == "tip_out":
            inner.ellipse(CX, cy + 3.5, 12.5, 6.0, fill=TONGUE)
            inner.line(_arc(CX, cy + 3.5, 12.5, 6.0, 200, 340, 12), TONGUE_DARK, 1)
        mask = p.sub(CX - m.a - 2, top_y - 2, CX + m.a + 2, bot_y + 2)
        opening = list(zip(xs, up_open, strict=True)) + list(
            zip(xs[::-1], low_open[::-1] if not m.tuck else (up_open * 0 + bot_y)[::-1],
                strict=True))
        mask.poly(opening, (255, 255, 255))
        p.put(inner, mask.img.getchannel("A"))

    # lips
    upper = list(zip(xe, up_out, strict=True)) + list(zip(xe[::-1], up_in[::-1], strict=True))
    lower = list(zip(xe, low_in, strict=True)) + list(zip(xe[::-1], low_out[::-1], strict=True))
    p.poly(lower, LIP_LOW)
    p.poly(upper, LIP_UP)
    # highlight on the lower lip
    p.soft_ellipse(CX + 3, float(low_out.max()) - m.ll * 0.45, m.a * 0.35, 1.8,
                   (255, 222, 216), 0.5, 1.2)
    # the line where the lips meet, and the corners
    if m.ht + m.hb <= 0.5 and not m.tuck:
        meet = list(zip(xe, cy - lift_e, strict=True))
        p.line(meet, LIP_LINE, 2.0 if m.press else 1.4)
    for side in (-1, 1):
        x = CX + side * m.a * ext
        p.soft_ellipse(x, cy - m.smile, 1.8, 1.8, LIP_LINE, 0.7, 0.6)
    if m.press:  # pressed lips bulge the skin a little above and below
        p.soft_ellipse(CX, float(up_out.min()) - 3, m.a * 0.6, 2.5, SKIN_DEEP, 0.35, 2)


def _draw_head_front(p: _Pen, viseme: str | MouthShape, blink: float):
    m = viseme if isinstance(viseme, MouthShape) else MOUTHS[viseme]
    # ears
    for side in (-1, 1):
        p.ellipse(CX + side * 98, HEAD_CY + 6, 14, 24, fill=SKIN_SHADE)
        p.ellipse(CX + side * 99, HEAD_CY + 6, 7, 14, fill=SKIN_DEEP)
    # face
    p.poly(_face_contour(m.jaw), SKIN)
    # soft shading along the jaw and under the fringe
    p.soft_ellipse(CX, HEAD_CY - 86, 86, 26, SKIN_SHADE, 0.6, 8)
    # cheeks
    for side in (-1, 1):
        p.soft_ellipse(CX + side * 60, 290, 20, 12, BLUSH, 0.42, 7)
    # nose: a soft shadow and two nostril hints
    p.soft_ellipse(CX + 6, 286, 8, 13, SKIN_DEEP, 0.45, 4)
    p.line(_arc(CX, 290, 11, 6, 20, 160, 16), SKIN_DEEP, 2.0)
    # eyes and brows
    for side in (-1, 1):
        _draw_eye(p, CX + side * EYE_DX, blink)
        bx = CX + side * EYE_DX
        brow = [(bx - side * 18, EYE_Y - 22), (bx - side * 4, EYE_Y - 28),
                (bx + side * 12, EYE_Y - 27), (bx + side * 20, EYE_Y - 22)]
        p.line(brow, BROW, 4.2)
    # glasses: round frames, a bridge, arms to the ears
    for side in (-1, 1):
        gx = CX + side * EYE_DX
        p.ellipse(gx, EYE_Y + 1, 27, 24, outline=GLASSES, width=3.2)
        p.line([(gx + side * 27, EYE_Y - 2), (CX + side * 96, EYE_Y - 6)], GLASSES, 3)
    p.line(_arc(CX, EYE_Y + 2, 16, 7, 200, 340, 12), GLASSES, 3)
    # a glint on the lenses
    for side in (-1, 1):
        gx = CX + side * EYE_DX
        p.soft((gx - 14, EYE_Y - 16, gx - 6, EYE_Y - 8),
               lambda q, g=gx: q.line([(g - 14, EYE_Y - 8), (g - 6, EYE_Y - 16)],
                                      (255, 255, 255), 3), (255, 255, 255), 0.35, 1)
    _draw_mouth(p, m)
    # hair in front: a side-swept fringe
    fringe = (_arc(CX, HEAD_CY - 6, 114, 126, 180, 360, 50)
              + [(CX + 114, HEAD_CY + 20), (CX + 98, HEAD_CY - 30), (CX + 84, HEAD_CY - 66),
                 (CX + 40, HEAD_CY - 82), (CX - 10, HEAD_CY - 74), (CX - 56, HEAD_CY - 56),
                 (CX - 88, HEAD_CY - 22), (CX - 104, HEAD_CY + 26), (CX - 114, HEAD_CY + 10)])
    p.poly(_chaikin(fringe, 2), HAIR)
    # a few strands of light
    p.line(_arc(CX + 10, HEAD_CY - 30, 96, 90, 205, 250, 14), HAIR_LIGHT, 3)
    p.line(_arc(CX + 30, HEAD_CY - 40, 80, 80, 260, 300, 10), HAIR_LIGHT, 2.5)


def render(viseme: str | MouthShape = "sil", blink: float = 0.0, head: tuple[float, float] = (0.0, 0.0),
           breath: float = 0.0) -> np.ndarray:
    """One full 512x512 RGB frame of the tutor."""
    from PIL import Image

    img = _draw_background()
    hb = _Pen(*head)
    _draw_head_back(hb)
    img.alpha_composite(hb.img)
    body = _Pen(0.0, -1.6 * breath)
    _draw_body(body, breath)
    img.alpha_composite(body.img)
    hf = _Pen(*head)
    _draw_head_front(hf, viseme, blink)
    img.alpha_composite(hf.img)
    out = img.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
    return np.ascontiguousarray(np.asarray(out))


def _feather(h: int, w: int, edge: int) -> np.ndarray:
    """Alpha that is 255 inside and ramps to 0 over ``edge`` px at the borders."""
    ry = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    rx = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    r = np.minimum(ry[:, None], rx[None, :])
    t = np.clip((r + 0.5) / edge, 0, 1)
    t = t * t * (3 - 2 * t)
    return np.round(t * 255).astype(np.uint8)


def _crop(frame: np.ndarray, box: Box, alpha: np.ndarray) -> np.ndarray:
    rgb = frame[box.y:box.y + box.height, box.x:box.x + box.width]
    return np.ascontiguousarray(np.dstack([rgb, alpha]))


def idle_motion(phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head offset (dx, dy) and breath (-1..1) for idle phases in [0, 1)."""
    t = 2 * np.pi * np.asarray(phase, dtype=np.float64)
    breath = np.sin(2 * t)  # two breaths per idle cycle (4 s each)
    dx = 2.4 * np.sin(t) + 0.6 * np.sin(3 * t + 0.7)
    dy = 0.9 * np.sin(2 * t + 0.5) - 0.6 * breath
    return np.stack([dx, dy], -1), breath


def build_default_avatar(n_poses: int = N_POSES) -> AvatarAsset:
    """Draw the full asset: idle poses, 15 mouths and one between every two, 2 blink levels.
    Takes some seconds."""
    offsets, breath = idle_motion(np.arange(n_poses) / n_poses)
    # sub-pixel head offsets are drawn exactly (quantised to the supersampling grid)
    offsets = np.round(offsets * SS) / SS
    poses = np.stack([render("sil", 0.0, (float(o[0]), float(o[1])), float(b))
                      for o, b in zip(offsets, breath, strict=True)])
    mouth_alpha = _feather(MOUTH_BOX.height, MOUTH_BOX.width, 14)
    mouths = np.stack([_crop(render(v), MOUTH_BOX, mouth_alpha) for v in VISEMES])
    mids = np.stack([_crop(render(blend_shapes(MOUTHS[VISEMES[i]], MOUTHS[VISEMES[j]])),
                           MOUTH_BOX, mouth_alpha) for i, j in MID_PAIRS])
    eye_alpha = _feather(EYES_BOX.height, EYES_BOX.width, 10)
    blinks = np.stack([_crop(render("sil", b), EYES_BOX, eye_alpha) for b in (0.55, 1.0)])
    return AvatarAsset(
        name="tutor",
        poses=poses,
        head_offsets=offsets.astype(np.float32),
        mouths=mouths,
        mids=mids,
        mouth_box=MOUTH_BOX,
        blinks=blinks,
        eyes_box=EYES_BOX,
        fps_hint=25,
        idle_period_s=IDLE_PERIOD_S,
        blink_mean_interval_s=4.0,
        blink_duration_s=0.18,
        source={"kind": "drawn", "generator": f"avatar_pipeline.avatar.default/{DEFAULT_REF}"},
    )


def contact_sheet(cols: int = 5, zoom: float = 1.0) -> np.ndarray:
    """The 15 mouths (lower face crops) in a labelled grid, for the README."""
    from PIL import Image, ImageDraw, ImageFont

    crop = Box(x=176, y=272, width=160, height=122)
    font = ImageFont.load_default(size=18)
    tw, th = int(crop.width * 1.5 * zoom), int(crop.height * 1.5 * zoom)
    rows = math.ceil(len(VISEMES) / cols)
    sheet = Image.new("RGB", (cols * tw, rows * (th + 26)), (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    for i, v in enumerate(VISEMES):
        f = render(v)[crop.y:crop.y + crop.height, crop.x:crop.x + crop.width]
        tile = Image.fromarray(f).resize((tw, th), Image.LANCZOS)
        x, y = (i % cols) * tw, (i // cols) * (th + 26)
        sheet.paste(tile, (x, y + 26))
        d.text((x + 8, y + 3), f"{i}  {v}", fill=(30, 30, 30), font=font)
    return np.asarray(sheet)


_MEMO: AvatarAsset | None = None


def default_avatar() -> AvatarAsset:
    """The default avatar built once per process (tests, benchmarks); the registry caches it on
    disk for everything else."""
    global _MEMO
    if _MEMO is None:
        from avatar_pipeline.avatar.asset import asset_id

        _MEMO = build_default_avatar()
        _MEMO.id = asset_id(_MEMO)
    return _MEMO

"""Photo mouths warped over the face mesh: a piecewise-affine warp of lips and jaw.

When registration has MediaPipe's face mesh (:mod:`avatar_pipeline.avatar.face_mesh`), each
viseme moves the mesh's own points and the photo follows them triangle by triangle:

- the inner edges of both lips go to the viseme's opening (a superellipse between the photo's
  own inner corners, along the photo's own lip line, flattened when the lips round);
- the rest of each lip moves with its inner edge, so each lip keeps its shape and thickness
  (PP presses them towards the line instead);
- the lower face (chin and jaw line, the skin between lip and chin) drops with the lower lip as
  one piece, less towards the ears; the skin above the upper lip follows it a little;
- everything narrows or spreads about the mouth with the viseme's width;
- points on the border of the mouth box stay where they are, so the sprite joins the face.

The triangles come from one Delaunay triangulation (OpenCV's ``Subdiv2D``) of the points as
they sit in a wide-open mouth, shared by every viseme: the opening is a hole bounded by the
inner lip edges, so no triangle joins the upper lip to the lower one across it. The backward map
(output pixel -> photo pixel) is each triangle's affine map, rasterised once per mouth; the
opening itself is painted by :func:`avatar_pipeline.avatar.photo_mouth.paint_interior` between
exactly the inner edges the triangles end at.

Without a mesh (no model, or a face it did not fit) registration keeps the smooth displacement
field of :func:`avatar_pipeline.avatar.photo_mouth.synth_mouth`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_pipeline.avatar.asset import Box
from avatar_pipeline.avatar.photo_mouth import (
    MouthGeometry,
    PhotoMouth,
    finish_mouth,
    smoothstep,
    superellipse_profile,
)

# MediaPipe face-mesh indices of the lips: four rings, left corner to right corner, from the
# inner edge (where the lips part) out to the outer edge (the 80 lip points of MediaPipe's
# attention mesh)
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
INNER_CORNERS = (78, 308)
UPPER_LIP = (62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292,  # ring 2
             76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306,  # ring 1
             61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)  # outer edge
LOWER_LIP = (96, 89, 179, 86, 15, 316, 403, 319, 325,
             77, 90, 180, 85, 16, 315, 404, 320, 307,
             146, 91, 181, 84, 17, 314, 405, 321, 375)

_TOPOLOGY_MOUTH = PhotoMouth(open=1.0)  # the pose the triangulation is made in
_ANCHOR_STEP = 12  # px between the fixed points on the box's border


@dataclass
class _Points:
    src: np.ndarray  # (P, 2) where each control point is in the photo
    mesh_idx: np.ndarray  # (P,) its mesh index, -1 for a border anchor
    roles: np.ndarray  # (P,) ui / li / corner (inner edges), uo / lo (lips), face, anchor


_ROLE = ({j: "ui" for j in UPPER_INNER} | {j: "li" for j in LOWER_INNER}
         | {j: "corner" for j in INNER_CORNERS} | {j: "uo" for j in UPPER_LIP}
         | {j: "lo" for j in LOWER_LIP})


def _control_points(g: MouthGeometry, box: Box) -> _Points:
    mesh = g.mesh
    x0, y0, x1, y1 = box.x, box.y, box.x + box.width - 1, box.y + box.height - 1
    inside = ((mesh[:, 0] > x0 + 3) & (mesh[:, 0] < x1 - 3)
              & (mesh[:, 1] > y0 + 3) & (mesh[:, 1] < y1 - 3))
    idx = np.nonzero(inside)[0]
    nx = max(2, round((x1 - x0) / _ANCHOR_STEP) + 1)
    ny = max(2, round((y1 - y0) / _ANCHOR_STEP) + 1)
    bx, by = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    border = np.concatenate([np.stack([bx, np.full(nx, y0)], 1), np.stack([bx, np.full(nx, y1)], 1),
                             np.stack([np.full(ny - 2, x0), by[1:-1]], 1),
                             np.stack([np.full(ny - 2, x1), by[1:-1]], 1)])
    mesh_idx = np.concatenate([idx, np.full(len(border), -1)])
    roles = np.array([_ROLE.get(int(j), "face") if j >= 0 else "anchor" for j in mesh_idx])
    return _Points(np.concatenate([mesh[idx, :2], border]).astype(np.float64), mesh_idx, roles)


def _interp_x(x, xs, ys):
    order = np.argsort(xs)
    return np.interp(x, np.asarray(xs)[order], np.asarray(ys)[order])


def _targets(g: MouthGeometry, m: PhotoMouth, box: Box, pts: _Points) -> np.ndarray:
    """Where each control point goes for mouth ``m`` (see the module's docstring)."""
    mesh, a, iod = g.mesh, g.half_w, g.iod
    src = pts.src
    x, y = src[:, 0], src[:, 1]
    roles = pts.roles

    ui, li = mesh[list(UPPER_INNER), :2], mesh[list(LOWER_INNER), :2]
    line_s = (_interp_x(x, ui[:, 0], ui[:, 1]) + _interp_x(x, li[:, 0], li[:, 1])) / 2
    line_c = float((_interp_x(g.cx, ui[:, 0], ui[:, 1]) + _interp_x(g.cx, li[:, 0], li[:, 1])) / 2)
    rnd = float(np.clip((1 - m.sx) / 0.35, 0, 1))  # rounded lips pucker: the smile flattens
    line_d = line_c + (line_s - line_c) * (1 - 0.8 * rnd)

    # width: narrow or spread about the mouth, fading over the cheeks
    sxl = 1 + (m.sx - 1) * np.exp(-((x - g.cx) / (1.1 * a)) ** 2 - ((y - line_s) / (0.25 * iod)) ** 2)
    xd = g.cx + (x - g.cx) * sxl

    # the opening between the (moved) inner corners
    corners = np.array([xd[(pts.mesh_idx == j)][0] if (pts.mesh_idx == j).any()
                        else mesh[j, 0] for j in INNER_CORNERS])
    cx_o, hw_o = corners.mean(), max((corners[1] - corners[0]) / 2, 1.0)
    gap = m.open * a * superellipse_profile((xd - cx_o) / hw_o, m.k)
    yd = y.copy()
    sel = roles == "ui"
    yd[sel] = line_d[sel] - 0.3 * gap[sel]
    sel = roles == "li"
    yd[sel] = line_d[sel] + 0.7 * gap[sel]
    sel = roles == "corner"
    yd[sel] = line_d[sel]

    # the rest of each lip moves with its inner edge, by column
    inner_up = np.isin(roles, ("ui", "corner"))
    inner_lo = np.isin(roles, ("li", "corner"))
    shift_up = _interp_x(x, x[inner_up], (yd - y)[inner_up])
    shift_lo = _interp_x(x, x[inner_lo], (yd - y)[inner_lo])
    c_up = float(_interp_x(g.cx, x[inner_up], (yd - y)[inner_up]))
    c_lo = float(_interp_x(g.cx, x[inner_lo], (yd - y)[inner_lo]))  # the jaw's drop
    lip_w = 1 - smoothstep(0.9 * a, 1.4 * a, np.abs(x - g.cx))
    wj = 1 - smoothstep(1.0 * a, 3.0 * a, np.abs(x - g.cx))  # less towards the ears
    sel = roles == "uo"
    yd[sel] = y[sel] + shift_up[sel] * lip_w[sel] + m.press * (line_s[sel] - y[sel])
    sel = roles == "lo"
    yd[sel] = y[sel] + shift_lo[sel] * lip_w[sel] + m.press * (line_s[sel] - y[sel])

    # the rest of the face: the lower face drops with the jaw, the skin above follows the lip
    lip_lo_h = max(g.lip_bottom - g.line_y, 4.0)
    lip_up_h = max(g.line_y - g.lip_top, 3.0)
    face = roles == "face"
    below = face & (y >= line_s)
    above = face & (y < line_s)
    near_lo = 1 - smoothstep(lip_lo_h * 0.8, lip_lo_h * 2.5, y - line_s)
    near_up = 1 - smoothstep(lip_up_h * 0.8, lip_up_h * 2.5, line_s - y)
    bottom = box.y + box.height
    fall_lo = 1 - smoothstep(bottom - 0.6 * iod, bottom - 0.1 * iod, y)
    fall_up = smoothstep(line_s - 0.55 * iod, line_s - 0.05 * iod, y)
    # beside the mouth the cheek stretches: no move on the line through the corners, the jaw's
    # drop (the upper lip's lift) further from it, so skin above and below never cross
    ramp_lo = lip_w + (1 - lip_w) * smoothstep(0, 2.5 * lip_lo_h, y - line_s)
    ramp_up = lip_w + (1 - lip_w) * smoothstep(0, 2.5 * lip_up_h, line_s - y)
    lo = shift_lo * near_lo * lip_w + c_lo * wj * (1 - near_lo * lip_w) * ramp_lo
    up = shift_up * near_up * lip_w + 0.5 * c_up * wj * (1 - near_up * lip_w) * ramp_up
    yd[below] = y[below] + (lo * fall_lo)[below]
    yd[above] = y[above] + (up * fall_up)[above]

    anchor = roles == "anchor"
    xd[anchor], yd[anchor] = x[anchor], y[anchor]
    return np.stack([xd, yd], 1)


def _triangles(points: np.ndarray, mesh_idx: np.ndarray, box: Box) -> np.ndarray:
    """Delaunay triangles (indices into ``points``) of points inside ``box``'s rectangle. The
    lips' inner edges go in first and a point within 2 px of one already in is left out (a lip
    ring lying on the inner edge would make slivers that flip as the mouth moves)."""
    import cv2

    rect = (box.x - 2, box.y - 2, box.width + 4, box.height + 4)
    sub = cv2.Subdiv2D(rect)
    first = np.isin(mesh_idx, UPPER_INNER + LOWER_INNER)
    keep: list[int] = []
    for i in np.concatenate([np.nonzero(first)[0], np.nonzero(~first)[0]]):
        p = points[i]
        if keep and np.min(np.hypot(*(points[keep] - p).T)) < 2.0:
            continue
        sub.insert((float(p[0]), float(p[1])))
        keep.append(int(i))
    kept = points[keep]
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        d = np.hypot(kept[None, :, 0] - t[:, None, 0], kept[None, :, 1] - t[:, None, 1])
        j = d.argmin(1)
        if d[np.arange(3), j].max() < 0.01:  # not one of Subdiv2D's outer virtual vertices
            tris.append([keep[k] for k in j])
    return np.asarray(tris, np.int64)


class MeshWarp:
    """The warp of one photo's mouth box: control points and triangles, made once; then any
    number of mouths."""

    def __init__(self, g: MouthGeometry, box: Box):
        self.g, self.box = g, box
        self.pts = _control_points(g, box)
        self.tris = _triangles(_targets(g, _TOPOLOGY_MOUTH, box, self.pts), self.pts.mesh_idx, box)
        self._ys, self._xs = np.mgrid[box.y:box.y + box.height,
                                      box.x:box.x + box.width].astype(np.float64)

    def map(self, m: PhotoMouth):
        """The backward map of mouth ``m`` (photo x and y for every pixel of the box), and
        where its inner lip edges are (upper and lower, (x, y) left to right)."""
        import cv2

        g, box, tris, src = self.g, self.box, self.tris, self.pts.src
        dst = _targets(g, m, box, self.pts)
        d, s = dst[tris], src[tris]  # (T, 3, 2)
        area = ((d[:, 1, 0] - d[:, 0, 0]) * (d[:, 2, 1] - d[:, 0, 1])
                - (d[:, 2, 0] - d[:, 0, 0]) * (d[:, 1, 1] - d[:, 0, 1]))
        live = np.abs(area) >= 1e-6  # a collapsed triangle (lips that meet) covers no pixel
        mats = np.zeros((len(tris), 2, 3), np.float64)
        # dest -> photo: solve [x y 1] @ M.T = src for each triangle's three corners
        mats[live] = np.linalg.solve(np.concatenate([d[live], np.ones((live.sum(), 3, 1))], 2),
                                     s[live]).transpose(0, 2, 1)
        lo, hi = s.min(1) - 1, s.max(1) + 1
        tri_id = np.full((box.height, box.width), -1, np.int32)
        polys = np.rint((d - [box.x, box.y]) * 16).astype(np.int32)
        # small triangles first: the rasteriser takes pixels on a triangle's edges too, and a
        # sliver's affine map throws such a pixel far; its big neighbours then take them back
        for t in np.argsort(np.abs(area)):
            if live[t]:
                cv2.fillConvexPoly(tri_id, polys[t], int(t), shift=4)
        ti = np.maximum(tri_id, 0)
        mt = mats[ti]
        xs, ys = self._xs, self._ys
        # a pixel just outside its triangle stays within a pixel of where the triangle is from
        map_x = np.clip(mt[..., 0, 0] * xs + mt[..., 0, 1] * ys + mt[..., 0, 2],
                        lo[ti, 0], hi[ti, 0])
        map_y = np.clip(mt[..., 1, 0] * xs + mt[..., 1, 1] * ys + mt[..., 1, 2],
                        lo[ti, 1], hi[ti, 1])
        none = tri_id < 0
        map_x[none], map_y[none] = xs[none], ys[none]
        at = {int(j): n for n, j in enumerate(self.pts.mesh_idx) if j >= 0}
        upper = np.array([dst[at[j]] if j in at else g.mesh[j, :2] for j in UPPER_INNER])
        lower = np.array([dst[at[j]] if j in at else g.mesh[j, :2] for j in LOWER_INNER])
        return map_x.astype(np.float32), map_y.astype(np.float32), (upper, lower)

    def synth(self, img: np.ndarray, m: PhotoMouth, tint: np.ndarray) -> np.ndarray:
        """The mouth box of ``img`` with viseme ``m``: RGB float32."""
        import cv2

        g = self.g
        map_x, map_y, (upper, lower) = self.map(m)
        out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        ys, xs = self._ys.astype(np.float32), self._xs.astype(np.float32)
        x1 = xs[0]
        top_v = _interp_x(x1, upper[:, 0], upper[:, 1])[None, :].astype(np.float32)
        bot_v = _interp_x(x1, lower[:, 0], lower[:, 1])[None, :].astype(np.float32)
        left, right = upper[0, 0], upper[-1, 0]
        u = ((x1 - (left + right) / 2) / max((right - left) / 2, 1.0)).astype(np.float32)
        return finish_mouth(img, out, g, m, ys, xs, u, top_v, bot_v, (top_v + bot_v) / 2,
                            bot_v - top_v, tint, seam_cols=np.abs(u) < 1.0)

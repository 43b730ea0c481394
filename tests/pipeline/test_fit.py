"""Avatars fitted to a deployment's output size (avatar_pipeline.avatar.fit): the whole avatar in
the middle of the frame at the same proportions, its mouth and eyes still where the face is."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.avatar import AvatarError, AvatarRegistry
from avatar_pipeline.avatar.fit import fit_asset
from avatar_pipeline.compose import FrameState, NumpyCompositor
from avatar_pipeline.viseme_set import VISEMES


def _frame(asset, viseme: str) -> np.ndarray:
    comp = NumpyCompositor("rgba")
    aid = comp.add_avatar(asset)
    w = np.zeros(len(VISEMES), np.float32)
    w[VISEMES.index(viseme)] = 1
    return comp.compose([FrameState(aid, w, t=0.0)]).rgba(0)[..., :3].astype(np.int16)


@pytest.mark.parametrize("size", [(854, 480), (1280, 720), (480, 640)])
def test_fitted_avatar_fills_the_frame_with_the_face_where_it_was(size):
    import cv2

    width, height = size
    a = AvatarRegistry().default()
    f = fit_asset(a, width, height)
    assert (f.width, f.height) == size and f.id != a.id
    s = min(width / a.width, height / a.height)
    pw, ph = round(a.width * s), round(a.height * s)
    dx, dy = (width - pw) // 2, (height - ph) // 2
    # the avatar itself is scaled, not cropped: the middle of the frame is the original pose
    closed = _frame(f, "sil")
    want = cv2.resize(_frame(a, "sil").astype(np.uint8), (pw, ph), interpolation=cv2.INTER_AREA)
    inner = closed[dy:dy + ph, dx:dx + pw]
    assert np.abs(inner - want).mean() < 3
    # an open mouth changes the frame only inside the fitted mouth box
    diff = np.abs(_frame(f, "aa") - closed).sum(-1) > 30
    ys, xs = np.nonzero(diff)
    box = f.mouth_box
    assert diff.sum() > 200
    assert box.x - 3 <= xs.min() and xs.max() <= box.x + box.width + 3
    assert box.y - 3 <= ys.min() and ys.max() <= box.y + box.height + 3
    # and that box is where the scaled original's mouth is
    ob = a.mouth_box
    assert abs(box.x - (round(ob.x * s) + dx)) <= 1 and abs(box.y - (round(ob.y * s) + dy)) <= 1


def test_same_size_is_the_same_asset_and_impossible_sizes_are_refused():
    a = AvatarRegistry().default()
    assert fit_asset(a, a.width, a.height) is a
    with pytest.raises(AvatarError, match="even"):
        fit_asset(a, 853, 480)

"""An avatar made to fill a deployment's output frame (``video.width`` x ``video.height``).

Assets are drawn or registered at one size (512x512). A deployment that streams another size
(854x480, 16:9) gets every asset fitted once, when it is loaded: the poses are scaled to fit the
frame (never cropped: the whole head stays in view) and placed in its middle on a canvas made from
the pose itself (scaled to cover the frame, blurred and dimmed, as video players fill a
letterbox), and the mouth and blink sprites, their boxes and the idle head motion are scaled the
same way. The compositor then works at the output size with no per-frame scaling at all.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avatar_pipeline.avatar.asset import AvatarAsset, AvatarError, Box


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    if (img.shape[1], img.shape[0]) == (width, height):
        return img
    shrink = width < img.shape[1] or height < img.shape[0]
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=(
        cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)))


def _canvas(pose: np.ndarray, width: int, height: int) -> np.ndarray:
    """The pose scaled to cover the frame, blurred and dimmed: the background outside it."""
    import cv2

    h, w = pose.shape[:2]
    s = max(width / w, height / h)
    cw, ch = max(width, round(w * s)), max(height, round(h * s))
    big = _resize(pose, cw, ch)
    x0, y0 = (cw - width) // 2, (ch - height) // 2
    crop = big[y0:y0 + height, x0:x0 + width]
    blurred = cv2.GaussianBlur(crop, (0, 0), sigmaX=max(width, height) / 40)
    return (blurred.astype(np.float32) * 0.75).astype(np.uint8)


def _scale_box(box: Box, s: float, dx: int, dy: int, size: tuple[int, int]) -> Box:
    return Box(round(box.x * s) + dx, round(box.y * s) + dy, size[1], size[0])


def fit_asset(asset: AvatarAsset, width: int, height: int) -> AvatarAsset:
    """``asset`` at ``width`` x ``height`` (itself when it already is); AvatarError when the
    frame is too small to hold it."""
    if (asset.width, asset.height) == (width, height):
        return asset
    if width % 2 or height % 2:
        raise AvatarError(f"output size {width}x{height} must be even")
    s = min(width / asset.width, height / asset.height)
    pw, ph = round(asset.width * s), round(asset.height * s)
    dx, dy = (width - pw) // 2, (height - ph) // 2
    poses = np.empty((len(asset.poses), height, width, 3), np.uint8)
    # one canvas for every pose: blurred this much, the idle motion's few pixels do not show
    poses[:] = _canvas(asset.poses[0], width, height) if (pw, ph) != (width, height) else 0
    for i, pose in enumerate(asset.poses):
        poses[i, dy:dy + ph, dx:dx + pw] = _resize(pose, pw, ph)

    def sprites(arr: np.ndarray) -> np.ndarray:
        sw, sh = max(2, round(arr.shape[2] * s)), max(2, round(arr.shape[1] * s))
        return np.ascontiguousarray(np.stack([_resize(a, sw, sh) for a in arr]))

    mouths, blinks = sprites(asset.mouths), sprites(asset.blinks)
    mids = sprites(asset.mids) if asset.mids is not None else None
    fitted = dataclasses.replace(
        asset, poses=poses, mids=mids,
        head_offsets=(asset.head_offsets * np.float32(s)).astype(np.float32),
        mouths=mouths, blinks=blinks,
        mouth_box=_scale_box(asset.mouth_box, s, dx, dy, mouths.shape[1:3]),
        eyes_box=_scale_box(asset.eyes_box, s, dx, dy, blinks.shape[1:3]),
        source={**asset.source, "fitted_from": [asset.width, asset.height]},
        id=f"{asset.id}-{width}x{height}" if asset.id else "")
    try:
        fitted.validate()
    except AvatarError as exc:
        raise AvatarError(f"the avatar does not fit {width}x{height}: {exc}") from None
    return fitted

"""Photo registration: the astronaut portrait becomes an avatar; photos that cannot work are
refused with their reason; uploads are bounded (size, pixels, formats)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from avatar_pipeline.avatar import AvatarError, AvatarRegistry
from avatar_pipeline.avatar import photo as photo_mod
from avatar_pipeline.avatar.photo import build_photo_avatar, detect_face, register_photo
from avatar_pipeline.compose import FrameState, NumpyCompositor
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX, VISEMES

ASTRONAUT = skimage.data.astronaut()


def _save(tmp_path, arr, name="photo.jpg", **kw):
    p = tmp_path / name
    Image.fromarray(arr).save(p, **kw)
    return p


@pytest.fixture(scope="module")
def astro_asset():
    return build_photo_avatar(ASTRONAUT, name="astronaut")


def test_astronaut_registers(tmp_path):
    reg = AvatarRegistry(tmp_path / "cache")
    p = _save(tmp_path, ASTRONAUT, quality=95)
    t0 = time.perf_counter()
    avatar_id = register_photo(p, registry=reg)
    first = time.perf_counter() - t0
    asset = AvatarRegistry(tmp_path / "cache").get(avatar_id)
    assert asset.source["kind"] == "photo"
    assert asset.source["mouth_from_lips"] is True
    assert asset.mouths.shape[0] == NUM_VISEMES and (asset.width, asset.height) == (512, 512)
    # the same photo again: served from the cache, nothing detected
    t0 = time.perf_counter()
    assert register_photo(p, registry=reg) == avatar_id
    assert time.perf_counter() - t0 < first


def test_photo_mouths_move_the_mouth_only(astro_asset):
    comp = NumpyCompositor()
    aid = comp.add_avatar(astro_asset)
    states = []
    for v in VISEMES:
        w = np.zeros(NUM_VISEMES, np.float32)
        w[VISEME_INDEX[v]] = 1
        states.append(FrameState(aid, w, t=0.0))
    b = comp.compose(states)
    frames = np.stack([b.rgba(i)[..., :3].astype(np.int16) for i in range(NUM_VISEMES)])
    box = astro_asset.mouth_box
    m = 6
    outside = np.ones((512, 512), bool)
    outside[box.y - m:box.y + box.height + m, box.x - m:box.x + box.width + m] = False
    sil = frames[0]
    for i, v in enumerate(VISEMES[1:], start=1):
        d = np.abs(frames[i] - sil).max(-1)
        assert d[outside].max() == 0, v
        assert (d > 25).sum() > 30, f"{v} looks like sil on the photo"
    # aa opens widest: the most dark mouth interior where the lips part
    def dark(f):
        c = f[box.y:box.y + int(0.45 * box.height), box.x + box.width // 4:box.x + 3 * box.width // 4]
        return int((c.sum(-1) < 200).sum())

    dark = [dark(f) for f in frames]
    assert dark[VISEME_INDEX["aa"]] == max(dark)
    assert dark[VISEME_INDEX["aa"]] > dark[VISEME_INDEX["sil"]] + 300


def test_photo_blink(astro_asset):
    comp = NumpyCompositor()
    aid = comp.add_avatar(astro_asset)
    w = np.zeros(NUM_VISEMES, np.float32)
    b = comp.compose([FrameState(aid, w, 0.0, blink=0.0), FrameState(aid, w, 0.0, blink=1.0)])
    d = np.abs(b.rgba(0).astype(np.int16) - b.rgba(1).astype(np.int16)).max(-1)
    assert (d > 30).sum() > 100


def test_refuses_no_face(tmp_path):
    with pytest.raises(AvatarError, match="no face found"):
        register_photo(_save(tmp_path, skimage.data.coffee()),
                       registry=AvatarRegistry(tmp_path / "c"))


def test_refuses_two_faces(tmp_path):
    two = np.concatenate([ASTRONAUT, ASTRONAUT], axis=1)
    with pytest.raises(AvatarError, match="2 faces found"):
        register_photo(_save(tmp_path, two, "two.png"), registry=AvatarRegistry(tmp_path / "c"))


@pytest.mark.parametrize("edit,reason", [
    (lambda im: (im * 0.18).astype(np.uint8), "too dark"),
    (lambda im: cv2.GaussianBlur(im, (0, 0), 3), "too blurred"),
    (lambda im: cv2.resize(im, (200, 200), interpolation=cv2.INTER_AREA), "too small"),
])
def test_refuses_bad_quality(edit, reason):
    with pytest.raises(AvatarError, match=reason):
        detect_face(edit(ASTRONAUT))


def _rotated(im, deg):
    m = cv2.getRotationMatrix2D((225, 115), deg, 1.0)
    return cv2.warpAffine(im, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)


def _one_eye_covered(im):
    out = im.copy()
    out[85:120, 228:275] = (40, 30, 25)
    return out


@pytest.mark.parametrize("edit", [_one_eye_covered, lambda im: _rotated(im, 20)])
def test_refuses_not_frontal(edit):
    with pytest.raises(AvatarError, match="not frontal enough"):
        detect_face(edit(ASTRONAUT))
    detect_face(_rotated(ASTRONAUT, 8))  # a slight tilt is fine


def test_refuses_corrupt_and_wrong_format(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    with pytest.raises(AvatarError, match="not a readable image"):
        register_photo(bad, registry=AvatarRegistry(tmp_path / "c"))
    good = _save(tmp_path, ASTRONAUT, "cut.png")
    cut = tmp_path / "truncated.png"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(AvatarError, match="not a readable image"):
        register_photo(cut, registry=AvatarRegistry(tmp_path / "c"))
    tif = _save(tmp_path, ASTRONAUT, "a.tiff")
    with pytest.raises(AvatarError, match="format TIFF not accepted"):
        register_photo(tif, registry=AvatarRegistry(tmp_path / "c"))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AvatarError, match="empty"):
        register_photo(empty, registry=AvatarRegistry(tmp_path / "c"))


def test_refuses_oversized_uploads(tmp_path, monkeypatch):
    # a decompression bomb: small file, 48 MP of pixels -- refused before decoding
    bomb = tmp_path / "bomb.png"
    Image.new("L", (8000, 6000)).save(bomb, optimize=False)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(AvatarError, match="MP, the limit is"):
        register_photo(bomb, registry=AvatarRegistry(tmp_path / "c"))
    # a file over the byte limit
    p = _save(tmp_path, ASTRONAUT, "big.png")
    monkeypatch.setattr(photo_mod, "MAX_FILE_BYTES", p.stat().st_size - 1)
    with pytest.raises(AvatarError, match="MB, the limit is"):
        register_photo(p, registry=AvatarRegistry(tmp_path / "c"))


def test_first_frame_of_video_and_gif(tmp_path):
    import av

    vid = tmp_path / "clip.mp4"
    with av.open(str(vid), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 512, 512, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(ASTRONAUT, format="rgb24")
            frame.pts = i
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    reg = AvatarRegistry(tmp_path / "c")
    a = reg.get(register_photo(vid, registry=reg))
    assert a.source["file"] == "clip.mp4"
    gif = tmp_path / "a.gif"
    frames = [Image.fromarray(ASTRONAUT), Image.fromarray(skimage.data.coffee()[:512, :512])]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    assert reg.get(register_photo(gif, registry=reg)).source["file"] == "a.gif"


def test_closed_mouth_photo_opens(astro_asset):
    """The usual upload (lips closed): here our own 'sil' frame of the astronaut. It registers
    as closed, and its open visemes show a dark mouth interior that sil does not."""
    comp = NumpyCompositor()
    aid = comp.add_avatar(astro_asset)
    sil = np.zeros(NUM_VISEMES, np.float32)
    closed = comp.compose([FrameState(aid, sil, 0.0)]).rgba(0)[..., :3].copy()
    asset = build_photo_avatar(closed, name="closed")
    assert asset.source["mouth_from_lips"] is True
    m = asset.mouths[..., :3].astype(np.int16)

    def interior(i):  # dark pixels about the lip line (not the chin or the clothes)
        h, w = m[i].shape[:2]
        return int((m[i][:int(0.45 * h), w // 4:3 * w // 4].sum(-1) < 200).sum())

    closed_px = interior(VISEME_INDEX["sil"])  # the line where the lips meet, no more
    assert interior(VISEME_INDEX["aa"]) > 3 * closed_px + 300
    assert interior(VISEME_INDEX["oh"]) > closed_px + 100


def test_phone_photo_stored_sideways(tmp_path):
    """A JPEG stored rotated with an EXIF orientation tag (as phones do) is turned upright."""
    p = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.ascontiguousarray(np.rot90(ASTRONAUT, 1))).save(p, exif=exif, quality=92)
    reg = AvatarRegistry(tmp_path / "c")
    assert reg.get(register_photo(p, registry=reg)).source["kind"] == "photo"


def test_open_mouths_are_shaded_like_a_mouth_not_painted(astro_asset):
    """The inside of an open mouth takes its colour from the photo's lips (not a saturated
    paint), is lighter just inside the lips than deep in the mouth (light falls in through the
    opening) and carries grain like the photo around it; flat paint has none of these."""
    import cv2

    from avatar_pipeline.viseme_set import VISEME_INDEX

    a = astro_asset
    # the lips: the reddest pixels of the closed mouth's middle third
    sil = a.mouths[VISEME_INDEX["sil"], :, a.mouth_box.width // 3:2 * a.mouth_box.width // 3,
                   :3].reshape(-1, 3).astype(np.float32)
    red = sil[:, 0] - sil[:, 1]
    lips = np.median(sil[red >= np.percentile(red, 90)], 0)
    lip_hue = lips[0] / lips[1]
    for v in ("aa", "oh"):
        out = a.mouths[VISEME_INDEX[v], ..., :3].astype(np.float32)
        lum = out.mean(-1)
        cavity = (lum < 90).astype(np.uint8)
        core = cv2.erode(cavity, np.ones((11, 11), np.uint8)).astype(bool)
        rim = cavity.astype(bool) & ~cv2.erode(cavity, np.ones((5, 5), np.uint8)).astype(bool)
        assert core.sum() > 100 and rim.sum() > 100, (v, core.sum(), rim.sum())
        assert lum[rim].mean() > lum[core].mean() + 10, v
        grain = (lum - cv2.blur(lum, (3, 3)))[core].std()
        assert grain > 1.0, (v, grain)
        hue = (out[..., 0] / np.maximum(out[..., 1], 1))[core].mean()
        assert abs(hue - lip_hue) < 0.35, (v, hue, lip_hue)


def test_the_face_mesh_finds_the_mouth_in_a_black_and_white_photo():
    """Lip colour cannot find the lips of a black-and-white photo (it falls back to where the
    eyes put a mouth: narrower, lower, closed); MediaPipe's face mesh (its .tflite out of the
    mediapipe wheel, fetched by setup) finds the same mouth as in the colour photo, open."""
    import cv2

    from avatar_pipeline.avatar import face_mesh
    from avatar_pipeline.avatar.photo import find_mouth, locate_mouth, normalise

    assert face_mesh.available(), "setup fetches the face-mesh model"
    colour = normalise(ASTRONAUT)
    grey = normalise(np.repeat(cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2GRAY)[..., None], 3, -1))
    ref, how = find_mouth(colour)
    assert how == "face_mesh"
    by_colour = locate_mouth(colour.img, colour.eyes)
    assert by_colour.from_segmentation  # on the colour photo both agree ...
    for k in ("cx", "line_y", "half_w", "lip_top", "lip_bottom"):
        assert abs(getattr(ref, k) - getattr(by_colour, k)) < 4, k
    assert not locate_mouth(grey.img, grey.eyes).from_segmentation  # ... lip colour is lost
    mesh, how = find_mouth(grey)
    assert how == "face_mesh"
    for k in ("cx", "line_y", "half_w", "lip_top", "lip_bottom"):
        assert abs(getattr(mesh, k) - getattr(ref, k)) < 3, k
    assert mesh.gap > 5 and mesh.teeth_rgb is not None, "the photo's open smile is seen"


def test_a_damaged_face_mesh_model_is_not_used(tmp_path, monkeypatch):
    """A model file whose sha256 is not the pinned one is never run: registration falls back to
    the lip colour and the asset says so."""
    from avatar_pipeline.avatar import face_mesh
    from avatar_pipeline.avatar.photo import find_mouth, normalise

    bad = tmp_path / "face_landmark.tflite"
    bad.write_bytes(face_mesh.model_file().read_bytes()[:-10] + b"0123456789")
    monkeypatch.setenv("FLEET_FACE_MESH", str(bad))
    assert not face_mesh.available()
    assert find_mouth(normalise(ASTRONAUT))[1] == "lip_colour"


def test_registered_photos_record_their_landmarks(astro_asset):
    assert astro_asset.source["landmarks"] == "face_mesh"


def _closed_astronaut(astro_asset) -> np.ndarray:
    comp = NumpyCompositor()
    aid = comp.add_avatar(astro_asset)
    return comp.compose([FrameState(aid, np.zeros(NUM_VISEMES, np.float32), 0.0)]).rgba(0)[
        ..., :3].copy()


@pytest.mark.parametrize("which", ["open smile", "lips closed"])
def test_mesh_warped_mouths_stretch_the_skin_without_tearing_or_folding(astro_asset, which):
    """With face-mesh points every mouth is a piecewise-affine warp over the mesh's triangles.
    Warping an image whose colours are its own coordinates reads the warp back: beside the mouth
    (the cheeks, where the smooth field creased the skin) each output row takes the photo's rows
    in order, never skipping ahead (a tear) nor going back (a fold); and for 'aa' the lower face
    drops with the lower lip as one piece while the skin under the nose hardly moves."""
    from avatar_pipeline.avatar.asset import MID_PAIRS
    from avatar_pipeline.avatar.mouth_mesh import MeshWarp
    from avatar_pipeline.avatar.photo import find_mouth, mouth_box, normalise
    from avatar_pipeline.avatar.photo_mouth import PHOTO_MOUTHS, blend_mouths

    rgb = ASTRONAUT if which == "open smile" else _closed_astronaut(astro_asset)
    n = normalise(rgb)
    geo, how = find_mouth(n)
    assert how == "face_mesh" and (geo.gap > 10) == (which == "open smile")
    box = mouth_box(geo, n.img.shape[0])
    warp = MeshWarp(geo, box)
    ys, xs = np.mgrid[0:n.img.shape[0], 0:n.img.shape[1]].astype(np.float32)
    coords = np.dstack([xs, ys, np.zeros_like(xs)])
    cols = np.arange(box.x, box.x + box.width)
    cheeks = (np.abs(cols - geo.cx) > 1.1 * geo.half_w) & (np.abs(cols - geo.cx) < 3 * geo.half_w)
    mouths = dict(PHOTO_MOUTHS) | {
        f"{VISEMES[i]}-{VISEMES[j]}": blend_mouths(PHOTO_MOUTHS[VISEMES[i]], PHOTO_MOUTHS[VISEMES[j]])
        for i, j in MID_PAIRS}
    for name, m in mouths.items():
        rows = warp.synth(coords, m, np.ones(3, np.float32))[..., 1]
        step = np.diff(rows, axis=0)[:, cheeks]
        assert step.min() > -1.0 and step.max() < 3.5, (name, step.min(), step.max())
    # 'aa': the chin (mesh point 152) goes down by as much as the lower lip's inner edge (14)
    out = warp.synth(coords, PHOTO_MOUTHS["aa"], np.ones(3, np.float32))
    _, _, (_, lower) = warp.map(PHOTO_MOUTHS["aa"])
    drop = lower[5, 1] - geo.mesh[14, 1]
    assert drop > 0.25 * geo.half_w
    chin = geo.mesh[152]
    at = lambda x, y: out[int(round(y)) - box.y, int(round(x)) - box.x]  # noqa: E731
    assert abs(at(chin[0], chin[1] + drop)[1] - chin[1]) < 1.5
    assert abs(at(chin[0], chin[1])[1] - chin[1]) > 0.6 * drop  # it did move
    nose = geo.mesh[2]  # under the nose: follows the upper lip a little only
    assert box.y <= nose[1] and abs(at(*nose)[1] - nose[1]) < 0.2 * drop

"""Avatar assets on disk: the shipped tutor round-trips, the registry is content-addressed, and
the loader refuses a broken asset with the reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from avatar_pipeline.avatar import AvatarError, AvatarRegistry, load_asset, save_asset
from avatar_pipeline.avatar.default import MOUTH_BOX, default_avatar, render
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX, VISEMES


@pytest.fixture(scope="module")
def tutor():
    return default_avatar()


@pytest.fixture(scope="module")
def saved(tutor, tmp_path_factory):
    d = tmp_path_factory.mktemp("asset") / "tutor"
    save_asset(tutor, d)
    return d


def test_default_avatar_shape(tutor):
    assert (tutor.width, tutor.height) == (512, 512)
    assert tutor.mouths.shape[0] == NUM_VISEMES
    assert tutor.poses.shape[0] > 8  # idle motion
    assert tutor.blinks.shape[0] >= 1
    tutor.validate()


def test_fifteen_distinct_mouths(tutor):
    m = tutor.mouths[..., :3].astype(np.int16)
    for i in range(NUM_VISEMES):
        for j in range(i + 1, NUM_VISEMES):
            diff = np.abs(m[i] - m[j]).max(-1)
            assert (diff > 24).sum() > 40, f"{VISEMES[i]} and {VISEMES[j]} look the same"


def test_mouths_true_to_visemes():
    """Closed for sil/PP, open widest for aa, narrow for ou, teeth for E, tongue for TH."""
    assert MOUTH_BOX.x < 196 and MOUTH_BOX.x + MOUTH_BOX.width > 316

    def crop(v):  # lips and mouth only (no hair at the sides)
        return render(v)[296:372, 196:316].astype(np.int16)

    def dark(v):  # mouth cavity pixels (dark red, unlike the brown hair)
        c = crop(v)
        return int(((c.sum(-1) < 220) & (c[..., 0] - c[..., 1] > 35)).sum())

    def white(v):  # teeth pixels
        return int((crop(v).min(-1) > 225).sum())

    def width(v):  # lip width: reddish pixels' horizontal extent
        c = crop(v)
        red = (c[..., 0] > c[..., 1] + 60) & (c[..., 0] > 150)
        cols = np.nonzero(red.any(0))[0]
        return int(cols.max() - cols.min())

    assert dark("sil") < 40 and dark("PP") < 40  # only the line where the lips meet
    assert dark("aa") > 20 * max(dark("sil"), 1)
    assert dark("aa") > max(dark(v) for v in VISEMES if v != "aa")
    assert width("ou") < width("oh") < width("aa") < width("E")
    assert white("E") > 50 and white("FF") > 50 and white("ou") == 0
    tongue = (crop("TH")[..., 0] > 180) & (crop("TH")[..., 1] < 120)
    assert tongue.sum() > 30


def test_save_load_roundtrip(tutor, saved):
    loaded = load_asset(saved)
    assert loaded.id == tutor.id
    np.testing.assert_array_equal(loaded.poses, tutor.poses)
    np.testing.assert_array_equal(loaded.mouths, tutor.mouths)
    np.testing.assert_array_equal(loaded.blinks, tutor.blinks)
    assert loaded.mouth_box == tutor.mouth_box
    meta = json.loads((saved / "avatar.json").read_text())
    assert meta["version"] == 1 and meta["visemes"] == list(VISEMES)


def test_the_renderer_is_part_of_the_asset(tutor, saved, tmp_path):
    """A neural asset records its renderer (and so has another id); a sprite asset writes none,
    keeping the id it always had; an unknown renderer is refused."""
    import dataclasses

    assert "renderer" not in json.loads((saved / "avatar.json").read_text())
    neural = dataclasses.replace(tutor, renderer="neural")
    nid = save_asset(neural, tmp_path / "neural")
    assert nid != tutor.id and load_asset(tmp_path / "neural").renderer == "neural"
    assert load_asset(saved).renderer == "sprite"
    with pytest.raises(AvatarError, match="renderer 'hologram' is not one of sprite, neural"):
        dataclasses.replace(tutor, renderer="hologram").validate()


def _broken(saved, tmp_path, edit):
    d = tmp_path / "broken"
    shutil.copytree(saved, d)
    edit(d)
    with pytest.raises(AvatarError) as err:
        load_asset(d)
    return str(err.value)


def test_loader_refuses_broken_assets(saved, tmp_path):
    def meta_edit(fn):
        def edit(d):
            m = json.loads((d / "avatar.json").read_text())
            fn(m)
            (d / "avatar.json").write_text(json.dumps(m))
        return edit

    assert "missing file" in _broken(saved, tmp_path / "a", lambda d: (
        d / "mouths/10_aa.png").unlink())
    assert "does not match its sha256" in _broken(saved, tmp_path / "b", lambda d: (
        d / "blinks/0.png").write_bytes(b"\x89PNG garbage"))
    assert "version 7 not supported" in _broken(
        saved, tmp_path / "c", meta_edit(lambda m: m.update(version=7)))
    assert "not valid JSON" in _broken(saved, tmp_path / "d", lambda d: (
        d / "avatar.json").write_text("{nope"))
    assert "leaves the asset directory" in _broken(
        saved, tmp_path / "e", meta_edit(lambda m: m["files"].update({"../x.png": "0"})))
    assert "falls outside" in _broken(
        saved, tmp_path / "f", meta_edit(lambda m: m["mouth"].update(x=500)))
    assert "no avatar.json" in _broken(saved, tmp_path / "g", lambda d: (
        d / "avatar.json").unlink())


def test_registry_content_addressed(tutor, tmp_path):
    reg = AvatarRegistry(tmp_path / "cache")
    a = reg.add(tutor, ref="mine")
    b = reg.add(tutor)
    assert a == b == tutor.id
    assert reg.ids() == [a]
    assert reg.ref("mine") == a
    fresh = AvatarRegistry(tmp_path / "cache")
    assert fresh.get(a).id == a
    assert fresh.resolve(a).id == a
    with pytest.raises(AvatarError, match="not registered"):
        fresh.get("0" * 24)
    with pytest.raises(AvatarError, match="not 'default'"):
        fresh.resolve(str(tmp_path / "nothing-here"))


def test_contact_sheet_file_exists():
    """docs/img/mouths.png is the README's contact sheet of the 15 mouths."""
    from pathlib import Path

    from PIL import Image

    p = Path(__file__).resolve().parents[2] / "docs" / "img" / "mouths.png"
    assert p.is_file()
    assert Image.open(p).width >= 600
    assert VISEME_INDEX["ou"] == NUM_VISEMES - 1


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_AVATAR_CACHE", str(tmp_path / "here"))
    assert AvatarRegistry().root == tmp_path / "here"
    monkeypatch.delenv("FLEET_AVATAR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert AvatarRegistry().root == tmp_path / "xdg" / "avatar-fleet" / "avatars"


def test_the_default_comes_from_a_read_only_seed_without_drawing(tutor, tmp_path, monkeypatch):
    import avatar_pipeline.avatar.default as default_mod
    from avatar_pipeline.avatar.default import DEFAULT_REF

    AvatarRegistry(tmp_path / "seed").add(tutor, ref=DEFAULT_REF)
    (tmp_path / "seed").chmod(0o555)  # as in the image: nothing is written there
    monkeypatch.setenv("FLEET_AVATAR_SEED", str(tmp_path / "seed"))

    def no_drawing():
        raise AssertionError("drew the default although the seed has it")

    monkeypatch.setattr(default_mod, "build_default_avatar", no_drawing)
    reg = AvatarRegistry(tmp_path / "cache")
    assert reg.default().id == tutor.id
    monkeypatch.setenv("FLEET_AVATAR_SEED", str(tmp_path / "empty"))  # no seed there: drawn
    with pytest.raises(AssertionError, match="drew the default"):
        AvatarRegistry(tmp_path / "cache2").default()

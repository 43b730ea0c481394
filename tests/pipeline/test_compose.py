"""Composition as a viewer sees it: visemes change only the mouth, blinks only the eyes, the
head idles, numpy and torch give the same frames, and a batch mixes sessions and avatars."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from avatar_pipeline.avatar.default import default_avatar
from avatar_pipeline.avatar.photo import build_photo_avatar
from avatar_pipeline.compose import (
    TOLERANCE,
    BlinkSchedule,
    FrameState,
    NumpyCompositor,
    SessionClock,
    i420_to_rgb,
    make_compositor,
)
from avatar_pipeline.compose.base import top_k
from avatar_pipeline.viseme_set import NUM_VISEMES, SILENCE, VISEME_INDEX, VISEMES


@pytest.fixture(scope="module")
def tutor():
    return default_avatar()


@pytest.fixture(scope="module")
def astronaut():
    a = build_photo_avatar(skimage.data.astronaut(), name="astronaut")
    a.id = "astronaut"
    return a


def one_hot(v: str) -> np.ndarray:
    w = np.zeros(NUM_VISEMES, np.float32)
    w[VISEME_INDEX[v]] = 1
    return w


def _box_mask(box, margin, shape=(512, 512)):
    m = np.zeros(shape, bool)
    m[max(0, box.y - margin):box.y + box.height + margin,
      max(0, box.x - margin):box.x + box.width + margin] = True
    return m


@pytest.mark.parametrize("fmt", ["rgba", "i420"])
def test_visemes_change_only_the_mouth(tutor, fmt):
    comp = NumpyCompositor(fmt=fmt)
    aid = comp.add_avatar(tutor)
    states = [FrameState(aid, one_hot(v), t=1.3, blink=0.0) for v in VISEMES]
    batch = comp.compose(states)
    frames = np.stack([batch.rgb(i).astype(np.int16) for i in range(len(VISEMES))])
    off = np.abs(tutor.head_offsets).max() + 3
    mouth = _box_mask(tutor.mouth_box, int(off))
    ref = frames[VISEME_INDEX["sil"]]
    for i, v in enumerate(VISEMES):
        diff = np.abs(frames[i] - ref).max(-1)
        assert diff[~mouth].max() == 0, f"{v} changed pixels outside the mouth"
        if v != "sil":
            assert (diff[mouth] > 30).sum() > 40, f"{v} looks like sil"
    # and every pair of visemes is distinguishable
    for i in range(NUM_VISEMES):
        for j in range(i + 1, NUM_VISEMES):
            assert (np.abs(frames[i] - frames[j]).max(-1) > 24).sum() > 20, (VISEMES[i],
                                                                             VISEMES[j])


def test_one_mouth_at_a_time_never_two_cross_faded(tutor):
    """Between two visemes the learner sees one mouth: the top viseme's or the asset's mouth
    drawn half way between the two, never two sprites blended (two sets of lips, one faint).
    Every frame's mouth must be one of the 15 + 105 single mouths."""
    from avatar_pipeline.avatar.asset import MID_PAIRS

    assert tutor.mids is not None and len(tutor.mids) == len(MID_PAIRS)
    comp = NumpyCompositor()
    aid = comp.add_avatar(tutor)
    singles = [one_hot(v) for v in VISEMES]
    singles += [0.5 * (one_hot(VISEMES[i]) + one_hot(VISEMES[j])) for i, j in MID_PAIRS]
    atlas = np.stack([comp.compose([FrameState(aid, w, 0.0)]).rgb(0).astype(np.int16)
                      for w in singles])
    mouth = _box_mask(tutor.mouth_box, 0)
    atlas = atlas[:, mouth]
    # the in-between of aa and ou is drawn, not the average of the two sprites
    aa, ou = VISEME_INDEX["aa"], VISEME_INDEX["ou"]
    mid = NUM_VISEMES + MID_PAIRS.index((min(aa, ou), max(aa, ou)))
    average = (atlas[aa] + atlas[ou]) / 2
    assert np.abs(atlas[mid] - average).max() > 40
    rng = np.random.default_rng(3)
    for _ in range(60):
        w = np.zeros(NUM_VISEMES, np.float32)
        pick = rng.choice(NUM_VISEMES, size=rng.integers(1, 4), replace=False)
        w[pick] = rng.random(len(pick))
        frame = comp.compose([FrameState(aid, w, 0.0)]).rgb(0).astype(np.int16)[mouth]
        nearest = np.abs(atlas - frame[None]).max(axis=(1, 2)).min()
        assert nearest <= 1, f"a frame between {pick} shows a mouth that is none of the atlas"


def test_blink_happens_and_only_in_the_eyes(tutor):
    comp = NumpyCompositor()
    aid = comp.add_avatar(tutor)
    sil = one_hot("sil")
    b = comp.compose([FrameState(aid, sil, 2.0, blink=0.0), FrameState(aid, sil, 2.0, blink=0.5),
                      FrameState(aid, sil, 2.0, blink=1.0)])
    open_, half, shut = (b.rgba(i).astype(np.int16) for i in range(3))
    eyes = _box_mask(tutor.eyes_box, int(np.abs(tutor.head_offsets).max() + 3))
    d_shut = np.abs(shut - open_).max(-1)
    assert d_shut[~eyes].max() == 0
    assert (d_shut > 40).sum() > 200
    d_half = np.abs(half - open_).max(-1)
    assert 0 < (d_half > 40).sum() < (d_shut > 40).sum() * 1.5

    sched = BlinkSchedule(seed=7, mean_interval_s=4.0, duration_s=0.16)
    ts = np.arange(0, 30, 1 / 25)
    a = sched.amounts(ts)
    starts = np.nonzero((a[1:] > 0) & (a[:-1] == 0))[0]
    assert 3 <= len(starts) <= 20  # a blink every few seconds
    assert a.max() > 0.9
    np.testing.assert_array_equal(a, BlinkSchedule(seed=7).amounts(ts))  # deterministic
    assert not np.array_equal(a, BlinkSchedule(seed=8).amounts(ts))  # per session


def test_idle_motion_moves_the_head_and_loops(tutor):
    comp = NumpyCompositor()
    aid = comp.add_avatar(tutor)
    sil = one_hot("sil")
    p = tutor.idle_period_s
    b = comp.compose([FrameState(aid, sil, 0.0), FrameState(aid, sil, p / 4),
                      FrameState(aid, sil, p)])
    f0, f1, f2 = (b.rgba(i).astype(np.int16) for i in range(3))
    assert (np.abs(f1 - f0).max(-1) > 20).sum() > 500  # the head sways
    np.testing.assert_array_equal(f0, f2)  # one idle cycle later, the same frame
    # different sessions idle out of phase
    c1, c2 = SessionClock(1, tutor), SessionClock(2, tutor)
    assert c1.idle_phase != c2.idle_phase


@pytest.mark.parametrize("fmt", ["rgba", "i420"])
def test_numpy_and_torch_agree(tutor, astronaut, fmt):
    rng = np.random.default_rng(3)
    backends = [make_compositor("numpy", fmt), make_compositor("torch-cpu", fmt)]
    for c in backends:
        c.add_avatar(tutor)
        c.add_avatar(astronaut)
    states = []
    for i in range(24):  # sessions of two avatars, interleaved, mid-blink, mid-blend
        w = rng.random(NUM_VISEMES).astype(np.float32) ** 6
        states.append(FrameState(tutor.id if i % 3 else "astronaut", w, t=rng.uniform(0, 20),
                                 blink=float(rng.choice([0, 0.2, 0.6, 1.0])),
                                 idle_phase=rng.uniform()))
    a, b = (c.compose(states).numpy().astype(np.int16) for c in backends)
    diff = np.abs(a - b)
    assert diff.max() <= TOLERANCE
    assert (diff > 0).mean() < 1e-3


def test_i420_matches_rgba(tutor):
    rgba = NumpyCompositor("rgba")
    yuv = NumpyCompositor("i420")
    for c in (rgba, yuv):
        c.add_avatar(tutor)
    st = [FrameState(tutor.id, one_hot("aa"), 0.4, blink=1.0)]
    a = rgba.compose(st).rgba(0)[..., :3].astype(np.int16)
    b = yuv.compose(st)
    assert b.numpy().shape == (1, 512 * 512 * 3 // 2)
    back = i420_to_rgb(b.numpy()[0], 512, 512).astype(np.int16)
    assert np.abs(back - a).mean() < 3.0


def test_output_buffers_are_preallocated(tutor):
    comp = NumpyCompositor("i420", max_batch=8)
    comp.add_avatar(tutor)
    st = [FrameState(tutor.id, one_hot("E"), 0.1)] * 8
    b1, b2, b3 = comp.compose(st), comp.compose(st), comp.compose(st)
    assert not np.shares_memory(b1.numpy(), b2.numpy())  # previous tick still readable
    assert np.shares_memory(b1.numpy(), b3.numpy())  # ring of two, no allocation per tick
    mv = b3.data(0)
    assert mv.nbytes == 512 * 512 * 3 // 2 and mv.contiguous
    assert len(comp.compose([])) == 0


def test_top_k_and_silence():
    idx, w = top_k(np.zeros((2, NUM_VISEMES)))
    assert idx[0, 0] == SILENCE and w[0, 0] == 1 and w[0, 1:].sum() == 0
    x = np.zeros((1, NUM_VISEMES))
    x[0, [3, 5, 9, 12]] = [0.1, 0.4, 0.3, 0.2]
    idx, w = top_k(x)
    assert list(idx[0]) == [5, 9]  # the top two (TOP_K): what pick_mouth chooses among
    assert abs(w.sum() - 1) < 1e-6


def test_unknown_avatar_is_an_error(tutor):
    comp = NumpyCompositor()
    comp.add_avatar(tutor)
    with pytest.raises(KeyError, match="not added"):
        comp.compose([FrameState("nope", one_hot("aa"), 0.0)])


def test_frames_go_to_livekit_without_copies(tutor):
    """rtc.VideoFrame wraps the compositor's buffer as is, and LiveKit's own I420->RGBA
    conversion of it matches our RGBA output (same BT.601 matrix, same plane layout)."""
    from livekit import rtc

    ci, cr = NumpyCompositor("i420"), NumpyCompositor("rgba")
    for c in (ci, cr):
        c.add_avatar(tutor)
    st = [FrameState(tutor.id, one_hot("aa"), 0.3, blink=1.0)]
    bi, br = ci.compose(st), cr.compose(st)
    mv = bi.data(0)
    frame = rtc.VideoFrame(512, 512, rtc.VideoBufferType.I420, mv)
    assert isinstance(frame.data, memoryview) and frame.data.obj is mv.obj  # no copy
    back = np.frombuffer(bytes(frame.convert(rtc.VideoBufferType.RGBA).data), np.uint8)
    back = back.reshape(512, 512, 4)[..., :3].astype(np.int16)
    assert np.abs(back - br.rgba(0)[..., :3].astype(np.int16)).mean() < 1.5
    rgba = rtc.VideoFrame(512, 512, rtc.VideoBufferType.RGBA, br.data(0))
    assert rgba.data.obj is not None and np.shares_memory(np.asarray(rgba.data), br.numpy())

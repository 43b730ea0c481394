"""Smoothing: top-k blend, minimum hold, attack/release; streaming equals whole-track."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX
from avatar_pipeline.visemes.smoothing import (
    Smoother,
    SmoothingParams,
    smooth_track,
    top_k_blend,
)


def onehot(name, n=1):
    t = np.zeros((n, NUM_VISEMES), np.float32)
    t[:, VISEME_INDEX[name]] = 1
    return t


def test_rows_sum_to_one_and_streaming_equals_track():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(NUM_VISEMES) * 0.3, size=200).astype(np.float32)
    whole = smooth_track(x)
    np.testing.assert_allclose(whole.sum(axis=1), 1, atol=1e-5)
    s = Smoother()
    rows = np.stack([s.step(r) for r in x])
    np.testing.assert_array_equal(rows, whole)


def test_constant_input_converges_and_stays():
    out = smooth_track(onehot("aa", 50))
    assert out[-1, VISEME_INDEX["aa"]] > 0.99
    assert np.all(np.diff(out[:, VISEME_INDEX["aa"]]) >= -1e-7)  # monotonic rise


def test_attack_and_release_time_constants():
    """A slower release makes the old viseme linger; a slower attack delays the new one. Rows
    stay normalised, so each is measured against the symmetric setting."""
    x = np.concatenate([onehot("sil", 5), onehot("aa", 30), onehot("sil", 30)])

    def run(attack, release):
        p = SmoothingParams(fps=100, attack_ms=attack, release_ms=release, min_hold_ms=0,
                            top_k=1)
        return smooth_track(x, p)[:, VISEME_INDEX["aa"]]

    sym, slow_release, slow_attack = run(20, 20), run(20, 80), run(80, 20)
    assert sym[34] > 0.99 and sym[-1] < 0.01
    assert slow_release[38] > sym[38] + 0.1  # still open after the sound stopped
    assert slow_attack[8] < sym[8] - 0.1  # opens later
    assert np.all(np.diff(sym[5:35]) >= -1e-7) and np.all(np.diff(sym[35:]) <= 1e-7)


def test_min_hold_suppresses_a_one_frame_blip():
    p = SmoothingParams(fps=25, attack_ms=0, release_ms=0, min_hold_ms=120, top_k=1)
    x = np.concatenate([onehot("aa", 10), onehot("PP", 1), onehot("ou", 10)])
    out = smooth_track(x, p)
    ids = out.argmax(axis=1)
    assert ids[10] == VISEME_INDEX["aa"] or ids[9] == VISEME_INDEX["aa"]
    # 'aa' was dominant for 10 frames: the change to PP is allowed, but then ou must wait 3 frames
    assert ids[10] == VISEME_INDEX["PP"]
    assert list(ids[11:13]) == [VISEME_INDEX["PP"]] * 2
    assert ids[13] == VISEME_INDEX["ou"]
    # with no hold, the blip passes through unchanged
    q = SmoothingParams(fps=25, attack_ms=0, release_ms=0, min_hold_ms=0, top_k=1)
    np.testing.assert_allclose(smooth_track(x, q), x, atol=1e-6)


def test_top_k_blend():
    w = np.array([0.1, 0.5, 0.3, 0.1] + [0] * 11)
    b = top_k_blend(w, 2)
    assert np.count_nonzero(b) == 2
    assert b[1] == pytest.approx(0.5 / 0.8)
    assert top_k_blend(np.full(NUM_VISEMES, np.nan), 2)[0] == 1.0  # garbage -> silence


def test_bad_params():
    with pytest.raises(ValueError):
        SmoothingParams(top_k=0)
    with pytest.raises(ValueError):
        SmoothingParams(fps=0)
    with pytest.raises(ValueError):
        Smoother().process(np.zeros((3, 4)))

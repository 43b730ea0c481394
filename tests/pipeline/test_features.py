"""Streaming features: resampler and log-mel give the same numbers however the audio is cut."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.features import (
    N_MELS,
    StreamingLogMel,
    StreamingResampler,
    check_rate,
    logmel,
    resample,
    to_float,
)


def _chunks(x, rng, hi=3000):
    i = 0
    while i < len(x):
        n = int(rng.integers(1, hi))
        yield x[i:i + n]
        i += n


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 24000, 44100, 48000])
def test_resampler_streaming_equals_offline(sr):
    rng = np.random.default_rng(sr)
    x = rng.standard_normal(sr).astype(np.float32) * 0.1
    off = resample(x, sr)
    r = StreamingResampler(sr)
    st = np.concatenate([*[r.push(c) for c in _chunks(x, rng)], r.flush()])
    assert len(off) == len(st) == int(np.ceil(len(x) * 16000 / sr))
    np.testing.assert_array_equal(off, st)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampler_keeps_a_tone(sr):
    t = np.arange(sr) / sr
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), sr)
    t2 = np.arange(len(y)) / 16000
    err = np.abs(y[200:-200] - np.sin(2 * np.pi * 440 * t2[200:-200])).max()
    assert err < 2e-3


def test_logmel_streaming_equals_offline():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    off = logmel(x)
    assert off.shape == (len(x) // 160, N_MELS)
    s = StreamingLogMel()
    st = np.concatenate([s.push(c) for c in _chunks(x, rng, 700)])
    np.testing.assert_allclose(st, off, rtol=0, atol=1e-5)


def test_logmel_is_causal():
    """Frame t depends only on audio before (t+1)*10 ms."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(16000).astype(np.float32)
    y = x.copy()
    y[5000:] = 0
    a, b = logmel(x), logmel(y)
    np.testing.assert_array_equal(a[: 5000 // 160], b[: 5000 // 160])
    assert not np.allclose(a[5000 // 160 + 1], b[5000 // 160 + 1])


def test_silence_is_floor_and_finite():
    f = logmel(np.zeros(1600, np.float32))
    assert np.isfinite(f).all()
    assert np.allclose(f, np.log(1e-6))


def test_to_float_and_rates():
    assert to_float(np.array([32767, -32768], np.int16)).tolist() == pytest.approx([1, -1], 1e-4)
    out = to_float(np.array([np.nan, np.inf, -np.inf, 3.0, -0.5]))
    assert out.tolist() == [0.0, 1.0, -1.0, 1.0, -0.5]
    assert to_float(np.ones((100, 2), np.float32)).shape == (100,)
    for bad in (0, -16000, 3999, 192001, 16000.5, float("nan"), True):
        with pytest.raises(ValueError):
            check_rate(bad)
    assert check_rate(44100.0) == 44100
    with pytest.raises(ValueError):
        to_float(np.array(["a", "b"]))
    with pytest.raises(ValueError):
        to_float(np.zeros((2, 2, 2)))


def test_running_norm_streams_exactly_and_removes_gain_and_colouring():
    from avatar_pipeline.features import RunningNorm, logmel

    rng = np.random.default_rng(4)
    x = (rng.standard_normal(16000 * 6) * np.repeat(rng.uniform(0.02, 0.3, 60), 1600)
         ).astype(np.float32)
    f = logmel(x)
    norm = RunningNorm(f.mean(axis=0), tau_frames=100)
    whole = norm.push(f)
    norm.reset()
    parts = np.concatenate([norm.push(f[i:i + 7]) for i in range(0, len(f), 7)])
    np.testing.assert_array_equal(whole, parts)
    # a quieter, tilted copy (gain and a fixed EQ are constants per bin in the log domain)
    tilt = np.linspace(-2.0, 1.0, f.shape[1]).astype(np.float32)
    norm.reset()
    moved = norm.push(f + tilt - 3.0)
    late = slice(400, None)  # once the running mean has forgotten its starting point
    assert np.abs(moved[late] - whole[late]).max() < 0.05
    assert np.abs((f + tilt - 3.0)[late] - f[late]).max() > 2.0
    # digital silence does not drag the mean: it stays where it was
    norm.reset()
    sil = np.full((50, f.shape[1]), np.log(1e-6), np.float32)
    np.testing.assert_allclose(norm.push(sil), sil - norm.mean0, atol=1e-4)

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

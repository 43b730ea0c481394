"""The shipped ONNX viseme model: offline / streaming / batched agree; bad input is handled."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from avatar_pipeline.features import resample
from avatar_pipeline.tts import default_engine
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX
from avatar_pipeline.visemes import (
    StreamingVisemes,
    VisemeBatcher,
    audio_to_visemes,
    default_model,
)
from avatar_pipeline.visemes.infer import DEFAULT_WEIGHTS, features_many
from avatar_pipeline.visemes.smoothing import SmoothingParams

SIL = VISEME_INDEX["sil"]


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def speech():
    return default_engine().synthesize("Please open your books and read quietly.", "en",
                                       voice="m3")


def _stream(s, pcm, sr, rng, hi):
    out, i = [], 0
    while i < len(pcm):
        n = int(rng.integers(1, hi))
        out.append(s.push(pcm[i:i + n], sr))
        i += n
    out.append(s.flush())
    return np.concatenate(out)


def test_shipped_model_is_small_and_causal(model):
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert meta["params"] <= 3_000_000
    assert meta["lookahead_frames"] * meta["hop_ms"] <= 30
    assert DEFAULT_WEIGHTS.stat().st_size < 13 * 2 ** 20
    assert "CPUExecutionProvider" in model.providers


@pytest.mark.parametrize("fps", [25, 30])
def test_offline_shape_and_rows(model, speech, fps):
    w = audio_to_visemes(speech.pcm, speech.sample_rate, fps)
    assert w.dtype == np.float32
    assert w.shape == (math.ceil(speech.duration_s * fps), NUM_VISEMES)
    np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-4)
    assert (w >= 0).all()


@pytest.mark.parametrize("fps,sr", [(25, 22050), (30, 48000), (25, 16000), (30, 8000)])
def test_streaming_equals_offline(model, speech, fps, sr):
    from avatar_pipeline.features import resample

    x = speech.pcm.astype(np.float32) / 32768
    if sr != speech.sample_rate:
        x = resample(x, speech.sample_rate, sr)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    off = audio_to_visemes(pcm, sr, fps)
    rng = np.random.default_rng(fps + sr)
    for hi in (50, 2000, 20000):
        st = _stream(StreamingVisemes(fps), pcm, sr, rng, hi)
        assert st.shape == off.shape
        np.testing.assert_allclose(st, off, atol=1e-4)
        assert (st.argmax(1) == off.argmax(1)).mean() > 0.99


def test_stream_emits_frames_no_later_than_lookahead(model, speech):
    """After pushing audio up to t, every frame ending before t - lookahead - 10 ms is out."""
    sr, fps = speech.sample_rate, 25
    s = StreamingVisemes(fps)
    got = 0
    step = sr // 100
    la = model.lookahead * 0.01
    for i in range(0, len(speech.pcm), step):
        got += len(s.push(speech.pcm[i:i + step], sr))
        t = (i + step) / sr
        assert got >= math.floor((t - la - 0.011) * fps)


def test_batched_equals_unbatched(model):
    eng = default_engine()
    texts = [("en", "Good morning everyone."), ("es", "Hola, buenos días."),
             ("zh", "你好，老师。"), ("fa", "سلام بچه‌ها")]
    sp = [eng.synthesize(t, lang) for lang, t in texts]
    fps = 25
    ref = [audio_to_visemes(s.pcm, s.sample_rate, fps) for s in sp]
    b = VisemeBatcher(model)
    streams = [b.stream(fps) for _ in sp]
    outs = [[] for _ in sp]
    tick = sp[0].sample_rate // fps  # 40 ms of audio per session per tick
    n_ticks = max(len(s.pcm) for s in sp) // tick + 1
    for k in range(n_ticks):
        items = [(st, s.pcm[k * tick:(k + 1) * tick], s.sample_rate) for st, s in zip(
            streams, sp, strict=True) if k * tick < len(s.pcm)]
        active = [st for st, _, _ in items]
        for st, o in zip(active, b.push_many(items), strict=True):
            outs[streams.index(st)].append(o)
    for o, f in zip(outs, b.flush_many(streams), strict=True):
        o.append(f)
    for o, r in zip(outs, ref, strict=True):
        got = np.concatenate(o)
        assert got.shape == r.shape
        np.testing.assert_allclose(got, r, atol=1e-4)
    # sessions ticking together share one onnxruntime run per tick (+1 per flush length)
    assert b.runs <= n_ticks + len({len(s.pcm) for s in sp}) + 4


def test_features_of_many_streams_at_once_are_each_streams_own(model, speech):
    """One tick of a worker computes the log-mel of every session's new audio in one FFT and
    normalises sessions together: each session must get exactly the numbers it gets alone,
    whatever its rate, chunk size and history (here windows of 2-6 frames, 16 and 48 kHz)."""
    pcm16 = resample(speech.pcm.astype(np.float32) / 32768, speech.sample_rate, 16000)
    pcm48 = resample(pcm16, 16000, 48000)
    inputs = [(pcm16, 16000, 640), (pcm48, 48000, 1920), (pcm16[800:], 16000, 320),
              (pcm16, 16000, 960)]
    together = [StreamingVisemes(25, model=model) for _ in inputs]
    alone = [StreamingVisemes(25, model=model) for _ in inputs]
    n_ticks = min(len(x) // step for x, _, step in inputs)
    for k in range(n_ticks):
        chunks = [(x[k * step:(k + 1) * step], sr) for x, sr, step in inputs]
        got = features_many(together, chunks)
        assert len({len(g) for g in got}) > 1  # streams in different normalisation groups
        for g, s, (c, sr) in zip(got, alone, chunks, strict=True):
            np.testing.assert_array_equal(g, s.features(c, sr))
    assert all(a._silent == b._silent for a, b in zip(together, alone, strict=True))


async def test_async_batcher_flushes_on_size_and_wait(model, speech):
    b = VisemeBatcher(model, max_batch=3, max_wait_ms=20)
    streams = [b.stream(25) for _ in range(5)]
    chunk = speech.pcm[: speech.sample_rate // 5]
    res = await asyncio.gather(*[b.submit(s, chunk, speech.sample_rate) for s in streams])
    assert b.runs == 2  # 3 flushed by size, 2 by the timer
    ref = StreamingVisemes(25).push(chunk, speech.sample_rate)
    for r in res:
        np.testing.assert_allclose(r, ref, atol=1e-4)


def test_bad_input(model):
    sr = 16000
    assert audio_to_visemes(np.zeros(0, np.int16), sr, 25).shape == (0, NUM_VISEMES)
    w = audio_to_visemes(np.zeros(sr * 2, np.int16), sr, 25)
    assert w.shape == (50, NUM_VISEMES) and (w.argmax(1) == SIL).mean() > 0.95
    # clipping: a full-scale square wave
    sq = np.where(np.sin(np.arange(sr) * 0.05) > 0, 32767, -32768).astype(np.int16)
    w = audio_to_visemes(sq, sr, 25)
    assert w.shape == (25, NUM_VISEMES) and np.isfinite(w).all()
    # NaN / Inf in float input count as zeros / full scale
    f = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    f[::7] = np.nan
    f[::11] = np.inf
    w = audio_to_visemes(f, sr, 25)
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(1), 1, atol=1e-4)
    # odd but valid rates, stereo, other dtypes
    for rate in (8000, 11025, 32000, 44100, 96000):
        assert audio_to_visemes(np.zeros(rate // 2, np.int16), rate, 30).shape == (15, 15)
    assert audio_to_visemes(np.zeros((sr, 2), np.int16), sr, 25).shape == (25, 15)
    assert audio_to_visemes(np.zeros(sr, np.int32), sr, 25).shape == (25, 15)
    # invalid: rates, fps, shapes, over an hour
    for rate in (0, -1, 3000, 1_000_000, 22050.5):
        with pytest.raises(ValueError):
            audio_to_visemes(np.zeros(100, np.int16), rate, 25)
    for fps in (0, -5, float("nan"), 1000):
        with pytest.raises(ValueError):
            audio_to_visemes(np.zeros(100, np.int16), sr, fps)
    with pytest.raises(ValueError):
        audio_to_visemes(np.zeros((2, 2, 2), np.int16), sr, 25)
    with pytest.raises(ValueError):
        audio_to_visemes(np.zeros(4001 * 3600, np.int8), 4000, 25)
    s = StreamingVisemes(25)
    with pytest.raises(ValueError):
        s.push(np.zeros(10, np.int16), 0)
    assert s.push(np.zeros(0, np.int16), 16000).shape == (0, 15)  # stream still usable
    assert s.flush().shape == (0, 15)


def test_long_input_and_rate_change(model):
    sr = 16000
    x = (np.random.default_rng(1).standard_normal(sr * 120) * 300).astype(np.int16)
    w = audio_to_visemes(x, sr, 25)
    assert w.shape == (3000, NUM_VISEMES)
    s = StreamingVisemes(25)
    a = s.push(np.zeros(sr, np.int16), sr)
    b = s.push(np.zeros(48000, np.int16), 48000)  # the sender switched rates mid-stream
    c = s.flush()
    assert len(a) + len(b) + len(c) == 50


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum"])
def test_a_long_pause_in_a_noisy_room_keeps_the_mouth_shut(model, kind):
    """20 s of noise and no speech, quiet to loud: the mouth stays shut, also after the
    running normalisation has taken the noise's level out (~3 s)."""
    from avatar_pipeline.visemes.augment import noise

    rng = np.random.default_rng(0)
    for db in (-70, -60, -50, -40, -30):
        x = noise(rng, kind, 16000 * 20, 16000).astype(np.float64)
        x *= 10 ** (db / 20) / np.sqrt(np.mean(x ** 2))
        v = audio_to_visemes((x * 32767).astype(np.int16), 16000, 25).argmax(1)
        assert (v == SIL).mean() > 0.98, (db, float((v == SIL).mean()))


def test_smoothing_option(model, speech):
    raw = audio_to_visemes(speech.pcm, speech.sample_rate, 25)
    sm = audio_to_visemes(speech.pcm, speech.sample_rate, 25, smoothing=SmoothingParams())
    assert sm.shape == raw.shape
    np.testing.assert_allclose(sm.sum(1), 1, atol=1e-4)
    # smoothing reduces frame-to-frame jumps
    assert np.abs(np.diff(sm, axis=0)).sum() < np.abs(np.diff(raw, axis=0)).sum()


# Held-out voices (never in training) reading held-out sentences (never in training), clean.
HELDOUT_CASES = [
    ("en", "f4", 0), ("es", "klatt3", 0), ("zh", "Andrea", 0), ("fa", "quincy", 0),
    ("en", "steph2", 1), ("es", "grandma", 1), ("zh", "m6", 1), ("fa", "iven3", 1),
]
# Threshold: the benchmark (benchmarks/results/viseme_eval.json) measures the shipped model at
# 84.9 % frame accuracy on held-out voices, clean; on these 8 sentences it scores 0.66-0.90
# (mean 0.81, sd 0.07). A mean of 0.75 is ~2.5 standard errors below that, so it fails on a
# real regression, and it is far above pocketsphinx (~0.46) and the energy baseline (~0.34) on
# the same kind of audio. One sentence is hard (held-out voice "grandma" in es: 0.66).
ACC_MIN = 0.75
ACC_MIN_ONE = 0.60


def test_model_agrees_with_ground_truth_on_heldout_speech(model):
    from avatar_pipeline.visemes.corpus import sentences
    from avatar_pipeline.visemes.data import HELDOUT_VOICES

    eng = default_engine()
    accs = []
    for lang, voice, k in HELDOUT_CASES:
        assert voice in HELDOUT_VOICES
        text = [s for s in sentences() if s.language == lang and s.heldout][k].text
        sp = eng.synthesize(text, lang, voice=voice)
        truth = sp.viseme_track(25).argmax(axis=1)
        pred = audio_to_visemes(sp.pcm, sp.sample_rate, 25).argmax(axis=1)
        accs.append(float((pred == truth).mean()))
    assert np.mean(accs) >= ACC_MIN, accs
    assert min(accs) >= ACC_MIN_ONE, accs

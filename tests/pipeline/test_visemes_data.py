"""The training-data generator: splits are disjoint, labels line up, it is deterministic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from avatar_pipeline.features import SAMPLE_RATE
from avatar_pipeline.visemes import data as vdata
from avatar_pipeline.visemes.corpus import sentences

REPO = Path(__file__).resolve().parents[2]


def test_heldout_voices_and_sentences_are_disjoint_from_training():
    assert not set(vdata.HELDOUT_VOICES) & set(vdata.train_variants())
    assert set(vdata.HELDOUT_VOICES) <= set(vdata.all_variants())
    rng = np.random.default_rng(0)
    held = {s.text for s in sentences() if s.heldout}
    for _ in range(300):
        spec = vdata.sample_spec(rng, "train", vdata.AugmentConfig())
        assert spec.text not in held
        assert spec.variant not in vdata.HELDOUT_VOICES
    for _ in range(100):
        spec = vdata.sample_spec(rng, "heldout_voices", vdata.AugmentConfig())
        assert spec.text in held and spec.variant in vdata.HELDOUT_VOICES
        style = vdata.sample_spec(rng, "heldout_style", vdata.AugmentConfig())
        assert style.rate > 280 or style.rate < 120


def test_render_labels_line_up_with_audio():
    rng = np.random.default_rng(5)
    for _ in range(6):
        spec = vdata.sample_spec(rng, "train", vdata.AugmentConfig())
        x, lab = vdata.render(spec)
        assert x.dtype == np.float32 and np.abs(x).max() <= 1.0
        assert len(lab) == int(np.ceil(len(x) / SAMPLE_RATE * 100))
        # the lead-in silence is labelled sil
        lead = int(spec.lead_s * 100)
        if lead > 2:
            assert (lab[: lead - 1] == 0).all()


def test_opus_round_trip_is_aligned():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 300 * t) * (t > 0.5)).astype(np.float32)
    y = vdata.opus_roundtrip(x, SAMPLE_RATE, 32)
    assert len(y) == len(x)
    c = np.correlate(y[7000:9000], x[7000:9000], "full")
    assert abs(int(np.argmax(c)) - 1999) <= 2  # no lag


def test_corpus_is_deterministic_across_processes(tmp_path):
    cmd = [sys.executable, "-m", "avatar_pipeline.visemes.data", "--hours", "0.003",
           "--seed", "7", "--split", "train"]
    for d in ("a", "b"):
        subprocess.run([*cmd, "--out", str(tmp_path / d)], cwd=REPO, check=True,
                       capture_output=True, timeout=120)
    a, b = np.load(tmp_path / "a" / "train.npz"), np.load(tmp_path / "b" / "train.npz")
    assert len(a["labels"]) > 500
    np.testing.assert_array_equal(a["feats"], b["feats"])
    np.testing.assert_array_equal(a["labels"], b["labels"])


def _lag(x: np.ndarray, y: np.ndarray, max_lag: int = 200) -> int:
    ex, ey = np.abs(x), np.abs(y)
    c = [np.dot(np.roll(ex, k)[1000:-1000], ey[1000:-1000]) for k in range(-max_lag, max_lag + 1)]
    return int(np.argmax(c)) - max_lag


def _bursts(sr: int = SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(2 * sr) / sr
    on = (t % 0.4) < 0.2
    return ((0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(len(t))) * on
            ).astype(np.float32)


def test_every_codec_round_trip_is_aligned():
    from avatar_pipeline.visemes import augment

    x = _bursts()
    for codec in augment.CODECS:
        y = augment.codec_roundtrip(x, SAMPLE_RATE, {"codec": codec, "opus_kbps": 16,
                                                     "amr_kbps": 7.4, "mp3_kbps": 32})
        # AMR models the spectrum, not the waveform: its bursts come back smeared by ~2 ms,
        # still a fifth of a label frame
        assert len(y) == len(x) and abs(_lag(x, y)) <= (32 if codec == "amr" else 2), codec
        assert np.corrcoef(np.abs(x), np.abs(y))[0, 1] > 0.5, codec


def test_voice_change_moves_pitch_and_formants_and_scales_time_exactly():
    from avatar_pipeline.tts import default_engine
    from avatar_pipeline.visemes import augment

    sp = default_engine().synthesize("Mama made a lovely lemon pie.", "en")
    x = sp.pcm.astype(np.float32) / 32768
    for tempo in (0.87, 1.0, 1.13):
        y = augment.change_voice(x, sp.sample_rate, formant=0.85, pitch_hz=110,
                                 pitch_range=1.0, tempo=tempo)
        assert len(y) == round(len(x) * tempo)
        # the envelope of the changed voice is the original's, stretched by exactly `tempo`
        hop = sp.sample_rate // 200
        ex = np.log(np.add.reduceat(x ** 2, np.arange(0, len(x), hop)) + 1e-9)
        ey = np.log(np.add.reduceat(y ** 2, np.arange(0, len(y), hop)) + 1e-9)
        ex_t = np.interp(np.arange(len(ey)) / tempo, np.arange(len(ex)), ex)
        lags = range(-4, 5)
        cc = [np.corrcoef(np.roll(ex_t, k)[10:-10], ey[10:-10])[0, 1] for k in lags]
        assert list(lags)[int(np.argmax(cc))] == 0 and max(cc) > 0.8, (tempo, cc)


def test_augmented_labels_follow_the_tempo_change():
    rng = np.random.default_rng(11)
    cfg = vdata.AugmentConfig(p_voice=1.0, p_tempo=1.0)
    spec = vdata.sample_spec(rng, "train", cfg)
    assert spec.aug["voice"] and spec.aug["tempo"] != 1.0
    x, lab = vdata.render(spec)
    assert len(lab) == int(np.ceil(len(x) / SAMPLE_RATE * 100))
    lead = int(spec.lead_s * spec.aug["tempo"] * 100)
    if lead > 2:
        assert (lab[: lead - 1] == 0).all()


def test_evaluation_text_and_speakers_never_reach_training():
    from avatar_pipeline.visemes import kokoro_data, speakers
    from avatar_pipeline.visemes.corpus import english_text, eval_sentences

    evals = set(eval_sentences())
    assert len(evals) >= 40 and not evals & set(english_text())
    assert not evals & {s.text for s in sentences()}
    held = {s.text for s in sentences() if s.heldout}
    for i in range(300):
        s = kokoro_data.spec("train", i, 0)
        assert not any(e in s.text for e in evals) and not any(h in s.text for h in held)
        assert len(s.speaker.timbre) == len(speakers.names("train"))
    for i in range(60):
        s = kokoro_data.spec("heldout", i, 0)
        assert s.text in evals or s.text in held
        k = speakers.names("heldout").index(speakers.HELDOUT_PACK)
        assert s.speaker.timbre[k] >= 0.6
    assert kokoro_data.spec("train", 5, 0) == kokoro_data.spec("train", 5, 0)


def test_noise_beds_are_speechless_noise_the_normalisation_levels_out():
    """The trainer's silence source: 12 s beds of stationary noise at -80...-25 dBFS (of many
    colours, some through a codec), each through a fresh running normalisation as a stream
    hears a long pause, all labelled silence. After ~3 s the normalisation has taken the
    noise's level out, which is what the model must learn to call silence."""
    from avatar_pipeline.features import RunningNorm
    from avatar_pipeline.viseme_set import SILENCE
    from avatar_pipeline.visemes.augment import noise_bed
    from avatar_pipeline.visemes.train import silence_source

    rng = np.random.default_rng(5)
    levels = []
    for _ in range(12):
        x = noise_bed(rng, 12.0)
        assert x.dtype == np.float32 and len(x) == 12 * SAMPLE_RATE and np.isfinite(x).all()
        levels.append(10 * np.log10(np.mean(np.square(x, dtype=np.float64))))
    assert -81 < min(levels) and max(levels) < -24 and max(levels) - min(levels) > 15, levels
    feats, labels = silence_source(RunningNorm(np.zeros(80)), seed=5, clips=3, seconds=12.0)
    assert feats.shape == (3 * 1200, 80) and (labels == SILENCE).all()
    for k in range(3):  # the last 4 s of each bed: its level is gone, its colour may remain
        tail = feats[k * 1200 + 800:(k + 1) * 1200]
        assert abs(float(tail.mean())) < 1.0, float(tail.mean())
    again, _ = silence_source(RunningNorm(np.zeros(80)), seed=5, clips=3, seconds=12.0)
    assert np.array_equal(feats, again), "the same beds for a seed"

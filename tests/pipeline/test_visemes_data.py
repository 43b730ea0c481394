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

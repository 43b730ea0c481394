"""Lip-closure calibration: the shift a model's JSON names is applied to every output, and the
rule that picks it from validation scores (avatar_pipeline/visemes/calibrate.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from avatar_pipeline.tts import default_engine
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX
from avatar_pipeline.visemes import audio_to_visemes
from avatar_pipeline.visemes.calibrate import SHIFTS, choose, sweep
from avatar_pipeline.visemes.infer import DEFAULT_WEIGHTS, VisemeModel

PP = VISEME_INDEX["PP"]


def _model_with_shift(tmp_path, shift: dict) -> VisemeModel:
    """The shipped model with ``shift`` in its JSON, in a folder of its own."""
    folder = tmp_path / ("m" + "".join(f"{k}{v}" for k, v in sorted(shift.items())))
    folder.mkdir()
    onnx = folder / "visemes.onnx"
    shutil.copy(DEFAULT_WEIGHTS, onnx)
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    meta["log_prior_shift"] = shift
    onnx.with_suffix(".json").write_text(json.dumps(meta))
    return VisemeModel(onnx)


def test_the_shift_in_the_models_json_reweights_every_output(tmp_path):
    plain, shifted = _model_with_shift(tmp_path, {}), _model_with_shift(tmp_path, {"PP": 1.5})
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (2, 50, 80)).astype(np.float32)
    p0, s0 = plain.run(feats, plain.zero_state(2))
    p1, s1 = shifted.run(feats, shifted.zero_state(2))
    np.testing.assert_array_equal(s0, s1)  # the network itself is untouched
    want = p0 * np.where(np.arange(NUM_VISEMES) == PP, np.exp(1.5), 1.0)
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(p1, want, rtol=1e-5, atol=1e-7)
    assert (p1[..., PP] >= p0[..., PP] - 1e-7).all()


def test_a_shifted_model_closes_the_lips_on_more_frames_of_speech(tmp_path):
    sp = default_engine().synthesize("Bob maps a big bumpy map, but mum pays.", "en")
    plain = audio_to_visemes(sp.pcm, sp.sample_rate, 25, model=_model_with_shift(tmp_path, {}))
    more = audio_to_visemes(sp.pcm, sp.sample_rate, 25,
                            model=_model_with_shift(tmp_path, {"PP": 2.0}))
    closed = [int((w.argmax(1) == PP).sum()) for w in (plain, more)]
    assert closed[1] > closed[0], closed


def _rows(acc, recall):
    rows = sweep({"a": (np.zeros((1, NUM_VISEMES)), np.zeros(1, np.int64))})
    for r, a, c in zip(rows, acc, recall, strict=True):
        r["mean_accuracy"], r["mean_bilabial_recall"] = a, c
    return rows


def test_the_rule_takes_the_smallest_shift_that_reaches_the_recall_within_the_drop():
    n = len(SHIFTS)
    acc = [0.80 - 0.001 * k for k in range(n)]  # 0.1 point per step
    recall = [0.60 + 0.03 * k for k in range(n)]  # reaches 0.80 at step 7 (0.81)
    assert choose(_rows(acc, recall)) == SHIFTS[7]
    # the recall is reached only past the 1-point drop: the largest shift within it
    acc = [0.80 - 0.004 * k for k in range(n)]  # within 1 point up to step 2
    assert choose(_rows(acc, recall)) == SHIFTS[2]
    # nothing helps: no shift
    assert choose(_rows([0.80 - 0.02 * k for k in range(n)], recall)) == 0.0


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_the_sweep_scores_shifted_decisions(shift):
    # two frames: truth PP and sil; the model leans to sil on both by 0.5 nats
    lp = np.log(np.full((2, NUM_VISEMES), 1e-3))
    lp[:, VISEME_INDEX["sil"]], lp[:, PP] = np.log(0.6), np.log(0.6) - 0.5
    y = np.array([PP, VISEME_INDEX["sil"]])
    row = next(r for r in sweep({"val": (lp, y)}) if r["shift"] == shift)
    if shift == 0.0:
        assert row["val"]["bilabial_recall"] == 0.0 and row["val"]["frame_accuracy"] == 0.5
    else:  # both frames now read PP: the closure found, the silence lost
        assert row["val"]["bilabial_recall"] == 1.0 and row["val"]["frame_accuracy"] == 0.5

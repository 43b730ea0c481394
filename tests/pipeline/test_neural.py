"""The neural slot: a same-signature generator made by our code runs batched and only repaints
the lower face; a model with the wrong signature is refused with the reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from avatar_pipeline.avatar.default import default_avatar
from avatar_pipeline.neural import ModelSignatureError, NeuralRenderer, load_model, mel_windows
from avatar_pipeline.neural.testmodel import make_test_model


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    p = tmp_path_factory.mktemp("neural") / "w2l_small.onnx"
    info = make_test_model(p, width=0.25)
    assert info["params"] > 500_000
    return p


def _graph_model(path, inputs, output, batch="N"):
    """A tiny ONNX graph with the declared inputs/output (output = Identity of the last one)."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, *s]) for n, s in inputs]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, *output])
    node = helper.make_node("Identity", [inputs[-1][0]], ["out"])
    g = helper.make_graph([node], "g", ins, [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_refuses_wrong_signatures(tmp_path):
    cases = [
        ([("mel", (1, 80, 16)), ("face", (3, 96, 96))], (3, 96, 96), "expected [N,1,80,16]"),
        ([("face", (6, 96, 96))], (6, 96, 96), "expected 2 inputs"),
        ([("mel", (1, 80, 16)), ("face", (6, 96, 96))], (6, 96, 96), "expected tensor(float) "
                                                                      "[N,3,96,96]"),
        ([("mel", (1, 80, 20)), ("face", (6, 96, 96))], (3, 96, 96), "(mel) or"),
    ]
    for i, (ins, out, reason) in enumerate(cases):
        p = _graph_model(str(tmp_path / f"m{i}.onnx"), ins, out)
        with pytest.raises(ModelSignatureError) as err:
            load_model(p)
        assert reason in str(err.value), str(err.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelSignatureError, match="not a loadable ONNX model"):
        load_model(junk)
    with pytest.raises(ModelSignatureError, match="no such model file"):
        load_model(tmp_path / "missing.onnx")


def test_renders_batched_and_only_the_lower_face(small_model):
    tutor = default_avatar()
    r = NeuralRenderer(small_model)
    r.add_avatar(tutor)
    pcm = (np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000) * 8000).astype(np.int16)
    mels = mel_windows(pcm, 16000, 25)
    assert mels.shape == (25, 1, 80, 16)
    base = np.dstack([tutor.poses[0], np.full((512, 512, 1), 255, np.uint8)])
    frames = np.repeat(base[None], 6, 0)
    out = r.render(frames.copy(), mels[:6], [tutor.id] * 6)
    crop = r.crops[tutor.id].box
    changed = np.abs(out.astype(np.int16) - base[None].astype(np.int16)).max(-1).max(0)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 1000
    assert ys.min() >= crop.y + crop.height // 2 - 1 and ys.max() < crop.y + crop.height
    assert xs.min() >= crop.x and xs.max() < crop.x + crop.width
    # one batched call = the same as one call per frame
    single = np.concatenate([r.render(frames[i:i + 1].copy(), mels[i:i + 1], [tutor.id])
                             for i in range(6)])
    assert np.abs(single.astype(np.int16) - out.astype(np.int16)).max() <= 1


def test_fixed_batch_model_is_looped(tmp_path, small_model):
    """A model exported with batch fixed at 1 still serves a batch of 5."""
    m = onnx.load(str(small_model))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].ClearField("dim_param")
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(m, str(fixed))
    r = NeuralRenderer(fixed)
    assert r.fixed_batch == 1
    out = r.infer(np.zeros((5, 1, 80, 16), np.float32), np.zeros((5, 6, 96, 96), np.float32))
    assert out.shape == (5, 3, 96, 96)


def test_render_cli_with_neural_slot(small_model, tmp_path, capsys):
    from avatar_pipeline.avatar import AvatarRegistry
    from avatar_pipeline.avatar.default import DEFAULT_REF
    from avatar_pipeline.cli import main
    from avatar_pipeline.media import probe

    cache = tmp_path / "cache"
    AvatarRegistry(cache).add(default_avatar(), ref=DEFAULT_REF)
    out = tmp_path / "n.mp4"
    assert main(["--cache-dir", str(cache), "render", "--text", "Hello there.", "--neural",
                 str(small_model), "-o", str(out), "--no-progress"]) == 0
    assert probe(out)["video_frames"] > 10
    bad = _graph_model(str(tmp_path / "bad.onnx"), [("face", (6, 96, 96))], (3, 96, 96))
    assert main(["--cache-dir", str(cache), "render", "--text", "Hi.", "--neural", bad, "-o",
                 str(out), "--no-progress"]) == 2
    assert "--neural: expected 2 inputs" in capsys.readouterr().err


def _wav2lip_reference(wav16k: np.ndarray) -> np.ndarray:
    """Wav2Lip's audio.melspectrogram with its hparams, written with librosa and scipy as its
    audio.py is (its pinned librosa 0.7 padded the STFT by reflection)."""
    import librosa
    from scipy import signal

    y = signal.lfilter([1, -0.97], [1], wav16k)
    d = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    s = 20 * np.log10(np.maximum(1e-5, np.dot(basis, np.abs(d)))) - 20
    return np.clip((2 * 4.0) * ((s + 100) / 100) - 4.0, -4.0, 4.0)


def test_audio_features_are_wav2lips_own():
    """Users' Wav2Lip weights hear what they were trained on: pre-emphasis, Slaney mel with
    area normalisation, its dB range and [-4, 4] scaling, its windows per video frame; other
    rates resampled as librosa.load does (soxr HQ)."""
    import librosa
    import soxr

    from avatar_pipeline.neural import melspectrogram

    rng = np.random.default_rng(3)
    t = np.arange(int(1.37 * 16000)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + t)) + 0.05 * rng.standard_normal(len(t)))
    ours, ref = melspectrogram(wav.astype(np.float32)), _wav2lip_reference(wav)
    assert ours.shape == ref.shape == (80, 1 + len(wav) // 200)
    assert np.abs(ours - ref).max() < 1e-3
    # the windows: frame i starts at int(i * 80 / fps); one running past the end is the last 16
    pcm = (wav * 32767).astype(np.int16)
    wins = mel_windows(pcm, 16000, 25)
    mel = _wav2lip_reference(pcm.astype(np.float32) / 32768)
    assert wins.shape == (35, 1, 80, 16)
    for i in (0, 1, 7, 29):
        s = int(i * 80 / 25)
        assert np.abs(wins[i, 0] - mel[:, s:s + 16]).max() < 1e-3
    assert all(np.abs(wins[i, 0] - mel[:, -16:]).max() < 1e-3 for i in (30, 34))
    # 48 kHz in: resampled as librosa.load(sr=16000) does, then the same features
    pcm48 = (soxr.resample(wav, 16000, 48000) * 32767).astype(np.int16)
    as_loaded = librosa.resample(pcm48.astype(np.float32) / 32768, orig_sr=48000,
                                 target_sr=16000, res_type="soxr_hq")
    got = mel_windows(pcm48, 48000, 25)
    want = _wav2lip_reference(as_loaded)
    assert got.shape[0] == 35 and np.abs(got[5, 0] - want[:, 16:32]).max() < 1e-3

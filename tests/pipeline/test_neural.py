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

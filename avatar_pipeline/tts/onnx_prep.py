"""Preparing the neural TTS graphs we run: expose an inner tensor as an output, and turn
dynamically quantised convolutions back into float ones; cached on disk.

- **Durations as an output.** Kokoro and Piper compute each input token's duration inside the
  graph (Kokoro: ``/encoder/Clip_output_0``, frames of 600 samples at 24 kHz; Piper:
  ``/Ceil_output_0``, frames of 256 samples at 22.05 kHz) and use it to expand the tokens over
  time, so that tensor *is* the alignment of the audio the graph returns. Listing it as a graph
  output makes onnxruntime hand it back beside the audio.
- **Integer convolutions in float.** Kokoro's int8 export (dynamic quantisation) runs its
  convolutions as ``ConvInteger`` / ``MatMulInteger``, which onnxruntime's CPU kernels run at
  half the speed of float ones on CPUs without VNNI (measured: real-time factor 2.0 -> 0.95 on
  one core of our 2-core EPYC). Each such node becomes ``Cast -> Sub(zero point) -> Conv`` on
  the dequantised integer weights ``(w - w_zero)``, then a ``Cast`` back to int32. The integer
  products are exact in float32 (they stay below 2**24), so the audio is the same as the int8
  graph's to float rounding, and the rest of the graph (activation quantisation, the scale
  multiplications) is untouched.

The prepared graph is written once to ``$XDG_CACHE_HOME/avatar-fleet/tts`` (override with
``AVATAR_TTS_CACHE``) under a name derived from the source's sha256 and these steps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from config.logs import get_logger

log = get_logger(__name__)

PREP_VERSION = 1  # bump when the preparation changes (a new cache file is made)


def cache_dir() -> Path:
    env = os.environ.get("AVATAR_TTS_CACHE")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "avatar-fleet" / "tts"
    base.mkdir(parents=True, exist_ok=True)
    return base


def expose_output(model, tensor: str, elem_type: int) -> None:
    """Add the inner tensor ``tensor`` (produced by some node) to the graph's outputs."""
    from onnx import helper

    if not any(tensor in n.output for n in model.graph.node):
        raise ValueError(f"no node produces {tensor!r}: not the graph this code was written for")
    if all(o.name != tensor for o in model.graph.output):
        model.graph.output.append(helper.make_tensor_value_info(tensor, elem_type, None))


def dequantize_integer_ops(model) -> int:
    """Rewrite ``ConvInteger`` / ``MatMulInteger`` with constant weights as float ops on the
    dequantised integer weights (module docstring). Returns the number of nodes rewritten."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    made: dict[str, str] = {}  # integer weight (+ zero point) -> float initializer name
    nodes, extra = [], []
    count = 0
    for n in g.node:
        if n.op_type not in ("ConvInteger", "MatMulInteger") or n.input[1] not in inits:
            nodes.append(n)
            continue
        xq, wq = n.input[0], n.input[1]
        xzp = n.input[2] if len(n.input) > 2 else ""
        wzp = n.input[3] if len(n.input) > 3 else ""
        key = f"{wq}|{wzp}|{n.op_type}"
        if key not in made:
            w = numpy_helper.to_array(inits[wq]).astype(np.float32)
            if wzp:
                z = numpy_helper.to_array(inits[wzp]).astype(np.float32)
                if n.op_type == "ConvInteger" and z.ndim == 1 and z.size > 1:
                    z = z.reshape(-1, *([1] * (w.ndim - 1)))  # per output channel
                w = w - z
            made[key] = f"{wq}__f32_{len(made)}"
            extra.append(numpy_helper.from_array(w, made[key]))
        p = f"{n.name or n.output[0]}__f32"
        nodes.append(helper.make_node("Cast", [xq], [p + "_x"], to=TensorProto.FLOAT))
        x = p + "_x"
        if xzp:
            nodes.append(helper.make_node("Cast", [xzp], [p + "_z"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Sub", [x, p + "_z"], [p + "_xs"]))
            x = p + "_xs"
        op = helper.make_node("Conv" if n.op_type == "ConvInteger" else "MatMul",
                              [x, made[key]], [p + "_y"], name=p)
        op.attribute.extend(n.attribute)
        nodes.append(op)
        nodes.append(helper.make_node("Cast", [p + "_y"], [n.output[0]], to=TensorProto.INT32))
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(extra)
    # the integer weights no longer used by any node
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return count


def prepared(name: str, source: bytes, steps: Callable[[object], None], tag: str) -> Path:
    """The graph ``source`` (serialised ONNX) after ``steps(model)``, cached on disk.
    ``tag`` names the steps (part of the cache key with the source's hash)."""
    digest = hashlib.sha256(source).hexdigest()[:16]
    out = cache_dir() / f"{name}-{digest}-{tag}-v{PREP_VERSION}.onnx"
    if out.exists() and out.stat().st_size > 0:
        return out
    import onnx

    log.info("tts.preparing_graph", model=name, path=str(out))
    model = onnx.load_from_string(source)
    steps(model)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    tmp.replace(out)  # atomic: concurrent builders each write their own tmp
    return out

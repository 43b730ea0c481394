"""Time-stretching a few packets of speech for the jitter buffer (NetEq's accelerate and
preemptive expand): ``n`` packets in, ``m`` packets out, the same words a little faster or
slower and at the same pitch.

WSOLA from audiotsm (MIT; pure numpy) does the stretching. Two details make a block safe to
splice into a live stream:

* the packet that plays next is passed along as context, so WSOLA has audio past the block's
  end to overlap into, and the last few milliseconds of the output are cross-faded onto the
  original block's end: the seam with the next packet is the original one;
* the first few milliseconds are cross-faded from the original block's start the same way, so
  the seam with the packet played before is untouched.
"""

from __future__ import annotations

import numpy as np
from audiotsm import wsola
from audiotsm.io.array import ArrayReader, ArrayWriter

WIN_MS = 20.0  # WSOLA frame: two pitch periods of a low voice
SEAM_MS = 4.0  # cross-fades onto the original at both ends


def stretch_packets(packets: list[np.ndarray], n_out: int, sample_rate: int,
                    after: np.ndarray | None = None) -> list[np.ndarray]:
    """``packets`` (int16, equal lengths) as ``n_out`` packets of the same length.

    ``after``: the packet that will play next, if known (context for the seam)."""
    if not packets or n_out <= 0:
        raise ValueError("need at least one packet in and one out")
    size = len(packets[0])
    x = np.concatenate(packets).astype(np.float32) / 32768.0
    n_in, n_target = len(x), n_out * size
    tail = np.zeros(0, np.float32) if after is None else np.asarray(after, np.float32) / 32768.0
    frame = max(64, int(round(WIN_MS * sample_rate / 1000.0)) // 2 * 2)
    tsm = wsola(1, speed=n_in / n_target, frame_length=frame, synthesis_hop=frame // 2,
                tolerance=frame // 4)
    writer = ArrayWriter(1)
    tsm.run(ArrayReader(np.concatenate([x, tail])[None, :]), writer)
    y = writer.data[0, :n_target].astype(np.float64)
    if len(y) < n_target:
        y = np.pad(y, (0, n_target - len(y)))
    seam = min(n_target // 2, n_in // 2, max(1, int(SEAM_MS * sample_rate / 1000.0)))
    fade = np.linspace(0.0, 1.0, seam)
    y[:seam] = fade * y[:seam] + (1.0 - fade) * x[:seam]
    y[-seam:] = (1.0 - fade) * y[-seam:] + fade * x[n_in - seam:n_in]
    out = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)
    return [out[i * size:(i + 1) * size] for i in range(n_out)]

"""Wav2Lip's audio windows for a live stream: one window per video frame, each out as soon as the
audio it covers has arrived.

Frame ``i``'s window is the 16 mel steps from ``int(80 i / fps)`` (:mod:`.audio`), so it covers
the audio from 25 ms before the frame to about 212 ms after it: a neural session's frames wait
for that much of the future (the sprite pipeline waits 30 ms). A speech segment streamed through
:class:`MelStream` and ended with :meth:`MelStream.flush` gives the windows ``mel_windows`` gives
for the whole segment at once (the same start and end padding; the streaming resampler may differ
from the one-shot one in the last float bits).
"""

from __future__ import annotations

import numpy as np

from avatar_pipeline.neural.audio import (
    HOP,
    MAX_ABS,
    MEL_STEPS,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    mel_columns,
    preemphasis,
    window_start,
)

_PAD = N_FFT // 2


class MelStream:
    """``push(pcm)`` one video frame's audio (int16 mono at ``sample_rate``) at a time; ``ready()``
    returns the windows (k, 1, 80, 16) of the frames whose audio is complete, in order;
    ``flush()`` ends the segment and returns the rest; ``reset()`` drops everything."""

    def __init__(self, fps: int, sample_rate: int) -> None:
        self.fps, self.sample_rate = fps, sample_rate
        self.reset()

    def reset(self) -> None:
        self._rs = None
        if self.sample_rate != SAMPLE_RATE:
            import soxr

            self._rs = soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32",
                                           quality="HQ")
        self._prev = 0.0  # the last 16 kHz sample, for the pre-emphasis of the next chunk
        self._head: list[np.ndarray] = []  # pre-emphasised samples before the start padding
        self._buf = np.zeros(0)  # padded pre-emphasised samples, from padded index _buf0
        self._buf0 = 0
        self._n = 0  # 16 kHz samples of this segment so far
        self._cols = np.zeros((N_MELS, 0), np.float32)  # mel steps from step _col0
        self._col0 = 0
        self._frames_in = 0
        self._frames_out = 0

    @property
    def pending(self) -> int:
        """Frames pushed whose windows have not been returned yet."""
        return self._frames_in - self._frames_out

    def push(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm)
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
        self._frames_in += 1
        self._add(x if self._rs is None else self._rs.resample_chunk(x))

    def _add(self, x16: np.ndarray, end: bool = False) -> None:
        if len(x16):
            y = preemphasis(x16, self._prev)
            self._prev = float(x16[-1])
            self._n += len(x16)
            if self._head is not None:
                self._head.append(y)
                y = np.concatenate(self._head)
                if len(y) <= _PAD and not end:
                    self._head = [y]
                    return
                self._head = None
                # np.pad(..., "reflect") at the start, as the offline STFT is centred
                y = np.concatenate([y[_PAD:0:-1], y])
            self._buf = np.concatenate([self._buf, y])
        self._columns()

    def _columns(self) -> None:
        nxt = self._col0 + self._cols.shape[1]  # the next step to compute
        start = nxt * HOP - self._buf0
        new = mel_columns(self._buf[start:])
        if new.shape[1]:
            self._cols = np.concatenate([self._cols, new], axis=1)
            nxt += new.shape[1]
            drop = nxt * HOP - self._buf0
            self._buf, self._buf0 = self._buf[drop:], self._buf0 + drop

    def ready(self) -> np.ndarray:
        total = self._col0 + self._cols.shape[1]
        k = self._frames_out
        while k < self._frames_in and window_start(k, self.fps) + MEL_STEPS <= total:
            k += 1
        return self._take(k, last=None)

    def flush(self) -> np.ndarray:
        """The segment is over: the windows of every frame pushed, padded at the end as
        ``mel_windows`` pads (the last 16 steps for frames past the end)."""
        if self._rs is not None:
            tail = self._rs.resample_chunk(np.zeros(0, np.float32), last=True)
        else:
            tail = np.zeros(0, np.float32)
        if self._head is not None:  # never reached the start padding: a very short segment
            y = np.concatenate([*self._head, preemphasis(tail, self._prev)])
            self._n += len(tail)
            mode = "reflect" if len(y) > _PAD else "constant"
            self._head = None
            self._buf, self._buf0 = np.pad(y, _PAD, mode=mode), 0
            self._columns()
        else:
            self._add(tail)
            if self._n > _PAD:
                last = self._buf[-(_PAD + 1):-1][::-1]  # reflect padding at the end
                self._buf = np.concatenate([self._buf, last])
            else:
                self._buf = np.concatenate([self._buf, np.zeros(_PAD)])
            self._columns()
        total = self._col0 + self._cols.shape[1]
        if total < MEL_STEPS:  # shorter than one window: silence after it
            pad = np.full((N_MELS, MEL_STEPS - total), -MAX_ABS, np.float32)
            self._cols = np.concatenate([self._cols, pad], axis=1)
            total = MEL_STEPS
        out = self._take(self._frames_in, last=total - MEL_STEPS)
        self.reset()
        return out

    def _take(self, upto: int, last: int | None) -> np.ndarray:
        n = upto - self._frames_out
        out = np.empty((n, 1, N_MELS, MEL_STEPS), np.float32)
        for j in range(n):
            s = window_start(self._frames_out + j, self.fps)
            if last is not None:
                s = min(s, last)
            out[j, 0] = self._cols[:, s - self._col0:s - self._col0 + MEL_STEPS]
        self._frames_out = upto
        # keep the steps later windows may need (the last 16 at least, for the end's rule)
        total = self._col0 + self._cols.shape[1]
        keep_from = min(window_start(self._frames_out, self.fps), total - MEL_STEPS)
        if keep_from > self._col0:
            self._cols = self._cols[:, keep_from - self._col0:]
            self._col0 = keep_from
        return out

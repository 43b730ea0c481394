"""The instruments the room and browser tests judge lip sync with (scripts/room_probe.py,
scripts/browser.py), on signals whose answer is known."""

from __future__ import annotations

import numpy as np

from scripts.browser import audio_as_played
from scripts.room_probe import lag_ms


def test_lag_ms_reads_a_known_delay_of_video_behind_audio():
    rng = np.random.default_rng(1)
    env = np.repeat(rng.random(60) > 0.5, 8).astype(float)  # 80 ms syllables, 4.8 s
    audio_t = np.arange(len(env)) * 0.01  # 10 ms blocks
    frames = np.arange(0, 4.8, 0.04)
    for delay_ms in (-40, 0, 30, 80):
        mouth = np.interp(frames - delay_ms / 1000, audio_t, env)
        lag = lag_ms(audio_t, env, frames, mouth, 0.3, 4.4)
        assert abs(lag - delay_ms) <= 15, (delay_ms, lag)


def test_audio_as_played_dates_blocks_by_their_packets_delivery_and_fills_dtx_gaps():
    # packets of 20 ms (960 ticks at 48 kHz) delivered every 20 ms from t = 1000 ms, then a DTX
    # gap: nothing sent for 400 ms, then speech again
    rtp = [0, 960, 1920, 2880 + 19200, 3840 + 19200]
    at = [1000.0, 1020.0, 1040.0, 1460.0, 1480.0]
    delivered = list(zip(at, rtp, strict=True))
    blocks = [[r + k * 480, 0.1 * (i + 1)] for i, r in enumerate(rtp) for k in (0, 1)]
    t, rms = audio_as_played(blocks, delivered, output_delay_ms=30.0)
    assert t[0] == 1030.0, "first block: its packet's delivery + the device's delay"
    played = dict(zip(np.round(t).astype(int), rms, strict=True))
    assert played[1040] == 0.1 and played[1050] == 0.2 and played[1060] == 0.2
    assert played[1200] == 0.0, "the DTX gap plays silence"
    assert played[1490] == 0.4 and played[1520] == 0.5
    assert np.allclose(np.diff(t), 10.0)


def test_audio_as_played_drops_blocks_never_seen_delivered():
    t, rms = audio_as_played([[0, 0.3], [96000, 0.3]], [[500.0, 0]])
    assert list(t) == [500.0] and list(rms) == [0.3]
    assert audio_as_played([[0, 0.3]], [])[0].size == 0
    assert audio_as_played([[96000, 0.3]], [[500.0, 0]])[0].size == 0, "none played yet"

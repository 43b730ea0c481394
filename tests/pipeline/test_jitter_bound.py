"""The jitter benchmark's references: the best steady delay in hindsight and the clairvoyant
lower bound (benchmarks/jitter_bound.py) on traces whose answers are known by hand."""

from __future__ import annotations

import numpy as np

from avatar_pipeline.jitter import JitterConfig
from avatar_pipeline.jitter_replay import replay_trace
from benchmarks.jitter_bound import fixed_in_hindsight, median_bound
from benchmarks.jitter_trace_gen import generated


def _trace(arrival_ms, segment=None) -> dict:
    return {"packet_ms": 20.0, "arrival_ms": arrival_ms,
            "segment": segment if segment is not None else [0] * len(arrival_ms)}


def test_a_steady_stream_needs_no_delay():
    t = _trace([20.0 * k for k in range(3000)])
    assert fixed_in_hindsight(t) == 0.0
    b = median_bound(t)
    assert b.ruled_out_ms == 0.0 and b.clairvoyant_median_ms <= 5.0
    assert b.clairvoyant_late_pct == 0.0


def test_a_stream_that_falls_behind_after_its_first_packet_is_proved_to_need_the_delay():
    # every packet after the first comes 200 ms behind its slot: any buffer that is not late on
    # almost all of them plays at 200 ms or more, and the bound proves it
    arr = [0.0, 20.0] + [20.0 * k + 200.0 for k in range(2, 3000)]
    t = _trace(arr)
    assert fixed_in_hindsight(t) == 200.0
    b = median_bound(t)
    assert 185.0 <= b.ruled_out_ms < 200.0
    assert 195.0 <= b.clairvoyant_median_ms <= 210.0 and b.clairvoyant_late_pct <= 0.5


def test_rare_late_spikes_cost_a_steady_buffer_their_height_and_a_clairvoyant_one_little():
    # one 20 ms packet in 100 comes 300 ms late, one every 2 s (2 % of the worker's 40 ms
    # packets, 280 ms behind their slot: the packet's other half comes 20 ms later anyway): a
    # steady delay must cover them; knowing when they come, a buffer ramps up by stretching
    # just before each and down after
    arr = [20.0 * k + (300.0 if k % 100 == 50 else 0.0) for k in range(6000)]
    t = _trace(arr)
    assert fixed_in_hindsight(t) == 280.0
    b = median_bound(t)
    assert b.clairvoyant_late_pct <= 0.5
    assert b.ruled_out_ms <= b.clairvoyant_median_ms < 280.0


def test_no_buffer_beats_the_bound_and_the_bound_never_passes_a_steady_delay():
    # our own buffer, replayed on a generated trace, cannot sit below the proof, and a steady
    # delay (one of the trajectories the proof ranges over) is never ruled out
    traces = generated()
    for name in ("heavy_tail", "turns"):
        tr = traces[name]
        cut = {**tr, "arrival_ms": tr["arrival_ms"][:6000], "segment": tr["segment"][:6000]}
        b = median_bound(cut)
        assert b.ruled_out_ms <= fixed_in_hindsight(cut), name
        s = replay_trace(cut, JitterConfig(packet_ms=40.0)).summary()
        if s["late_concealed_pct"] <= 0.5 and s["underruns"] == 0:
            assert s["delay_median_ms"] > b.ruled_out_ms, (name, s, b)
        assert np.isfinite(b.clairvoyant_median_ms)

"""The per-worker engine on a simulated clock: what each session would show and play."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.engine import AvatarEngine, EngineConfig, is_silent
from avatar_pipeline.tts import default_engine
from avatar_pipeline.viseme_set import VISEME_INDEX

RATE, FPS = 48000, 25
SPF = RATE // FPS


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def asset():
    return AvatarRegistry().default()


@pytest.fixture(scope="module")
def speech():
    from agent.lesson import resample

    sp = default_engine().synthesize("Good morning, shall we read the story together?", "en")
    return sp, resample(sp.pcm, sp.sample_rate, RATE)


@pytest.fixture
def engine(asset):
    clock = Clock()
    eng = AvatarEngine(asset, EngineConfig(fps=FPS, sample_rate=RATE), clock=clock)
    eng.clock_ = clock
    return eng


def run(eng, ticks: int, before=None) -> None:
    for k in range(ticks):
        if before:
            before(k)
        eng.tick()
        eng.clock_.t += 1 / FPS


def mouth(asset, frame) -> np.ndarray:
    from avatar_pipeline.compose import i420_to_rgb

    b = asset.mouth_box
    img = i420_to_rgb(np.frombuffer(frame.video, np.uint8), frame.width, frame.height)
    return img[b.y - 8:b.y + b.height + 8, b.x - 8:b.x + b.width + 8].astype(np.int16)


def test_network_speech_comes_out_whole_one_frame_per_tick(engine, speech, asset):
    _, pcm = speech
    frames = []
    s = engine.open_session(frames.append)
    chunks = [pcm[i:i + 4800] for i in range(0, len(pcm), 4800)]  # 100 ms chunks, 5x real time

    def feed(k):
        if chunks:
            s.push_audio(chunks.pop(0))
            if not chunks:
                s.end_segment()

    n_ticks = int(len(pcm) / SPF) + 40
    run(engine, n_ticks, feed)
    assert len(frames) == n_ticks, "exactly one frame per tick"
    audio = [f.audio for f in frames if f.audio is not None]
    assert all(len(a) == SPF for a in audio), "each frame carries exactly 1/fps of audio"
    out = np.concatenate(audio)
    assert np.array_equal(out[:len(pcm)], pcm) and not out[len(pcm):].any(), \
        "every sample arrives, in order, once"
    assert sum(f.segment_end for f in frames) == 1
    assert frames[-1].audio is None, "silent once the segment is over"
    spoken = [f for f in frames if f.audio is not None]
    assert len({int(np.argmax(f.weights)) for f in spoken}) >= 5, "visemes follow the speech"
    assert max(f.latency_s for f in spoken) <= 0.0401, "a frame is out one tick after its audio"
    assert spoken[0].speech_start_s <= 0.0401, "a burst starts at once: its first frame next tick"
    still = mouth(asset, frames[-1]).astype(np.float32)
    moved = [np.abs(mouth(asset, f) - still).mean() for f in spoken]
    assert np.percentile(moved, 75) > 5, "the mouth region changes while speaking"


def test_lesson_text_plays_with_its_exact_visemes(engine, speech):
    sp, pcm = speech
    frames = []
    s = engine.open_session(frames.append)
    track = sp.viseme_track(FPS)
    s.say(pcm, track)
    run(engine, len(track) + 10)
    spoken = [f for f in frames if f.audio is not None]
    assert len(spoken) == len(track)
    assert np.array_equal(np.concatenate([f.audio for f in spoken])[:len(pcm)], pcm)
    agree = np.mean([np.argmax(f.weights) == np.argmax(t) for f, t in zip(spoken, track,
                                                                        strict=True)])
    assert agree > 0.75, f"shown visemes agree with the exact track on {agree:.0%} of frames"
    assert spoken[-1].segment_end


def test_clear_stops_speech_at_once_and_the_next_segment_plays(engine, speech):
    _, pcm = speech
    frames = []
    s = engine.open_session(frames.append)
    s.push_audio(pcm)
    s.end_segment()
    run(engine, 30)
    assert frames[-1].audio is not None, "speaking"
    n = len(frames)
    s.clear()
    run(engine, 5)
    assert all(f.audio is None for f in frames[n:]), "no speech after clear, not even one frame"
    s.push_audio(pcm[:RATE])
    s.end_segment()
    run(engine, 40)
    again = [f.audio for f in frames[n + 5:] if f.audio is not None]
    assert len(again) == FPS and np.array_equal(np.concatenate(again), pcm[:RATE])


def test_sessions_share_one_batch_and_stay_independent(engine, speech):
    _, pcm = speech
    a, b = [], []
    sa = engine.open_session(a.append, session_id="a")
    engine.open_session(b.append, session_id="b")
    sa.push_audio(pcm[:RATE])
    sa.end_segment()
    run(engine, 30)
    assert engine.last_batch == 2 and engine.max_batch_seen == 2
    assert len(a) == len(b) == 30
    assert any(f.audio is not None for f in a) and all(f.audio is None for f in b)
    assert all(np.argmax(f.weights) == VISEME_INDEX["sil"] for f in b), "b stays silent"
    engine.close_session("b")
    run(engine, 1)
    assert engine.last_batch == 1 and len(b) == 30


def test_bad_audio_is_refused_and_the_session_goes_on(engine, speech):
    _, pcm = speech
    frames = []
    s = engine.open_session(frames.append)
    with pytest.raises(ValueError, match="int16"):
        s.push_audio(pcm.astype(np.float32))
    with pytest.raises(ValueError, match="1-D"):
        s.push_audio(np.zeros((2, 100), np.int16))
    s.push_audio(pcm[:RATE // 2])
    s.end_segment()
    run(engine, 25)
    assert sum(f.audio is not None for f in frames) == 13  # 12.5 frames: the last is padded


def test_a_stall_is_an_underrun_with_silence_not_a_crash(engine, speech):
    _, pcm = speech
    frames = []
    s = engine.open_session(frames.append)
    s.push_audio(pcm[:RATE])  # 1 s, then the network stalls for a second, then the rest
    run(engine, 40)
    s.push_audio(pcm[RATE:2 * RATE])
    s.end_segment()
    run(engine, 60)
    assert s.jitter.stats.underruns == 1
    def loud(packets):
        return [p for p in packets if not is_silent(p)]

    sent = loud(pcm[:2 * RATE].reshape(-1, SPF))
    played = loud([f.audio for f in frames if f.audio is not None])
    st = s.jitter.stats
    # The stall costs silence; catching up shortens pauses or plays a few packets of speech as
    # one fewer (time-stretched), never drops one: every packet of speech is either played as
    # it was sent, in order, or inside a stretched block.
    assert st.speech_dropped == 0
    assert abs(len(played) - (len(sent) - st.accelerated + st.expanded)) <= 1
    verbatim = [i for i, p in enumerate(sent) if any(np.array_equal(p, q) for q in played)]
    assert len(verbatim) >= len(sent) - 4 * (st.accelerated + st.expanded)
    order = [next(j for j, q in enumerate(played) if np.array_equal(sent[i], q)) for i in verbatim]
    assert order == sorted(order)
    # what played, less what stretching added or saved, is the sender's 2 s: the position the
    # voice agent is told
    out = [f for f in frames if f.audio is not None]
    assert abs(sum(len(f.audio) for f in out) / RATE - sum(f.stretch_s for f in out) - 2.0) < 0.041


def _offset_ms(asset, frames) -> float:
    """Lag of mouth openness behind the audio envelope in the engine's own output."""
    from avatar_pipeline.compose import i420_to_rgb

    b = asset.mouth_box
    openness, env = [], []
    for f in frames:
        img = i420_to_rgb(np.frombuffer(f.video, np.uint8), f.width, f.height)
        luma = img[b.y - 8:b.y + b.height + 8,
                   b.x + b.width // 5:b.x + b.width * 4 // 5].astype(np.float32).mean(-1)
        openness.append(((luma < 90) | (luma > 215)).mean())
        a = (f.audio if f.audio is not None else np.zeros(SPF, np.int16)).astype(np.float32)
        env += [np.sqrt(np.mean(c * c)) for c in a.reshape(4, -1)]  # 10 ms steps
    # each value at the middle of the interval it covers (a frame 40 ms, an envelope step 10 ms)
    grid = np.arange(0, len(frames) / FPS, 0.005)
    v = np.interp(grid, (np.arange(len(frames)) + 0.5) / FPS, openness)
    e = np.convolve(np.interp(grid, (np.arange(len(env)) + 0.5) / 100, env), np.ones(8) / 8,
                    "same")
    v, e = (v - v.mean()) / v.std(), (e - e.mean()) / e.std()
    lags = np.arange(-40, 41)
    xc = [np.dot(e[max(0, -k):len(e) - max(0, k)], v[max(0, k):len(v) - max(0, -k)]) for k in lags]
    return float(lags[int(np.argmax(xc))] * 5)


def test_the_mouth_is_in_sync_with_the_audio_it_ships_with(engine, speech, asset):
    """Network audio (the model's visemes) against lesson text (exact visemes from the phoneme
    events) for the same speech. Mouth openness and loudness do not peak together in speech, so
    the cross-correlation reads a lag even when in sync: the exact path is the reference."""
    sp, pcm = speech
    lags = {}
    for path in ("network audio", "lesson text"):
        frames = []
        s = engine.open_session(frames.append, session_id=path)
        run(engine, 10)
        if path == "network audio":
            s.push_audio(pcm)
            s.end_segment()
        else:
            s.say(pcm, sp.viseme_track(FPS))
        run(engine, int(len(pcm) / SPF) + 20)
        s.close()
        lags[path] = _offset_ms(asset, frames)
    offset = lags["network audio"] - lags["lesson text"]
    assert abs(offset) <= 20, f"mouth vs audio in the worker's output: {offset:+.0f} ms ({lags})"
    assert abs(lags["lesson text"]) <= 40, f"the measure itself is off: {lags}"


def test_the_offline_render_draws_what_the_worker_shows(engine, speech, tmp_path, monkeypatch):
    """One smoothing: `avatar render` and the worker give the same mouth, for lesson text
    (smoothed both ways) and for a voice agent's audio (smoothed causally)."""
    import wave

    from avatar_pipeline import cli

    sp, pcm = speech
    # the same speech on both sides (espeak's pitch flutter moves a re-synthesis by samples)
    monkeypatch.setattr(cli, "_speech_from_text", lambda *a: (
        sp.pcm, sp.sample_rate, sp.viseme_track(FPS)))
    mouth_track = cli.mouth_track
    # lesson text: the worker's `say` with the exact track vs the renderer's --text
    frames = []
    s = engine.open_session(frames.append)
    s.say(pcm, sp.viseme_track(FPS))
    run(engine, len(sp.viseme_track(FPS)) + 5)
    shown = np.stack([f.weights for f in frames if f.audio is not None])
    _, _, drawn = mouth_track(sp.text, "en", None, None, FPS)
    np.testing.assert_allclose(shown, drawn[:len(shown)], atol=1e-5)
    # audio: the worker fed the speech as a stream vs the renderer's --audio of the same file
    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    frames.clear()
    s2 = engine.open_session(frames.append)
    s2.push_audio(pcm)
    s2.end_segment()
    run(engine, len(pcm) // SPF + 20)
    shown = np.stack([f.weights for f in frames if f.audio is not None])
    _, _, drawn = mouth_track(None, "en", None, str(path), FPS)
    assert len(shown) == len(drawn)
    np.testing.assert_allclose(shown, drawn, atol=1e-4)

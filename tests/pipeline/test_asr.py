"""Speech to text (avatar_pipeline.asr): the multilingual Whisper base model is joined from its
two packages and refused when they do not match the pinned hash; it hears each lesson language
and tells them apart; tiny.en stays for English. The speech is our own TTS (synthetic)."""

from __future__ import annotations

import pytest

from agent.lesson import resample
from avatar_pipeline import asr
from avatar_pipeline.tts import default_engine
from benchmarks.wer import tokens


def speech(text: str, language: str):
    sp = default_engine().synthesize(text, language)
    return resample(sp.pcm, sp.sample_rate, asr.RATE)


def test_the_base_model_is_joined_once_and_a_changed_package_is_refused(tmp_path, monkeypatch):
    path = asr.base_model_dir()
    assert (path / "model.bin").stat().st_size > 140e6 and (path / "tokenizer.json").exists()
    assert asr.base_model_dir() == path, "joined once, then reused"
    monkeypatch.setenv("AVATAR_TTS_CACHE", str(tmp_path))
    monkeypatch.setattr(asr, "BASE_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="do not match the pinned sha256"):
        asr.base_model_dir()
    assert not list(tmp_path.rglob("model.bin*")), "nothing half-joined is left to be used"


@pytest.mark.parametrize(("language", "text", "content"), [
    ("es", "Buenos días, clase. Abran sus libros, por favor.",
     {"buenos", "días", "clase", "libros", "favor"}),
    ("en", "Good morning, class. Please open your books.",
     {"good", "morning", "class", "open", "books"}),
])
def test_base_tells_the_lesson_languages_apart_and_hears_them(language, text, content):
    heard = asr.transcribe_as(speech(text, language), "base", None, ("en", "es", "zh", "fa"))
    assert heard.language == language and heard.language_probability > 0.6
    # espeak-ng's voice is hard on Whisper base now and then ("abran sus libros" came back
    # as one made-up word once): the content words must come through
    assert len(content & set(tokens(heard.text, language))) >= 4, heard.text


def test_a_given_language_is_used_and_tiny_en_hears_english():
    pcm = speech("你好，同学们。", "cmn")
    heard = asr.transcribe_as(pcm, "base", "cmn")
    assert (heard.language, heard.language_probability) == ("zh", 1.0)
    assert heard.text and all(not c.isascii() or not c.isalpha() for c in heard.text), heard.text
    en = asr.transcribe_as(speech("Thank you for your answer.", "en"), "tiny.en")
    assert en.language == "en" and "answer" in en.text.lower()
    with pytest.raises(ValueError, match="no speech-to-text model"):
        asr.whisper_model("large")

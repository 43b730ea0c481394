"""The worker's TTS registry: a voice id from ``config.voices`` -> an engine that speaks it with
exact phoneme timing. Engines load on first use and are shared by every session of the process.
A neural voice whose package is not installed falls back to espeak-ng (logged and counted), so
lesson text is always spoken."""

from __future__ import annotations

import os
import re
import threading

from avatar_pipeline.tts.types import Speech
from config.logs import get_logger
from config.metrics import counter
from config.voices import VOICES, Voice, voice_for

log = get_logger(__name__)
FALLBACKS = counter("avatar_tts_fallback_total",
                    "Lesson text spoken by espeak-ng because its voice could not load", ("voice",))
_ENGINES: dict[str, object] = {}
_FAILED: set[str] = set()
_LOCK = threading.Lock()
# sentence and clause ends; CJK full-width marks need no space after them
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；：])\s*")
_CLAUSE = re.compile(r"(?<=,)\s+|(?<=[，、])\s*")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _words(text: str) -> int:
    """Words in ``text``, two CJK characters counting as one (Mandarin writes no spaces)."""
    return len(text.split()) + len(_CJK.findall(text)) // 2


class PiperVoice:
    """A Piper voice behind the TTSEngine interface. Two onnxruntime threads: a lesson's
    first sentence is ready in half the time (real-time factor 0.075 against 0.146 on one
    thread of our 2-core EPYC)."""

    def __init__(self, threads: int = min(2, os.cpu_count() or 1)) -> None:
        from avatar_pipeline.tts.piper import PiperEngine

        self.engine = PiperEngine(threads=threads)
        self.sample_rate = self.engine.sample_rate

    def synthesize(self, text: str, language: str = "en", voice: str | None = None,
                   **_unused) -> Speech:
        return self.engine.synthesize(text)


class KokoroVoice:
    """One Kokoro style pack behind the TTSEngine interface; every Kokoro voice of the process
    shares one model (CUDA when onnxruntime has it, else two CPU threads)."""

    sample_rate = 24000
    _shared = None

    def __init__(self, style: str) -> None:
        from avatar_pipeline.tts.kokoro import KokoroEngine, base_styles

        if style not in base_styles():
            raise ValueError(f"Kokoro has no style pack {style!r}")
        if KokoroVoice._shared is None:
            KokoroVoice._shared = KokoroEngine(threads=min(2, os.cpu_count() or 1))
        self.engine, self.style = KokoroVoice._shared, style

    def synthesize(self, text: str, language: str = "en", voice: str | None = None,
                   **_unused) -> Speech:
        return self.engine.synthesize(text, language, self.style)


def _load(spec: Voice):
    from avatar_pipeline.tts import default_engine

    if spec.engine == "espeak":
        return default_engine()
    if spec.engine == "piper":
        return PiperVoice()
    if spec.engine == "kokoro":
        return KokoroVoice(spec.style or "jf_alpha")
    if spec.engine == "coqui":
        from avatar_pipeline.tts.coqui import CoquiEngine

        return CoquiEngine(spec.model_path, spec.config_path)
    raise ValueError(f"no TTS engine {spec.engine!r}")


def engine_for(voice: str | None, language: str) -> tuple[object, str | None, str]:
    """(engine, the voice argument it takes, the voice id actually used) for a request."""
    from avatar_pipeline.tts import default_engine

    chosen = voice_for(voice, language)
    spec = VOICES.get(chosen) if chosen else None
    if spec is None or spec.engine == "espeak":
        return default_engine(), chosen, chosen or "espeak"
    with _LOCK:
        if spec.id not in _ENGINES and spec.id not in _FAILED:
            try:
                _ENGINES[spec.id] = _load(spec)
                log.info("tts.voice_loaded", voice=spec.id, engine=spec.engine)
            except Exception as exc:  # package missing, model broken: espeak speaks instead
                _FAILED.add(spec.id)
                log.error("tts.voice_unavailable", voice=spec.id, error=repr(exc))
        engine = _ENGINES.get(spec.id)
    if engine is None:
        FALLBACKS.labels(spec.id).inc()
        return default_engine(), None, "espeak"
    return engine, None, spec.id


# Words a phrase starts with, where a speaker may pause: a long first sentence with no comma
# is cut before the first of them (after two words at least), so the first audio is short.
_PHRASE_STARTS: dict[str, frozenset[str]] = {
    "en": frozenset("and but or so when because while after before to at on in from for with "
                    "until than".split()),
    "es": frozenset("y pero o porque cuando mientras después antes para en con desde hasta "
                    "que".split()),
}


def sentences(text: str, first_words: int = 6, language: str = "en") -> list[str]:
    """``text`` cut after sentence ends (and ``;`` ``:``), so speech can start after the
    first. A first sentence longer than ``first_words`` words is cut at its first comma, and
    a first part still that long before the first word that starts a phrase (``and``, ``to``,
    ``when`` ...; English and Spanish), so that the first audio is short and made soonest
    (the cut is a phrase break a speaker could make; only the first sentence is cut so)."""
    parts = [s for s in (p.strip() for p in _SENTENCE.split(text)) if s]
    if parts and _words(parts[0]) > first_words:
        head = _CLAUSE.split(parts[0], maxsplit=1)
        if len(head) == 2 and _words(head[0]) >= 2:
            parts[:1] = head
    starts = _PHRASE_STARTS.get(language.split("-")[0], frozenset())
    if parts and starts:
        words = parts[0].split()
        if len(words) > first_words:
            cut = next((i for i in range(2, len(words) - 1)
                        if words[i].lower().strip("¿¡\"'") in starts), None)
            if cut is not None:
                parts[:1] = [" ".join(words[:cut]), " ".join(words[cut:])]
    return parts

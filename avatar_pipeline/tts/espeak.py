"""espeak-ng through the library that PyPI ``espeakng-loader`` ships, driven with ctypes.

espeak-ng runs in synchronous mode with phoneme events switched on: every chunk of audio the
synth callback receives comes with the events inside it, and each event carries ``sample``, the
exact index of the sample where the phoneme starts. So the phoneme timing (and the viseme track
derived from it) is exact, not estimated.

espeak-ng keeps global state (current voice, parameters, callback), so one process-wide lock
guards every call into it. It also keeps its pitch-flutter phase in a static across utterances,
so the same text spoken twice in one process can differ by a few samples (the phonemes and
visemes do not change); a fresh process making the same calls in the same order is
sample-exact, which is what makes the training corpus reproducible. The variants in
``UNSAFE_VARIANTS`` segfault libespeak-ng 1.52 and are refused.
"""

from __future__ import annotations

import ctypes
import re
import threading
from dataclasses import dataclass

import numpy as np

from avatar_pipeline.tts.types import Speech, TimedPhoneme
from avatar_pipeline.visemes.maps import espeak_to_viseme, is_marker
from config.logs import get_logger

log = get_logger(__name__)

# espeak_AUDIO_OUTPUT / options / events / parameters (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EV_LIST_TERMINATED = 0
_EV_WORD = 1
_EV_SENTENCE = 2
_EV_END = 5
_EV_MSG_TERMINATED = 6
_EV_PHONEME = 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_P_RATE = 1
_P_VOLUME = 2
_P_PITCH = 3
_P_RANGE = 4
_P_WORDGAP = 7

# Our language codes -> espeak-ng voice names.
LANGUAGES: dict[str, str] = {
    "en": "en-us",
    "en-us": "en-us",
    "en-gb": "en",
    "es": "es",
    "zh": "cmn",
    "cmn": "cmn",
    "fa": "fa",
    "fr": "fr",
    "de": "de",
    "it": "it",
    "pt": "pt",
}

# Variants that crash libespeak-ng 1.52 (segfault) on some of our sentences (found by running
# every variant over the corpus in subprocesses); refused rather than taking the process down.
UNSAFE_VARIANTS = frozenset({"Demonic", "rob"})

PAUSE_PHONEMES = frozenset({"_", "_:", "_!", "_^", "_;", ""})


# Punctuation that ends a clause (espeak-ng's own clause breaks, ASCII and CJK/Arabic forms).
_CLAUSE_END = re.compile(
    r"([,.;:!?\u2026\u2014\u0964\u3001\u3002\uff0c\uff1f\uff01\uff1b\uff1a\u060c\u061f\u061b]+)")
# Kokoro's and Piper's vocabularies know these; other clause marks become the nearest of them.
_PUNCT_CANON = {"\u3001": ",", "\uff0c": ",", "\u060c": ",", "\u3002": ".", "\uff1f": "?",
                "\u061f": "?", "\uff01": "!", "\uff1b": ";", "\u061b": ";", "\uff1a": ":",
                "\u0964": "."}


@dataclass(frozen=True)
class Clause:
    words: list[list[str]]  # phonemes per word
    punctuation: str  # what ended the clause: one of , . ; : ! ? \u2026 \u2014, or ""


def split_clauses(text: str) -> list[tuple[str, str]]:
    """``"Hi, you?"`` -> ``[("Hi", ","), (" you", "?")]``; the punctuation is canonical ASCII
    where one exists, and a trailing piece without punctuation gets ``""``."""
    parts = _CLAUSE_END.split(text)
    out: list[tuple[str, str]] = []
    for i in range(0, len(parts), 2):
        piece = parts[i]
        punct = parts[i + 1] if i + 1 < len(parts) else ""
        p = _PUNCT_CANON.get(punct[:1], punct[:1]) if punct else ""
        if piece.strip() or (p and out):
            out.append((piece, p))
    return out


class _IdUnion(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _IdUnion),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))

_LOCK = threading.RLock()
_LIB = None
_SAMPLE_RATE = 0


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)
        _LIBC.srand.argtypes = [ctypes.c_uint]
    return _LIBC


def _lib():
    """Load and initialise libespeak-ng once per process (under the lock)."""
    global _LIB, _SAMPLE_RATE
    if _LIB is not None:
        return _LIB
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                          ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                               espeakng_loader.get_data_path().encode(),
                               _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
    if sr <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({sr})")
    _SAMPLE_RATE = sr
    _LIB = lib
    return lib


class EspeakEngine:
    """The default TTS engine (``TTSEngine`` protocol): espeak-ng with exact phoneme timing.

    ``voice`` is an espeak voice variant (``"m3"``, ``"f2"``, ``"klatt4"`` …) or a full espeak
    voice name (``"en-us+f2"``). ``rate`` is words per minute (80–450, default 175), ``pitch``
    0–100 (default 50).
    """

    def __init__(self) -> None:
        with _LOCK:
            _lib()
        self.sample_rate = _SAMPLE_RATE

    @staticmethod
    def voice_name(language: str, voice: str | None) -> str:
        lang = LANGUAGES.get(language.lower(), language.lower())
        if not voice:
            return lang
        if voice.split("+")[-1] in UNSAFE_VARIANTS:
            raise ValueError(f"espeak-ng voice variant {voice!r} is known to crash; not used")
        if "+" in voice or voice == lang:
            return voice
        return f"{lang}+{voice}"

    def phonemize(self, text: str, language: str = "en", ipa: bool = False) -> list[list[str]]:
        """Text -> phonemes (espeak mnemonics, or IPA), one list per clause, no audio."""
        mode = (0x02 if ipa else 0x00) | (ord("|") << 8)
        out: list[list[str]] = []
        with _LOCK:
            lib = _lib()
            if lib.espeak_SetVoiceByName(self.voice_name(language, None).encode()) != 0:
                raise ValueError(f"espeak-ng has no voice for {language!r}")
            buf = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
            ptr = ctypes.c_char_p(ctypes.addressof(buf))
            while ptr.value:
                res = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
                if res is None:
                    break
                phs = [p for w in res.decode("utf-8").split() for p in w.split("|") if p]
                out.append(phs)
        return out

    def phonemize_clauses(self, text: str, language: str = "en", ipa: bool = True
                          ) -> list[Clause]:
        """Text -> clauses, each with its words' phonemes and the punctuation that ended it
        (``""`` when none). Neural TTS front ends (Kokoro, Piper) need both, and espeak's own
        phoneme output drops the punctuation, so the text is cut at clause punctuation first
        (as espeak itself does) and each piece phonemized alone."""
        out: list[Clause] = []
        for piece, punct in split_clauses(text):
            words: list[list[str]] = []
            mode = (0x02 if ipa else 0x00) | (ord("|") << 8)
            with _LOCK:
                lib = _lib()
                if lib.espeak_SetVoiceByName(self.voice_name(language, None).encode()) != 0:
                    raise ValueError(f"espeak-ng has no voice for {language!r}")
                buf = ctypes.create_string_buffer(piece.encode("utf-8") + b"\0")
                ptr = ctypes.c_char_p(ctypes.addressof(buf))
                while ptr.value:
                    res = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
                    if res is None:
                        break
                    words += [[p for p in w.split("|") if p and not is_marker(p)]
                              for w in res.decode("utf-8").split()]
            words = [w for w in words if w]
            if words:
                out.append(Clause(words, punct))
            elif out and punct:
                out[-1] = Clause(out[-1].words, punct)
        return out

    def synthesize(self, text: str, language: str = "en", voice: str | None = None,
                   rate: int | None = None, pitch: int | None = None,
                   pitch_range: int | None = None, word_gap: int | None = None,
                   seed: int = 0) -> Speech:
        if not isinstance(text, str):
            raise ValueError("text must be a str")
        name = self.voice_name(language, voice)
        chunks: list[np.ndarray] = []
        events: list[tuple[int, str]] = []
        total = [0]

        def callback(wav, n, ev):  # noqa: ANN001 - ctypes signature
            if wav and n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
                total[0] += n
            i = 0
            while ev[i].type != _EV_LIST_TERMINATED:
                e = ev[i]
                if e.type == _EV_PHONEME:
                    raw = bytes(e.id.string).split(b"\0", 1)[0]
                    events.append((int(e.sample), raw.decode("utf-8", "replace")))
                i += 1
            return 0

        cb = _CALLBACK(callback)
        data = text.encode("utf-8") + b"\0"
        with _LOCK:
            lib = _lib()
            if lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {name!r}")
            lib.espeak_SetParameter(_P_RATE, int(rate) if rate else 175, 0)
            lib.espeak_SetParameter(_P_PITCH, int(pitch) if pitch is not None else 50, 0)
            lib.espeak_SetParameter(_P_RANGE, int(pitch_range) if pitch_range is not None else 50, 0)
            lib.espeak_SetParameter(_P_WORDGAP, int(word_gap) if word_gap else 0, 0)
            lib.espeak_SetParameter(_P_VOLUME, 100, 0)
            lib.espeak_SetSynthCallback(cb)
            # espeak-ng's noise sources: its own generator and (klatt) libc rand()
            lib.espeak_ng_SetRandSeed(int(seed))
            _libc().srand(int(seed))
            buf = ctypes.create_string_buffer(data)
            err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed ({err})")
        pcm = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
        return Speech(pcm=pcm, sample_rate=self.sample_rate,
                      phonemes=_timed(events, len(pcm), self.sample_rate),
                      text=text, language=language, voice=name)


def _timed(events: list[tuple[int, str]], n_samples: int, sr: int) -> list[TimedPhoneme]:
    """Phoneme start events -> intervals. A phoneme lasts until the next event; pauses become
    ``sil``; time before the first phoneme and after the last is silence too."""
    out: list[TimedPhoneme] = []
    # language-switch markers such as "(en)" are not phonemes: the phoneme before them goes on
    events = sorted((e for e in events if not is_marker(e[1])), key=lambda e: e[0])
    for i, (start, ph) in enumerate(events):
        end = events[i + 1][0] if i + 1 < len(events) else n_samples
        start = min(max(start, 0), n_samples)
        end = min(max(end, start), n_samples)
        if end <= start:
            continue
        vis = "sil" if ph in PAUSE_PHONEMES else _viseme(ph)
        out.append(TimedPhoneme(ph, start / sr, end / sr, vis))
    return out


def _viseme(ph: str) -> str:
    """Strict map; a phoneme outside the tables (a language we have not mapped) is logged, and
    falls back to the map of its leading character, never silently."""
    try:
        return espeak_to_viseme(ph)
    except KeyError:
        base = ph.lstrip("',%=")
        for cut in range(len(base) - 1, 0, -1):
            try:
                vis = espeak_to_viseme(base[:cut])
            except KeyError:
                continue
            log.warning("espeak_phoneme_unmapped", phoneme=ph, fallback=vis)
            return vis
        log.warning("espeak_phoneme_unmapped", phoneme=ph, fallback="sil")
        return "sil"

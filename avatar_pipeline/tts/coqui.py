"""Users' own Coqui TTS (``coqui-tts``, the maintained fork of ``TTS``, MPL-2.0) VITS checkpoints,
with every phoneme's exact timing. Needs the ``coqui`` extra; no Coqui weights ship anywhere.

Loading is Coqui's own: ``load_config`` on the checkpoint's ``config.json``,
``Vits.init_from_config`` and ``load_checkpoint`` on the ``.pth`` (CUDA when torch has it).
Phoneme checkpoints only (``use_phonemes``: Coqui's VITS voices are trained on espeak IPA): the
phonemes come from our espeak-ng front end (no espeak-ng program needed) (``EspeakEngine.phonemize_clauses``), written as
Coqui's espeak phonemizer writes them (words joined by spaces, the clause's punctuation after
it), then encoded with the checkpoint's own vocabulary, blanks and BOS/EOS as its tokenizer
would (``TTSTokenizer.text_to_ids``); a symbol the vocabulary lacks is left out.

Timing: ``Vits.inference`` returns ``durations`` (each input id's length in spectrogram frames,
``audio.hop_length`` samples each), and the decoder renders exactly that many, so
``sum(durations) * hop_length`` is the audio's length; ``aligned.timed_phonemes`` turns the spans
into phonemes and visemes, as for Piper (both are VITS).
"""

from __future__ import annotations

import threading
import unicodedata
from pathlib import Path

import numpy as np

from avatar_pipeline.tts.aligned import Token, refine_pauses, timed_phonemes
from avatar_pipeline.tts.espeak import Clause, EspeakEngine
from avatar_pipeline.tts.types import Speech
from avatar_pipeline.visemes.maps import ipa_symbol_viseme
from config.logs import get_logger

log = get_logger(__name__)

_STRESS = "ˈˌ"
_MODIFIERS = set("ːˑʰʲ˞\u0303\u0329\u032f\u032a\u0327ˤ")
# our language codes -> the espeak-ng voice whose phonemes the checkpoint gets
ESPEAK_VOICES = {"en": "en-us", "en-us": "en-us", "en-gb": "en-gb", "es": "es", "zh": "cmn",
                 "cmn": "cmn", "fa": "fa", "fr": "fr-fr", "de": "de", "it": "it", "pt": "pt-br"}


def clause_tokens(clauses: list[Clause], vocab: dict[str, int], punctuations: str,
                  language: str) -> list[Token]:
    """The checkpoint's symbols for ``clauses``, with roles for timing (no blanks yet)."""
    lang = language.split("-")[0]
    out: list[Token] = []
    for ci, cl in enumerate(clauses):
        if ci and " " in vocab:
            out.append(Token(" ", "gap"))
        for wi, word in enumerate(cl.words):
            if wi and " " in vocab:
                out.append(Token(" ", "gap"))
            for unit in word:
                for c in unicodedata.normalize("NFC", unit):
                    if c.isdigit() or c not in vocab:
                        continue
                    if c in _STRESS:
                        out.append(Token(c, "next"))
                    elif c in _MODIFIERS:
                        out.append(Token(c, "prev"))
                    else:
                        out.append(Token(c, "phone", ipa_symbol_viseme(c, lang)))
        if cl.punctuation and cl.punctuation in punctuations and cl.punctuation in vocab:
            out.append(Token(cl.punctuation, "pause"))
    return out


class CoquiEngine:
    """``synthesize(text, language) -> Speech`` for one Coqui VITS checkpoint."""

    def __init__(self, model_path: str | Path, config_path: str | Path,
                 device: str | None = None) -> None:
        try:
            import torch
            from TTS.config import load_config
            from TTS.tts.models.vits import Vits
        except ImportError as exc:
            raise RuntimeError("Coqui voices need the `coqui` extra (coqui-tts)") from exc
        config = load_config(str(config_path))
        if config.model != "vits":
            raise ValueError(f"{config_path}: a {config.model!r} checkpoint; only VITS gives "
                             "per-phoneme durations here")
        if not config.use_phonemes:
            raise ValueError(f"{config_path}: a character checkpoint (use_phonemes false); "
                             "visemes need a phoneme checkpoint")
        # We phonemize (above); Coqui's tokenizer would start its own espeak-ng subprocess
        # phonemizer, which needs the espeak-ng program. The vocabulary is the checkpoint's
        # ``characters`` either way.
        config.use_phonemes = False
        model = Vits(config)
        model.load_checkpoint(config, str(model_path), eval=True)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.torch = torch
        self.sample_rate = int(config.audio.sample_rate)
        self.hop = int(config.audio.hop_length)
        tok = model.tokenizer
        chars = tok.characters
        self.vocab: dict[str, int] = dict(chars._char_to_id)
        self.punctuations = chars.punctuations or ""
        self.blank = chars.blank if tok.add_blank else None
        self.bos_eos = (chars.bos, chars.eos) if tok.use_eos_bos else None
        self.espeak = EspeakEngine()
        self.name = Path(model_path).stem
        self._lock = threading.Lock()

    def tokens(self, text: str, language: str = "en") -> list[Token]:
        """The id sequence as tokens: symbols, a blank between each (``add_blank``) and around
        them, BOS/EOS when the checkpoint uses them."""
        voice = ESPEAK_VOICES.get(language.lower())
        if voice is None:
            raise ValueError(f"no espeak-ng phonemes for {language!r}")
        toks = clause_tokens(self.espeak.phonemize_clauses(text, voice, ipa=True), self.vocab,
                             self.punctuations, language)
        if not toks:
            raise ValueError("nothing to say")
        if self.blank is not None:
            blank = Token(self.blank, "gap")
            spaced = [blank]
            for t in toks:
                spaced += [t, blank]
            toks = spaced
        if self.bos_eos is not None:
            toks = [Token(self.bos_eos[0], "pause"), *toks, Token(self.bos_eos[1], "pause")]
        return toks

    def synthesize(self, text: str, language: str = "en", voice: str | None = None,
                   refine: bool = True, **_unused) -> Speech:
        toks = self.tokens(text, language)
        ids = self.torch.tensor([[self.vocab[t.symbol] for t in toks]], dtype=self.torch.long,
                                device=self.device)
        with self._lock, self.torch.inference_mode():
            out = self.model.inference(ids)
        audio = out["model_outputs"].reshape(-1).float().cpu().numpy()
        frames = np.rint(out["durations"].reshape(-1).float().cpu().numpy()).astype(np.int64)
        if int(frames.sum()) * self.hop != len(audio):
            raise RuntimeError(f"durations cover {int(frames.sum()) * self.hop} samples, "
                               f"audio has {len(audio)}")
        phs = timed_phonemes(toks, frames, self.hop, self.sample_rate)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        if refine:
            phs = refine_pauses(phs, pcm, self.sample_rate)
        return Speech(pcm=pcm, sample_rate=self.sample_rate, phonemes=phs, text=text,
                      language=language, voice=f"coqui/{self.name}")

"""Learner captions per language: word error rate (character error rate for Mandarin) of the
worker's speech-to-text on speech we can make here, with the language given, detected among the
deployment's lesson languages, or detected among all; tiny.en beside base for English.

**The speech is synthetic** (our lesson voices: Piper `joe` and Kokoro for English, Kokoro and
espeak-ng for Spanish and Mandarin, two espeak-ng voices for Persian, which no neural voice here
speaks), 20 classroom sentences per language (``benchmarks.lesson_sentences``), so these are
figures for clean, clearly articulated speech, not for learners' microphones.

    .venv/bin/python -m benchmarks.captions_wer

Writes benchmarks/results/captions_wer.json and .png, naming the machine.
"""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agent.lesson import resample  # noqa: E402
from avatar_pipeline.asr import RATE, transcribe_as  # noqa: E402
from avatar_pipeline.tts.voices import engine_for  # noqa: E402
from benchmarks.lesson_sentences import SENTENCES  # noqa: E402
from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from benchmarks.wer import error_rate  # noqa: E402
from config.logs import setup_logging  # noqa: E402

LESSON_LANGUAGES = ("en", "es", "zh", "fa")
SPEAKERS: dict[str, tuple[str, ...]] = {
    "en": ("joe", "kokoro-alpha"), "es": ("kokoro-alpha", "f3"), "zh": ("kokoro-alpha", "f3"),
    "fa": ("f3", "m3")}
# (label, model, language given?, languages detection chooses among)
SETUPS = (("base, language given", "base", True, ()),
          ("base, detected among en/es/zh/fa", "base", False, LESSON_LANGUAGES),
          ("base, detected among all", "base", False, ()),
          ("tiny.en", "tiny.en", True, ()))
WHISPER = {"en": "en", "es": "es", "zh": "zh", "fa": "fa"}


def speech(language: str) -> list[tuple[str, str, np.ndarray]]:
    """(voice, sentence, int16 16 kHz audio with 0.3 s of silence around it)."""
    out = []
    pad = np.zeros(int(0.3 * RATE), np.int16)
    for voice in SPEAKERS[language]:
        engine, arg, used = engine_for(voice, language)
        if used != voice:
            raise RuntimeError(f"{voice} did not load (got {used})")
        for text in tqdm(SENTENCES[language], desc=f"{language}/{voice} speech", leave=False):
            sp = engine.synthesize(text, language, arg)
            out.append((voice, text, np.concatenate(
                [pad, resample(sp.pcm, sp.sample_rate, RATE), pad])))
    return out


def main() -> None:
    setup_logging("warning", "console")
    rows = []
    for lang in LESSON_LANGUAGES:
        clips = speech(lang)
        for label, model, given, among in SETUPS:
            if model == "tiny.en" and lang != "en":
                continue
            errs = refs = right = 0
            secs, audio_s = [], []
            for _voice, text, pcm in tqdm(clips, desc=f"{lang}: {label}"):
                t0 = time.perf_counter()
                heard = transcribe_as(pcm, model, lang if given else None, among)
                secs.append(time.perf_counter() - t0)
                audio_s.append(len(pcm) / RATE)
                e, n = error_rate(text, heard.text, lang)
                errs, refs = errs + e, refs + n
                right += heard.language == WHISPER[lang]
            rows.append({"language": lang, "setup": label, "model": model,
                         "metric": "CER" if lang == "zh" else "WER",
                         "error_rate": round(errs / refs, 4), "utterances": len(clips),
                         "language_correct": round(right / len(clips), 3),
                         "rtf_median": round(float(np.median(np.array(secs) / audio_s)), 3),
                         "voices": list(SPEAKERS[lang])})
            print(rows[-1])
    payload = {"benchmark": "captions_wer", "machine": machine(), "rows": rows,
               "speech": "synthetic: our lesson voices (see SPEAKERS), 20 sentences/language",
               "asr": "faster-whisper int8, one CPU thread, beam 1"}
    write_json("captions_wer", payload)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    setups = [s[0] for s in SETUPS]
    width = 0.8 / len(setups)
    for k, label in enumerate(setups):
        xs, ys, det = [], [], []
        for i, lang in enumerate(LESSON_LANGUAGES):
            r = next((r for r in rows if r["language"] == lang and r["setup"] == label), None)
            if r:
                xs.append(i + k * width)
                ys.append(100 * r["error_rate"])
                det.append(100 * r["language_correct"])
        ax[0].bar(xs, ys, width, label=label)
        if "detected" in label:
            ax[1].bar(xs, det, width, label=label)
    for a in ax:
        a.set_xticks(np.arange(len(LESSON_LANGUAGES)) + 0.3, LESSON_LANGUAGES)
        a.legend(fontsize=8)
    ax[0].set(title="error rate (%) — WER; CER for zh", ylim=(0, None))
    ax[1].set(title="language detected correctly (%)", ylim=(0, 105))
    fig.suptitle(f"Learner captions on synthetic speech — {machine_label(payload['machine'])}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "captions_wer.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

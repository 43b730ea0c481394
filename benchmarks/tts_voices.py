"""Lesson voices: how soon the first audio is ready, how fast each voice speaks, how well a
listener understands it, per language. One run; Piper and Kokoro on two onnxruntime threads (as
the worker runs them), espeak-ng on one.

- **First audio**: a /say request's text cut into sentences (``tts.voices.sentences``): the time
  to synthesise the first and resample it to the engine's 48 kHz, which is when the worker
  queues it (the rest is made while it plays). p50 / p95 over the sentences below.
- **Real-time factor**: synthesis time / audio duration, whole sentences.
- **Intelligibility**: Whisper base's word error rate (character error rate for Mandarin;
  ``avatar_pipeline.asr``, the language given) on 20 classroom sentences per language
  (``benchmarks.lesson_sentences``), against their text: an intelligibility proxy, not a
  listening test; compare voices, not absolutes.
- Coqui voices are users' own checkpoints (none ships), so none is measured here.

    .venv/bin/python -m benchmarks.tts_voices

Writes benchmarks/results/tts_voices.json and .png and a short sample per voice
(benchmarks/results/tts_<voice>.wav), naming the machine.
"""

from __future__ import annotations

import time
import wave

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agent.lesson import resample  # noqa: E402
from avatar_pipeline.asr import RATE, transcribe_as  # noqa: E402
from avatar_pipeline.tts.voices import engine_for, sentences  # noqa: E402
from benchmarks.lesson_sentences import SENTENCES  # noqa: E402
from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from benchmarks.wer import error_rate  # noqa: E402
from config.logs import setup_logging  # noqa: E402
from config.voices import VOICES as VOICE_SPECS  # noqa: E402

# (voice, language): the English default, Kokoro in three languages, espeak-ng in four
VOICES: tuple[tuple[str, str], ...] = (
    ("joe", "en"), ("kokoro-alpha", "en"), ("kokoro-alpha", "es"), ("kokoro-alpha", "zh"),
    ("f3", "en"), ("f3", "es"), ("f3", "zh"), ("f3", "fa"))


def measure(voice: str, lang: str) -> dict:
    engine, arg, used = engine_for(voice, lang)
    if used != voice:
        raise RuntimeError(f"{voice} did not load (got {used})")
    engine.synthesize(SENTENCES[lang][0], lang, arg)  # warm-up
    first, rtf, errs, refs = [], [], 0, 0
    sample = None
    for text in tqdm(SENTENCES[lang], desc=f"{voice}/{lang}"):
        t0 = time.perf_counter()
        sp = engine.synthesize(sentences(text, language=lang)[0], lang, arg)
        resample(sp.pcm, sp.sample_rate, 48000)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        whole = engine.synthesize(text, lang, arg)
        rtf.append((time.perf_counter() - t0) / whole.duration_s)
        heard = transcribe_as(resample(whole.pcm, whole.sample_rate, RATE), "base", lang)
        e, n = error_rate(text, heard.text, lang)
        errs, refs = errs + e, refs + n
        if sample is None:
            sample = whole
    name = voice if lang == "en" else f"{voice}_{lang}"
    with wave.open(str(RESULTS / f"tts_{name}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample.sample_rate)
        w.writeframes(sample.pcm.tobytes())
    return {"voice": voice, "language": lang, "engine": VOICE_SPECS[voice].engine,
            "first_audio_ms_p50": round(1000 * float(np.median(first)), 1),
            "first_audio_ms_p95": round(1000 * float(np.percentile(first, 95)), 1),
            "rtf_median": round(float(np.median(rtf)), 3),
            "error_rate": round(errs / refs, 3), "metric": "CER" if lang == "zh" else "WER",
            "sentences": len(SENTENCES[lang]), "sample": f"tts_{name}.wav"}


def main() -> None:
    setup_logging("warning", "console")
    rows = [measure(v, lang) for v, lang in VOICES]
    for r in rows:
        print(r)
    payload = {"benchmark": "tts_voices", "machine": machine(), "rows": rows,
               "asr": "faster-whisper Whisper base (int8, CPU), language given"}
    write_json("tts_voices", payload)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    names = [f"{r['voice']}\n{r['language']}" for r in rows]
    ax[0].bar(names, [r["first_audio_ms_p50"] for r in rows], label="p50")
    ax[0].scatter(names, [r["first_audio_ms_p95"] for r in rows], c="k", label="p95", zorder=3)
    ax[0].axhline(150, ls="--", c="gray", lw=1)
    ax[0].set(title="first audio ready (ms)")
    ax[0].legend()
    ax[1].bar(names, [r["rtf_median"] for r in rows])
    ax[1].set(title="real-time factor")
    ax[2].bar(names, [100 * r["error_rate"] for r in rows])
    ax[2].set(title="Whisper base error rate (%; CER for zh)")
    for a in ax:
        a.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Lesson voices — {machine_label(payload['machine'])}", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "tts_voices.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

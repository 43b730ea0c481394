"""Lesson voices: how soon the first audio is ready, how fast each voice speaks, how well a
listener understands it. One run; Piper on two onnxruntime threads (as the worker runs it),
espeak-ng on one.

- **First audio**: a /say request's text cut into sentences (``tts.voices.sentences``): the time
  to synthesise the first and resample it to the engine's 48 kHz, which is when the worker
  queues it (the rest is made while it plays). p50 / p95 over the sentences below.
- **Real-time factor**: synthesis time / audio duration, whole sentences.
- **Intelligibility**: Whisper's word error rate (our tiny.en, ``avatar_pipeline.asr``) on the
  20 English sentences, against their text (synthetic speech, so an intelligibility proxy, not
  a listening test; tiny.en is a weak listener, so compare voices, not absolutes).

    .venv/bin/python -m benchmarks.tts_voices

Writes benchmarks/results/tts_voices.json and .png and a short sample per voice
(benchmarks/results/tts_<voice>.wav), naming the machine.
"""

from __future__ import annotations

import re
import time
import wave

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agent.lesson import resample  # noqa: E402
from avatar_pipeline.asr import RATE, transcribe  # noqa: E402
from avatar_pipeline.tts.voices import engine_for, sentences  # noqa: E402
from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from config.logs import setup_logging  # noqa: E402

TEXTS = [
    "Good morning, class. Today we will read a short story about a fox.",
    "Please open your books to page twelve and read the first paragraph.",
    "What did the little fox find at the edge of the forest?",
    "Very good! Now tell me the same thing in your own words.",
    "The weather was cold, so the children wore warm coats and hats.",
    "Can you spell the word beautiful for me, slowly?",
    "My brother plays the piano every evening after dinner.",
    "We went to the market and bought apples, bread and cheese.",
    "Please repeat after me: I would like a cup of tea.",
    "The train to the city leaves at half past seven.",
    "Which of these animals can swim: a cat, a fish or a bird?",
    "Listen carefully and raise your hand when you hear a question.",
    "She was reading a book when the telephone rang.",
    "Let us count together from one to ten.",
    "Yesterday it rained all day, but today the sun is shining.",
    "Do you prefer summer or winter, and why?",
    "The teacher wrote three new words on the board.",
    "Excellent work! You have made great progress this week.",
    "Where is the nearest library, please?",
    "Thank you for your answer. Let us move on to the next exercise.",
]
VOICES = ("joe", "f3")  # the English default (Piper) and an espeak-ng variant


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("twelve", "12")) if text else []


def wer(ref: str, hyp: str) -> float:
    r, h = _words(ref), _words(hyp)
    d = np.arange(len(h) + 1, dtype=np.int64)
    for i in range(1, len(r) + 1):
        prev, d[0] = d.copy(), i
        for j in range(1, len(h) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return float(d[len(h)]) / max(len(r), 1)


def measure(voice: str) -> dict:
    engine, arg, used = engine_for(voice, "en")
    engine.synthesize("Warm up.", "en", arg)
    first, rtf, errors, errs_words = [], [], [], 0
    sample = None
    for text in tqdm(TEXTS, desc=voice):
        t0 = time.perf_counter()
        sp = engine.synthesize(sentences(text)[0], "en", arg)
        resample(sp.pcm, sp.sample_rate, 48000)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        whole = engine.synthesize(text, "en", arg)
        rtf.append((time.perf_counter() - t0) / whole.duration_s)
        heard = transcribe(resample(whole.pcm, whole.sample_rate, RATE))
        errors.append(wer(text, heard))
        errs_words += len(_words(text))
        if sample is None:
            sample = whole
    with wave.open(str(RESULTS / f"tts_{voice}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample.sample_rate)
        w.writeframes(sample.pcm.tobytes())
    return {"voice": voice, "engine_voice": used,
            "first_audio_ms_p50": round(1000 * float(np.median(first)), 1),
            "first_audio_ms_p95": round(1000 * float(np.percentile(first, 95)), 1),
            "rtf_median": round(float(np.median(rtf)), 3),
            "wer_mean": round(float(np.mean(errors)), 3), "sentences": len(TEXTS),
            "words": errs_words}


def main() -> None:
    setup_logging("warning", "console")
    rows = [measure(v) for v in VOICES]
    for r in rows:
        print(r)
    payload = {"benchmark": "tts_voices", "machine": machine(), "rows": rows,
               "asr": "faster-whisper tiny.en (int8, CPU)"}
    write_json("tts_voices", payload)
    fig, ax = plt.subplots(1, 3, figsize=(12, 4))
    names = [r["voice"] for r in rows]
    ax[0].bar(names, [r["first_audio_ms_p50"] for r in rows], label="p50")
    ax[0].scatter(names, [r["first_audio_ms_p95"] for r in rows], c="k", label="p95", zorder=3)
    ax[0].axhline(150, ls="--", c="gray", lw=1)
    ax[0].set(title="first audio ready (ms)")
    ax[0].legend()
    ax[1].bar(names, [r["rtf_median"] for r in rows])
    ax[1].set(title="real-time factor")
    ax[2].bar(names, [100 * r["wer_mean"] for r in rows])
    ax[2].set(title="word error rate, Whisper tiny.en (%)")
    fig.suptitle(f"Lesson voices — {machine_label(payload['machine'])}", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "tts_voices.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

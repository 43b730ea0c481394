"""The lesson caption's pacing: words shown as the TTS speaks them."""

from agent.lesson import caption_plan
from avatar_pipeline.tts import default_engine


def test_caption_words_follow_the_speech():
    text = "Good morning! Today we read a short story about a red boat."
    speech = default_engine().synthesize(text, "en")
    plan = caption_plan(text, speech)
    assert "".join(chunk for _, chunk in plan) == text
    times = [t for t, _ in plan]
    assert times == sorted(times) and len(set(times)) == len(times)
    sounding = [p for p in speech.phonemes if p.viseme != "sil"]
    assert abs(times[0] - sounding[0].start_s) < 1e-6, "the first word with the first sound"
    # the last word shows while it is spoken: after most of the speech, before its end
    assert 0.75 * speech.duration_s < times[-1] < sounding[-1].end_s
    assert caption_plan("   ", speech) == []

"""Festival's English voices as viseme training speech: every phone timed, labels on the audio,
and a corpus split made from them."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_pipeline.tts import festival
from avatar_pipeline.visemes import data as vdata
from tests.pipeline.speech_checks import check_timing, sibilant_offsets_ms

SIBILANT_TEXTS = ["This sister sells seven fresh sausages.", "Sam sees a small mouse in the house.",
                  "Is it his bus or successes so far?"]


@pytest.mark.parametrize("voice", sorted(festival.VOICES))
def test_every_voice_speaks_timed_phones_that_follow_its_audio(voice):
    speech = festival.synthesize_batch(
        [festival.FestivalRequest("Bob bought a map and some bread.", voice),
         *(festival.FestivalRequest(t, voice) for t in SIBILANT_TEXTS)])
    sp = speech[0]
    assert sp.voice == voice and sp.sample_rate in (16000, 32000)
    check_timing(sp, 12)
    assert [p.phoneme for p in sp.phonemes if p.viseme == "PP"] == list("bbbmpmb")
    offsets = [o for s in speech[1:] for o in sibilant_offsets_ms(s, vdata.FESTIVAL_LAG_S[voice])]
    assert len(offsets) >= 8
    assert abs(np.median(offsets)) <= 15, np.median(offsets)


def test_a_batch_keeps_its_order_and_stretch_slows_the_voice():
    texts = ["One.", "Two birds flew over the quiet river.", "Three."]
    normal = festival.synthesize_batch([festival.FestivalRequest(t, "kal") for t in texts])
    assert [s.text for s in normal] == texts
    assert normal[1].duration_s > 2 * max(normal[0].duration_s, normal[2].duration_s) * 0.9
    slow = festival.synthesize_batch([festival.FestivalRequest(texts[1], "kal", stretch=1.4)])
    assert slow[0].duration_s > normal[1].duration_s * 1.25


def test_bad_requests_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown festival voice"):
        festival.synthesize_batch([festival.FestivalRequest("hi", "nobody")])
    # quotes and backslashes in the text cannot break out of festival's string
    sp = festival.synthesize_batch([festival.FestivalRequest('say "hi" \\ (quit)', "ked")])[0]
    assert sp.duration_s > 0.5


def test_the_festival_split_is_deterministic_and_labelled_on_the_augmented_audio():
    def take(n):
        items = []
        for item in vdata.iter_festival("festival_val", 30, seed=3, progress=False, batch=8):
            items.append(item)
            if len(items) == n:
                break
        return items

    a, b = take(3), take(3)
    for (sa, xa, la), (sb, xb, lb) in zip(a, b, strict=True):
        assert sa["text"] == sb["text"] and sa["voice"] == sb["voice"]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la, lb)
        # labels cover the (resampled, maybe tempo-changed) audio at 100 frames a second
        assert abs(len(la) - len(xa) / vdata.SAMPLE_RATE * vdata.FRAME_RATE) <= 1
        assert (la != 0).mean() > 0.4  # mostly speech

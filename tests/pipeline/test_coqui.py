"""Users' Coqui VITS checkpoints as lesson voices (avatar_pipeline.tts.coqui): the real loading
code (coqui-tts's load_config / Vits.init_from_config / load_checkpoint) on a tiny checkpoint our
code builds with coqui-tts itself (random weights: it says noise, with real VITS durations; no
Coqui weights ship anywhere), declared in the settings as a deployment would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar_pipeline.tts import voices as registry
from avatar_pipeline.tts.coqui import CoquiEngine
from avatar_pipeline.tts.coqui_testmodel import build
from config import voices as catalog
from config.fleet import SayRequest
from config.settings import SettingsError, load_settings


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build(tmp_path_factory.mktemp("coqui"))


@pytest.fixture
def restore_catalog():
    yield
    catalog.install()


def test_a_checkpoint_speaks_with_its_own_durations(checkpoint):
    model, config = checkpoint
    engine = CoquiEngine(model, config)
    sp = engine.synthesize("Good morning, class. Open your books.", "en")
    assert sp.sample_rate == 16000 and len(sp.pcm) % 256 == 0
    # every phoneme of the text, in order, exactly tiling the audio
    phones = [p for p in sp.phonemes if p.viseme != "sil"]
    assert [p.phoneme for p in phones][:4] == ["ɡ", "ʊ", "d", "m"]
    assert any(p.viseme == "PP" for p in phones), "the m of morning and the b of books"
    edges = [(a.end_s, b.start_s) for a, b in zip(sp.phonemes, sp.phonemes[1:], strict=False)]
    assert all(abs(x - y) < 1e-9 for x, y in edges)
    assert sp.phonemes[0].start_s == 0 and abs(sp.phonemes[-1].end_s - sp.duration_s) < 1e-6
    track = sp.viseme_track(25)
    assert len(track) == int(np.ceil(round(sp.duration_s * 25, 6)))
    assert np.allclose(track.sum(1), 1.0, atol=1e-5)
    # the ids the model got are the checkpoint's own symbols with blanks between
    toks = engine.tokens("Hi.", "en")
    assert [t.symbol for t in toks[::2]] == ["<BLNK>"] * ((len(toks) + 1) // 2)


def test_what_the_engine_cannot_use_is_refused_with_a_reason(checkpoint, tmp_path):
    model, config = checkpoint
    cfg = json.loads(config.read_text())
    cfg["use_phonemes"] = False
    chars = tmp_path / "chars.json"
    chars.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="character checkpoint"):
        CoquiEngine(model, chars)
    cfg["use_phonemes"], cfg["model"] = True, "glow_tts"
    glow = tmp_path / "glow.json"
    glow.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="only VITS"):
        CoquiEngine(model, glow)


def test_a_deployment_declares_its_checkpoint_and_lessons_speak_with_it(
        checkpoint, restore_catalog, monkeypatch):
    model, config = checkpoint
    voice = {"id": "anna", "model_path": str(model), "config_path": str(config),
             "languages": ["en", "en-us"], "description": "our teacher Anna"}
    monkeypatch.setenv("AVATAR_VOICES__COQUI", json.dumps([voice]))
    monkeypatch.setenv("AVATAR_VOICES__DEFAULTS", '{"en": "anna"}')
    load_settings()
    assert catalog.VOICES["anna"].engine == "coqui" and catalog.DEFAULT_VOICES["en"] == "anna"
    assert SayRequest(text="Hello", language="en", voice="anna").voice == "anna"
    with pytest.raises(ValueError, match="does not speak 'es'"):
        SayRequest(text="Hola", language="es", voice="anna")
    monkeypatch.setattr(registry, "_ENGINES", {})
    monkeypatch.setattr(registry, "_FAILED", set())
    engine, _arg, used = registry.engine_for(None, "en")  # the deployment's English default
    assert used == "anna" and isinstance(engine, CoquiEngine)
    assert engine.synthesize("Hello there.", "en").sample_rate == 16000


def test_bad_voice_settings_stop_the_process_naming_the_setting(
        checkpoint, restore_catalog, monkeypatch):
    model, config = checkpoint
    monkeypatch.setenv("AVATAR_VOICES__DEFAULTS", '{"fa": "joe"}')
    with pytest.raises(SettingsError, match="AVATAR_VOICES: .*'joe' does not speak it"):
        load_settings()
    monkeypatch.setenv("AVATAR_VOICES__DEFAULTS", "{}")
    monkeypatch.setenv("AVATAR_VOICES__COQUI", json.dumps([{
        "id": "joe", "model_path": str(model), "config_path": str(config),
        "languages": ["en"]}]))
    with pytest.raises(SettingsError, match="'joe' is taken"):
        load_settings()
    monkeypatch.setenv("AVATAR_VOICES__COQUI", json.dumps([{
        "id": "anna", "model_path": str(model), "config_path": str(config),
        "languages": ["ja"]}]))
    with pytest.raises(SettingsError, match=r"\['ja'\] are not among"):
        load_settings()
    assert "anna" not in catalog.VOICES, "a refused configuration installs nothing"

from __future__ import annotations

import pytest

from config import SettingsError, load_settings
from config.regions import load_regions


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    import os

    for k in list(os.environ):
        if k.startswith("AVATAR_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_come_from_the_yaml():
    s = load_settings()
    assert s.livekit.url == "ws://127.0.0.1:7880"
    assert s.livekit.http_url == "http://127.0.0.1:7880"
    assert (s.video.width, s.video.height, s.video.fps) == (512, 512, 25)
    assert s.worker.capacity == 8
    assert s.regions().default == "local"


def test_environment_overrides_nested_fields(monkeypatch):
    monkeypatch.setenv("AVATAR_VIDEO__FPS", "30")
    monkeypatch.setenv("AVATAR_WORKER__CAPACITY", "32")
    monkeypatch.setenv("AVATAR_LIVEKIT__API_SECRET", "s3cret")
    monkeypatch.setenv("AVATAR_LOG_LEVEL", "DEBUG")
    s = load_settings()
    assert s.video.fps == 30 and s.worker.capacity == 32 and s.log_level == "debug"
    assert s.livekit.api_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_dotenv_file_is_read_and_env_wins(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("AVATAR_REGION=eu-west\nAVATAR_WORKER__CAPACITY=5\n")
    monkeypatch.setenv("AVATAR_WORKER__CAPACITY", "6")
    s = load_settings()
    assert s.region == "eu-west"
    assert s.worker.capacity == 6


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("AVATAR_VIDEO__FPS", "24", "25 or 30"),
        ("AVATAR_WORKER__CAPACITY", "0", "greater than or equal to 1"),
        ("AVATAR_REDIS_URL", "http://x", "redis://"),
        ("AVATAR_LIVEKIT__URL", "livekit.example", "ws://"),
        ("AVATAR_LOG_LEVEL", "loud", "debug"),
        ("AVATAR_VIDEO__WIDTH", "513", "multiple of 2"),
        ("AVATAR_WORKER__NEURAL_MODEL", "/nonexistent/w2l.onnx", "no such file"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_is_allowed(monkeypatch, var, value, says):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert var in str(err.value)
    assert says in str(err.value)
    assert value in str(err.value)


def test_unknown_setting_is_refused():
    with pytest.raises(SettingsError, match="AVATAR_COLOUR"):
        load_settings(colour="red")


def test_regions_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "regions.yaml"
    bad.write_text("default: mars\nregions:\n  - {name: eu, livekit_url: ws://x, api_key: k,"
                   " api_secret: s, lat: 50, lon: 8}\n")
    with pytest.raises(SettingsError, match="default region 'mars' is not one of"):
        load_regions(bad)
    bad.write_text("default: eu\nregions:\n  - {name: eu, livekit_url: ws://x, api_key: k,"
                   " api_secret: s, lat: 95, lon: 8}\n")
    with pytest.raises(SettingsError, match=r"regions\.0\.lat"):
        load_regions(bad)
    with pytest.raises(SettingsError, match="cannot read"):
        load_regions(tmp_path / "missing.yaml")


def test_regions_nearest_and_priority(tmp_path):
    f = tmp_path / "regions.yaml"
    f.write_text(
        "default: eu\nregions:\n"
        "  - {name: eu, livekit_url: ws://eu, api_key: k, api_secret: s, lat: 50.1, lon: 8.7, priority: 1}\n"
        "  - {name: us, livekit_url: ws://us, api_key: k, api_secret: s, lat: 39.0, lon: -77.5, priority: 0}\n"
        "  - {name: ap, livekit_url: ws://ap, api_key: k, api_secret: s, lat: 1.35, lon: 103.8, priority: 2}\n"
    )
    regions = load_regions(f)
    assert regions.nearest(48.85, 2.35).name == "eu"       # Paris
    assert regions.nearest(40.7, -74.0).name == "us"       # New York
    assert regions.nearest(35.7, 139.7).name == "ap"       # Tokyo
    assert [r.name for r in regions.by_priority()] == ["us", "eu", "ap"]
    assert 5000 < regions.get("eu").distance_km(40.7, -74.0) < 7000


def test_caption_languages_are_ours_and_fit_the_model(monkeypatch):
    monkeypatch.setenv("AVATAR_WORKER__CAPTIONS_LANGUAGES", '["es", "xx"]')
    with pytest.raises(SettingsError, match=r"AVATAR_WORKER__CAPTIONS_LANGUAGES: \['xx'\] not"):
        load_settings()
    monkeypatch.setenv("AVATAR_WORKER__CAPTIONS_LANGUAGES", '["en", "es"]')
    monkeypatch.setenv("AVATAR_WORKER__CAPTIONS_MODEL", "tiny.en")
    with pytest.raises(SettingsError, match="AVATAR_WORKER: .*tiny.en hears English only"):
        load_settings()
    monkeypatch.setenv("AVATAR_WORKER__CAPTIONS_LANGUAGES", '["en"]')
    assert load_settings().worker.captions_languages == ["en"]


def test_the_workers_redis_timeout_leaves_a_heartbeat_room_in_its_ttl(monkeypatch):
    # default: two 1.5 s tries + a 1 s interval fit the 4 s ttl; a shorter ttl, shorter tries
    s = load_settings()
    assert (s.worker.redis_timeout_s, s.worker.heartbeat_ttl_s) == (1.5, 4.0)
    monkeypatch.setenv("AVATAR_WORKER__HEARTBEAT_TTL_S", "2")
    assert load_settings().worker.redis_timeout_s == 0.5
    monkeypatch.delenv("AVATAR_WORKER__HEARTBEAT_TTL_S")
    monkeypatch.setenv("AVATAR_WORKER__REDIS_TIMEOUT_S", "2")
    with pytest.raises(SettingsError, match=r"AVATAR_WORKER: .*redis_timeout_s \(2.0\).*"
                                            r"heartbeat_ttl_s \(4.0\)"):
        load_settings()
    monkeypatch.setenv("AVATAR_WORKER__HEARTBEAT_TTL_S", "6")
    assert load_settings().worker.redis_timeout_s == 2.0

"""The learner token: livekit-api's AccessToken, scoped to one room, the microphone and no data."""

from __future__ import annotations

import jwt
import pytest
from livekit import api
from pydantic import SecretStr

from config.regions import Region
from router.livekit import LiveKitClients


def test_learner_token_is_scoped_and_livekit_accepts_it():
    region = Region(name="local", livekit_url="ws://x", api_key="devkey",
                    api_secret=SecretStr("secret"), lat=0, lon=0)
    tok = LiveKitClients([region], 1.0).learner_token("local", "l1", "u1", "Ada", 900)
    claims = api.TokenVerifier("devkey", "secret").verify(tok)
    assert claims.identity == "u1" and claims.name == "Ada"
    v = claims.video
    assert v.room == "lesson-l1" and v.room_join and v.can_subscribe and v.can_publish
    assert v.can_publish_sources == ["microphone"]
    assert v.can_publish_data is False
    assert not (v.room_admin or v.room_create or v.room_list or v.agent or v.recorder)
    raw = jwt.decode(tok, "secret", algorithms=["HS256"])
    assert raw["exp"] - raw["nbf"] == 900 and raw["iss"] == "devkey"
    # signed with this region's secret only
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier("devkey", "other").verify(tok)

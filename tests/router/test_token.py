"""The learner token the router signs itself has exactly livekit-api's AccessToken claims."""

from __future__ import annotations

from datetime import timedelta

import jwt
from livekit import api
from pydantic import SecretStr

from config.regions import Region
from router.livekit import LiveKitClients


def test_token_claims_match_livekit_api_access_token():
    region = Region(name="local", livekit_url="ws://x", api_key="devkey",
                    api_secret=SecretStr("secret"), lat=0, lon=0)
    ours = LiveKitClients([region], 1.0).learner_token("local", "l1", "u1", "Ada", 900)
    grants = api.VideoGrants(room_join=True, room="lesson-l1", can_publish=True,
                             can_publish_sources=["microphone"], can_subscribe=True,
                             can_publish_data=True)
    theirs = (api.AccessToken("devkey", "secret").with_identity("u1").with_name("Ada")
              .with_ttl(timedelta(seconds=900)).with_grants(grants).to_jwt())
    a = jwt.decode(ours, "secret", algorithms=["HS256"])
    b = jwt.decode(theirs, "secret", algorithms=["HS256"])
    assert abs(a.pop("nbf") - b.pop("nbf")) <= 1 and abs(a.pop("exp") - b.pop("exp")) <= 1
    assert a == b
    assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(theirs)
    # livekit's own verifier accepts it
    claims = api.TokenVerifier("devkey", "secret").verify(ours)
    assert claims.identity == "u1" and claims.video.room == "lesson-l1"

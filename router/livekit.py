"""LiveKit server API per region: explicit agent dispatch, data to the avatar, removing it,
learner tokens."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
from livekit import api

from config.fleet import (
    SAY_TOPIC,
    DispatchMetadata,
    SayRequest,
    agent_name,
    avatar_identity,
    room_name,
)
from config.regions import Region


class LiveKitClients:
    """One ``LiveKitAPI`` per region, made on first use inside the running event loop."""

    def __init__(self, regions: list[Region], timeout_s: float) -> None:
        self.regions = {r.name: r for r in regions}
        self.timeout_s = timeout_s
        self._apis: dict[str, api.LiveKitAPI] = {}

    def api(self, region: str) -> api.LiveKitAPI:
        lk = self._apis.get(region)
        if lk is None:
            r = self.regions[region]
            lk = api.LiveKitAPI(r.livekit_url, r.api_key, r.api_secret.get_secret_value(),
                                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                failover=False)
            self._apis[region] = lk
        return lk

    async def aclose(self) -> None:
        for lk in self._apis.values():
            await lk.aclose()
        self._apis.clear()

    async def dispatch(self, region: str, meta: DispatchMetadata) -> str:
        """Dispatch worker ``meta.worker_id``'s agent into the lesson's room; the dispatch id."""
        d = await self.api(region).agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name(meta.worker_id),
                                           room=room_name(meta.lesson_id),
                                           metadata=meta.to_json()))
        return d.id

    async def say(self, region: str, lesson_id: str, req: SayRequest) -> None:
        await self.api(region).room.send_data(api.SendDataRequest(
            room=room_name(lesson_id), data=req.model_dump_json(exclude_none=True).encode(),
            kind=api.DataPacket.Kind.RELIABLE, topic=SAY_TOPIC,
            destination_identities=[avatar_identity(lesson_id)]))

    async def remove_avatar(self, region: str, lesson_id: str) -> bool:
        """Remove the avatar participant; False when it (or the room) was not there."""
        try:
            await self.api(region).room.remove_participant(api.RoomParticipantIdentity(
                room=room_name(lesson_id), identity=avatar_identity(lesson_id)))
            return True
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND or exc.status == 404:
                return False
            raise

    def learner_token(self, region: str, lesson_id: str, identity: str, name: str,
                      ttl_s: int) -> str:
        """The learner's token (livekit-api's ``AccessToken``): join this room only, publish
        the microphone only, subscribe; no data packets (nothing a learner sends may steer
        the tutor), no admin; ``ttl_s`` long."""
        r = self.regions[region]
        grants = api.VideoGrants(room_join=True, room=room_name(lesson_id), can_publish=True,
                                 can_subscribe=True, can_publish_data=False,
                                 can_publish_sources=["microphone"])
        return (api.AccessToken(r.api_key, r.api_secret.get_secret_value())
                .with_identity(identity).with_name(name).with_grants(grants)
                .with_ttl(timedelta(seconds=ttl_s)).to_jwt())



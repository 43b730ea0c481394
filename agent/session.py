"""One avatar session: the job that runs in a room for one lesson.

Joins as the avatar participant (identity, name and attributes were set when the worker
accepted the dispatch) and stays until the lesson ends (room closed, or the avatar removed).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext

from config.fleet import DispatchMetadata
from config.logs import get_logger

if TYPE_CHECKING:
    from agent.worker import AvatarServer


async def run_session(server: AvatarServer, ctx: JobContext) -> None:
    meta = DispatchMetadata.from_json(ctx.job.metadata)
    log = get_logger("agent.session", lesson_id=meta.lesson_id, fence=meta.fence,
                     worker_id=server.worker_id, session_id=ctx.job.id, room=ctx.job.room.name)
    ended = asyncio.Event()

    async def _on_shutdown(reason: str = "") -> None:
        server.session_ended(meta.lesson_id, meta.fence)
        log.info("session.ended", reason=reason)
        ended.set()

    ctx.add_shutdown_callback(_on_shutdown)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    log.info("session.started", identity=ctx.room.local_participant.identity)

    @ctx.room.on("disconnected")
    def _gone(*_args) -> None:
        ctx.shutdown("room disconnected")

    if ctx.room.connection_state != rtc.ConnectionState.CONN_CONNECTED:
        ctx.shutdown("not connected")

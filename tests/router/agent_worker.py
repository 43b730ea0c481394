# ruff: noqa: ASYNC110, ASYNC230, ASYNC240  (polling files written by a subprocess is the point)
"""A minimal livekit-agents worker for the dispatch test (the avatar worker is another issue):
it registers under ``avatar-<id>``, checks the dispatch's fence in Redis with the shared
``FleetMember.fence_is_current`` (as the real worker's request_fnc will), joins as the avatar
identity, and writes every job request it sees to a JSON-lines file.

    python tests/router/agent_worker.py WORKER_ID LIVEKIT_URL KEY SECRET REDIS_URL OUT.jsonl
"""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aioredis
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest, WorkerOptions

from config.fleet import DispatchMetadata, FleetMember, agent_name, avatar_identity


def _no_load(*_args) -> float:
    # the default load is CPU use, which on a busy 2-core test box marks the worker full
    return 0.0


def main() -> None:
    worker_id, url, key, secret, redis_url, out = sys.argv[1:7]

    async def request_fnc(req: JobRequest) -> None:
        meta = DispatchMetadata.from_json(req.job.metadata)
        r = aioredis.Redis.from_url(redis_url)
        member = FleetMember(r, worker_id, meta.region or "local", 1)
        current = await member.fence_is_current(meta)
        await r.aclose()
        with open(out, "a") as f:
            f.write(json.dumps({"agent_name": req.agent_name, "room": req.room.name,
                                "metadata": json.loads(req.job.metadata),
                                "fence_current": current}) + "\n")
        if current:
            await req.accept(identity=avatar_identity(meta.lesson_id), name="avatar")
        else:
            await req.reject()

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await asyncio.sleep(3600)

    opts = WorkerOptions(entrypoint_fnc=entrypoint, request_fnc=request_fnc,
                         agent_name=agent_name(worker_id), ws_url=url, api_key=key,
                         api_secret=secret, job_executor_type=JobExecutorType.THREAD,
                         num_idle_processes=0, port=0, load_fnc=_no_load)
    server = AgentServer.from_server_options(opts)

    async def run() -> None:
        task = asyncio.create_task(server.run(devmode=True))
        while server.id == "unregistered":
            await asyncio.sleep(0.05)
        with open(out + ".ready", "w") as f:
            f.write(server.id)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()

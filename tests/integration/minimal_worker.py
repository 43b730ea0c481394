"""A minimal livekit-agents worker registered under one agent name (explicit dispatch only).

Run as a subprocess by tests: ``python minimal_worker.py AGENT_NAME OUT_FILE`` with LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET set. Each job it receives appends one JSON line to
OUT_FILE (agent name, room, metadata), joins the room and stays until the room empties.
"""

from __future__ import annotations

import asyncio
import json
import sys

from livekit import agents
from livekit.agents import AgentServer, JobContext, JobExecutorType


def main(agent_name: str, out_file: str) -> None:
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=0,
        port=0,
        host="127.0.0.1",
    )

    @server.rtc_session(agent_name=agent_name)
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect(auto_subscribe=agents.AutoSubscribe.SUBSCRIBE_NONE)
        with open(out_file, "a") as f:
            f.write(json.dumps({"agent_name": agent_name, "room": ctx.room.name,
                                "metadata": ctx.job.metadata,
                                "identity": ctx.room.local_participant.identity}) + "\n")

    @server.on("worker_registered")
    def _registered(worker_id: str, server_info) -> None:
        with open(out_file + ".ready", "w") as f:
            f.write(worker_id)

    asyncio.run(server.run(devmode=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

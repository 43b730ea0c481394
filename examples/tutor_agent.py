"""A voice agent with our avatar: the two FleetAvatar lines in a livekit-agents worker.

    set -a; . .cache/stack.env; set +a        # after `make run`: LiveKit and router addresses
    .venv/bin/python examples/tutor_agent.py dev

Dispatch it into a lesson room (the agent name is ``tutor-voice``), e.g. with ``lk dispatch``
or LiveKit's AgentDispatchService, and open the lesson's learner page: the tutor greets you.
Give the session your STT and LLM (``AgentSession(stt=..., llm=..., tts=...)``) to converse;
``EspeakTTS`` speaks without a cloud TTS, any livekit-agents TTS works the same.
"""

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from fleet_avatar import EspeakTTS, FleetAvatar

server = AgentServer()


@server.rtc_session(agent_name="tutor-voice")
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession(tts=EspeakTTS())
    # the avatar: FLEET_AVATAR_ROUTER_URL and FLEET_AVATAR_API_KEY, or pass them here
    await FleetAvatar().start(session, room=ctx.room)
    await session.start(Agent(instructions="You are a patient language tutor."), room=ctx.room)
    await session.say("Hello! I am your tutor today. Shall we begin?")


if __name__ == "__main__":
    cli.run_app(server)

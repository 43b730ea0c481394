"""A voice agent with our avatar: the two FleetAvatar lines in a livekit-agents worker.

    set -a; . .cache/stack.env; set +a        # after `make run`: LiveKit and router addresses
    .venv/bin/python examples/tutor_agent.py dev

`make run` starts this agent and dispatches it into the demo lesson (agent name
``tutor-voice``): open the printed page, and the tutor greets you and answers what you say.
It hears the learner with our CPU speech-to-text (``WhisperSTT``, Silero VAD) and speaks with
espeak-ng (``EspeakTTS``); its "LLM" is ``ScriptedLLM``, a scripted stand-in (a fake: no LLM runs
here) that answers by keywords. Give the session your own STT, LLM and TTS to converse for real;
any livekit-agents plugins work the same.
"""

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import silero

from fleet_avatar import EspeakTTS, FleetAvatar, ScriptedLLM, WhisperSTT

# loopback unless told otherwise; port 0 picks a free one for the health endpoint
server = AgentServer(host=os.environ.get("TUTOR_AGENT_HOST", "127.0.0.1"),
                     port=int(os.environ.get("TUTOR_AGENT_PORT", "0")))


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()
    proc.userdata["stt"] = WhisperSTT()


server.setup_fnc = prewarm


@server.rtc_session(agent_name="tutor-voice")
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession(stt=ctx.proc.userdata["stt"], vad=ctx.proc.userdata["vad"],
                           llm=ScriptedLLM(), tts=EspeakTTS())
    # the avatar: FLEET_AVATAR_ROUTER_URL and FLEET_AVATAR_API_KEY, or pass them here
    await FleetAvatar().start(session, room=ctx.room)
    await session.start(Agent(instructions="You are a patient language tutor."), room=ctx.room)
    await ctx.wait_for_participant()  # greet the learner when they arrive
    await session.say("Hello! I am your tutor today. How are you?")


if __name__ == "__main__":
    cli.run_app(server)

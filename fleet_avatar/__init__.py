"""Our talking tutor for any livekit-agents voice agent, the way avatar plugins are added::

    from fleet_avatar import FleetAvatar

    avatar = FleetAvatar(router_url="https://tutor.example.com", api_key="...")
    await avatar.start(session, room=ctx.room)   # before session.start(...)

:class:`FleetAvatar` asks our router for the lesson's avatar (the voice agent's identity goes
with it), waits until the avatar is in the room, and points the session's audio output at it
(livekit-agents' ``DataStreamAudioOutput``: the stock avatar protocol). :class:`EspeakTTS` is our
espeak-ng engine as a livekit-agents TTS, for agents that run without a cloud TTS;
:class:`WhisperSTT` our CPU speech-to-text as an STT; :class:`ScriptedLLM` a scripted stand-in
for an LLM (a fake, for demos and tests).
"""

from fleet_avatar.avatar import FleetAvatar, FleetAvatarError, lesson_of_room
from fleet_avatar.scripted import ScriptedLLM
from fleet_avatar.stt import WhisperSTT
from fleet_avatar.tts import EspeakTTS

__all__ = ["EspeakTTS", "FleetAvatar", "FleetAvatarError", "ScriptedLLM", "WhisperSTT",
           "lesson_of_room"]

"""Our espeak-ng engine (avatar_pipeline.tts) as a livekit-agents TTS: a voice agent that needs
no cloud TTS, in any language espeak-ng speaks. Non-streaming: the session's sentence tokenizer
feeds it one sentence at a time (livekit-agents wraps it in a StreamAdapter)."""

from __future__ import annotations

import asyncio
import uuid

from livekit.agents import APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from avatar_pipeline.tts import default_engine


class EspeakTTS(tts.TTS):
    def __init__(self, *, language: str = "en", voice: str | None = None) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=default_engine().sample_rate, num_channels=1)
        self.language, self.voice = language, voice

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "avatar-fleet"

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return _Chunked(tts=self, input_text=text, conn_options=conn_options)


class _Chunked(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        t: EspeakTTS = self._tts  # type: ignore[assignment]
        speech = await asyncio.to_thread(default_engine().synthesize, self._input_text,
                                         t.language, t.voice)
        output_emitter.initialize(request_id=uuid.uuid4().hex, sample_rate=speech.sample_rate,
                                  num_channels=1, mime_type="audio/pcm")
        output_emitter.push(speech.pcm.tobytes())
        output_emitter.flush()

"""Our CPU speech-to-text (faster-whisper tiny.en, :mod:`avatar_pipeline.asr`) as a livekit-agents
STT, so a voice agent hears the learner with nothing in the cloud. Non-streaming: give the
session a VAD (e.g. ``silero.VAD.load()``) and livekit-agents cuts utterances with it."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from avatar_pipeline.asr import RATE, transcribe, whisper_model


class WhisperSTT(stt.STT):
    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        whisper_model()  # load now, not at the learner's first word

    @property
    def model(self) -> str:
        return "faster-whisper-tiny.en"

    @property
    def provider(self) -> str:
        return "avatar-fleet"

    async def _recognize_impl(self, buffer: AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        frame = utils.merge_frames(buffer)
        pcm = np.frombuffer(frame.data, np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate != RATE:
            r = rtc.AudioResampler(frame.sample_rate, RATE, num_channels=1)
            parts = r.push(rtc.AudioFrame(pcm.tobytes(), frame.sample_rate, 1, len(pcm)))
            parts += r.flush()
            pcm = (np.concatenate([np.frombuffer(p.data, np.int16) for p in parts])
                   if parts else np.zeros(0, np.int16))
        text = await asyncio.to_thread(transcribe, pcm) if len(pcm) else ""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT, request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language="en", text=text,
                                         end_time=len(pcm) / RATE)])

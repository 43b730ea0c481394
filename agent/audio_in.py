"""Speech in from a voice agent: our own avatar side of the stock avatar protocol.

livekit-agents' ``DataStreamAudioOutput`` (the voice agent's side) sends each utterance as one
byte stream on ``lk.audio_stream`` with ``sample_rate`` / ``num_channels`` attributes, calls
``lk.clear_buffer`` to interrupt, and waits for ``lk.playback_started`` /
``lk.playback_finished`` back. :class:`VoiceAgentReceiver` is the avatar's side, written for a
worker that serves many lessons at once and must outlive any one bad sender:

* **listening from the first moment**: the stream handler is registered when the session starts,
  not once the voice agent is found, so a voice agent that joins after the avatar and speaks at
  once is heard; one that leaves and comes back (same identity) is heard again.
* **per lesson**: ``lk.clear_buffer`` is registered on this room's own participant and answered
  only for this lesson's voice agent (the stock receiver keeps one handler per caller identity
  per process, so two lessons whose voice agents share an identity cut each other off).
* **validated**: a stream whose format is missing or absurd (``sample_rate`` outside the rates
  audio is sent at, ``num_channels`` not 1 or 2) is refused alone, with a log line and its
  ``playback_finished`` (position 0, interrupted), and the next one plays.
* **bounded**: a voice agent can queue at most ``max_queued_s`` of audio ahead of playback (the
  rest of that stream is dropped), and at most ``max_pending_streams`` streams waiting.
* **no held-back tail**: each chunk becomes one frame as it arrives; a stream that stalls for
  ``stall_s`` (or whose sender left) ends there, and the runner reports what really played.

Every refusal or cut is counted in ``avatar_audio_streams_total{result}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents.utils import aio
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd

from config.fleet import (
    ATTR_PUBLISH_ON_BEHALF,
    AUDIO_STREAM_TOPIC,
    RPC_CLEAR_BUFFER,
    RPC_PLAYBACK_FINISHED,
    RPC_PLAYBACK_STARTED,
)
from config.logs import get_logger
from config.metrics import counter

log = get_logger("agent.audio_in")

# The rates speech is sent at (telephony to studio); anything else is a broken header.
SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
CHANNELS = frozenset({1, 2})

STREAMS = counter("avatar_audio_streams_total",
                  "Voice-agent audio streams by how they ended", ("result",))


class BadStream(ValueError):
    """A stream whose attributes do not describe audio we can play."""


def stream_format(attributes: dict[str, str]) -> tuple[int, int]:
    """``(sample_rate, num_channels)`` from a stream's attributes, or :class:`BadStream`."""
    try:
        rate, channels = int(attributes["sample_rate"]), int(attributes["num_channels"])
    except KeyError as exc:
        raise BadStream(f"attribute {exc.args[0]} missing") from None
    except ValueError:
        raise BadStream("sample_rate and num_channels must be integers") from None
    if rate not in SAMPLE_RATES:
        raise BadStream(f"sample_rate {rate} not one of {sorted(SAMPLE_RATES)}")
    if channels not in CHANNELS:
        raise BadStream(f"num_channels {channels} not 1 or 2")
    return rate, channels


@dataclass
class _Stream:
    reader: rtc.ByteStreamReader
    sender: str
    sender_life: int  # how many times the sender had left before: one that came back is new

    @property
    def id(self) -> str:
        return self.reader.info.stream_id


class VoiceAgentReceiver(AudioReceiver):
    def __init__(self, room: rtc.Room, sender_identity: str | None = None, *,
                 stall_s: float = 8.0, max_queued_s: float = 60.0,
                 max_pending_streams: int = 4, rpc_retries: int = 3,
                 lesson_id: str = "",
                 position_of: Callable[[float], float] | None = None) -> None:
        """``position_of``: the runner's playback position (audio played) as a position in
        the sender's audio (the engine stretches time to follow the network)."""
        super().__init__()
        self._position_of = position_of
        self._room = room
        self._sender = sender_identity  # None: whichever agent participant speaks to us
        self._stall_s = stall_s
        self._max_queued_s = max_queued_s
        self._max_pending = max_pending_streams
        self._rpc_retries = rpc_retries
        self._log = log.bind(lesson_id=lesson_id)
        self._ch = aio.Chan[rtc.AudioFrame | AudioSegmentEnd]()
        self._pending: deque[_Stream] = deque()
        self._wake = asyncio.Event()
        self._current: _Stream | None = None
        self._cut: asyncio.Event = asyncio.Event()  # end the current stream now
        self._cut_reason = ""
        self._speaker: tuple[str, int] | None = None  # (identity, life) the notices go to
        self._departures: dict[str, int] = {}  # identity -> times it left the room
        self._runner_has_audio = False  # an AudioFrame went to the runner since the last end
        self._notices = aio.Chan[tuple[tuple[str, int], str, str]]()
        self._tasks: list[asyncio.Task] = []
        self._speaking_for: str | None = None  # publish_on_behalf set (or being set) for

    # -- AudioReceiver -------------------------------------------------------------------------
    async def start(self) -> None:
        self._room.register_byte_stream_handler(AUDIO_STREAM_TOPIC, self._on_stream)
        self._room.local_participant.register_rpc_method(RPC_CLEAR_BUFFER, self._on_clear)
        self._room.on("participant_disconnected", self._on_left)
        self._tasks = [asyncio.create_task(self._read_streams(), name="voice-agent-audio"),
                       asyncio.create_task(self._send_notices(), name="voice-agent-notices")]

    def notify_playback_started(self) -> None:
        if self._speaker:
            self._notices.send_nowait((self._speaker, RPC_PLAYBACK_STARTED, ""))

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        if self._position_of is not None:
            playback_position = self._position_of(playback_position)
        if self._speaker:
            self._notices.send_nowait((self._speaker, RPC_PLAYBACK_FINISHED, json.dumps(
                {"playback_position": playback_position, "interrupted": interrupted})))

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        return self

    async def __anext__(self) -> rtc.AudioFrame | AudioSegmentEnd:
        try:
            item = await self._ch.recv()
        except aio.ChanClosed:
            raise StopAsyncIteration from None
        self._runner_has_audio = isinstance(item, rtc.AudioFrame)
        return item

    async def aclose(self) -> None:
        self._room.off("participant_disconnected", self._on_left)
        with contextlib.suppress(Exception):
            self._room.unregister_byte_stream_handler(AUDIO_STREAM_TOPIC)
        with contextlib.suppress(Exception):
            self._room.local_participant.unregister_rpc_method(RPC_CLEAR_BUFFER)
        self._ch.close()
        self._notices.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for s in self._pending:
            s.reader.close()
        self._pending.clear()

    # -- who may speak -------------------------------------------------------------------------
    def _is_sender(self, identity: str) -> bool:
        if self._sender is not None:
            return identity == self._sender
        p = self._room.remote_participants.get(identity)
        return p is not None and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT

    # -- room callbacks (event loop) -------------------------------------------------------------
    def _on_stream(self, reader: rtc.ByteStreamReader, identity: str, *,
                   waited: bool = False) -> None:
        if self._sender is None and not waited and not self._is_sender(identity):
            # a stream can arrive before the room has told us who its sender is (its kind)
            self._tasks.append(asyncio.create_task(self._when_known(reader, identity)))
            return
        if not self._is_sender(identity):
            STREAMS.labels("not_sender").inc()
            self._log.warning("audio_in.stream_ignored", reason="not this lesson's voice agent",
                              sender=identity, stream_id=reader.info.stream_id)
            reader.close()
            self._refuse(identity)
            return
        stream = _Stream(reader, identity, self._departures.get(identity, 0))
        if self._current is not None and self._current.sender == identity:
            # the sender never overlaps streams: a new one means the open one's end was lost
            self._end_current("superseded")
        if len(self._pending) >= self._max_pending:
            STREAMS.labels("too_many").inc()
            self._log.warning("audio_in.stream_refused", reason="too many streams waiting",
                              sender=identity, stream_id=stream.id, waiting=len(self._pending))
            reader.close()
            self._refuse(identity)
            return
        self._pending.append(stream)
        self._wake.set()
        self._speak_for(identity)

    async def _when_known(self, reader: rtc.ByteStreamReader, identity: str,
                          limit_s: float = 5.0) -> None:
        """Wait (up to ``limit_s``) until the room knows the stream's sender as an agent: a
        stream can arrive before the room has told us who sent it, or what kind it is. A
        learner never becomes an agent, so its stream is still refused, only later."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while (not self._is_sender(identity)  # noqa: ASYNC110 (no event says a kind arrived)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.05)
        self._on_stream(reader, identity, waited=True)

    def _refuse(self, identity: str) -> None:
        """A refused stream's sender hears that nothing played, so it does not wait forever
        (the stock sender waits for playback_finished before its next speech)."""
        life = self._departures.get(identity, 0)
        self._notices.send_nowait(((identity, life), RPC_PLAYBACK_FINISHED, json.dumps(
            {"playback_position": 0.0, "interrupted": True})))

    def _speak_for(self, identity: str) -> None:
        """The avatar publishes on behalf of the voice agent that speaks through it (clients
        show them as one): set when the dispatch did not name it (the agent asked for the
        avatar after the learner's join, e.g. through FleetAvatar)."""
        me = self._room.local_participant
        if me.attributes.get(ATTR_PUBLISH_ON_BEHALF) == identity or self._speaking_for == identity:
            return
        self._speaking_for = identity
        self._log.info("audio_in.speaking_for", voice_agent=identity)
        self._tasks.append(asyncio.create_task(self._set_speaking_for(identity)))

    async def _set_speaking_for(self, identity: str, attempts: int = 5) -> None:
        """Set the attribute, retrying: a request lost or timed out under load would otherwise
        leave clients showing the avatar apart from its voice agent for the whole lesson."""
        me = self._room.local_participant
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.wait_for(me.set_attributes({ATTR_PUBLISH_ON_BEHALF: identity}), 5)
                return
            except Exception as exc:  # FFI error or timeout: try again shortly
                self._log.warning("audio_in.speaking_for_failed", voice_agent=identity,
                                  attempt=attempt, error=repr(exc))
                await asyncio.sleep(0.5 * attempt)
        self._speaking_for = None  # the next stream tries again

    def _on_clear(self, data: rtc.RpcInvocationData) -> str:
        if not self._is_sender(data.caller_identity):
            self._log.warning("audio_in.clear_refused", caller=data.caller_identity)
            return "reject"
        for s in self._pending:  # interrupted before they began: nothing of them plays
            s.reader.close()
            self._speaker = (s.sender, s.sender_life)
            self.notify_playback_finished(0.0, interrupted=True)
            STREAMS.labels("cleared").inc()
        self._pending.clear()
        if self._current is not None:
            self._end_current("cleared")
            if not self._runner_has_audio:
                # none of it reached the runner, which therefore reports nothing for it
                self.notify_playback_finished(0.0, interrupted=True)
        while not self._ch.empty():
            self._ch.recv_nowait()
        self._runner_has_audio = False
        self.emit("clear_buffer")
        return "ok"

    def _on_left(self, participant: rtc.RemoteParticipant) -> None:
        self._departures[participant.identity] = self._departures.get(participant.identity, 0) + 1
        for s in [s for s in self._pending if s.sender == participant.identity]:
            self._pending.remove(s)
            s.reader.close()
            STREAMS.labels("sender_left").inc()
        if self._current is not None and self._current.sender == participant.identity:
            self._end_current("sender_left")

    def _end_current(self, reason: str) -> None:
        self._cut_reason = reason
        self._cut.set()

    # -- reading ---------------------------------------------------------------------------------
    async def _read_streams(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            stream = self._pending.popleft()
            self._current, self._cut_reason = stream, ""
            self._cut.clear()
            try:
                await self._play(stream)
            except aio.ChanClosed:
                return
            except Exception:  # one stream's failure must never end the lesson's audio
                self._log.exception("audio_in.stream_failed", stream_id=stream.id)
                STREAMS.labels("failed").inc()
            finally:
                self._current = None
                stream.reader.close()

    async def _play(self, stream: _Stream) -> None:
        ids = {"stream_id": stream.id, "sender": stream.sender}
        self._speaker = (stream.sender, stream.sender_life)
        try:
            rate, channels = stream_format(dict(stream.reader.info.attributes or {}))
        except BadStream as exc:
            STREAMS.labels("bad_format").inc()
            self._log.warning("audio_in.stream_refused", reason=str(exc), **ids)
            self.notify_playback_finished(0.0, interrupted=True)
            return
        bytes_per_sample = 2 * channels
        rest = b""
        sent_s, first_at = 0.0, None
        result = "played"
        chunks = aiter(stream.reader)
        cut = asyncio.ensure_future(self._cut.wait())
        longest_gap_s = 0.0  # the longest wait for a chunk after the first: a network hiccup
        try:
            while True:
                nxt = asyncio.ensure_future(anext(chunks))
                t_wait = time.monotonic()
                done, _ = await asyncio.wait({nxt, cut}, timeout=self._stall_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if first_at is not None:
                    longest_gap_s = max(longest_gap_s, time.monotonic() - t_wait)
                if self._cut.is_set() or nxt not in done:
                    # a cut wins over a chunk that arrived with it: nothing read after a clear
                    # may reach the runner, whose queue the clear has just emptied
                    nxt.cancel()
                    result = self._cut_reason if self._cut.is_set() else "stalled"
                    break
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    break
                except rtc.StreamError as exc:
                    result = "aborted"
                    self._log.warning("audio_in.stream_aborted", error=str(exc), **ids)
                    break
                data = rest + chunk
                usable = len(data) - len(data) % bytes_per_sample
                rest = data[usable:]
                if not usable:
                    continue
                n = usable // bytes_per_sample
                now = time.monotonic()
                first_at = first_at or now
                if sent_s - (now - first_at) > self._max_queued_s:
                    result = "truncated"
                    break
                self._ch.send_nowait(rtc.AudioFrame(data[:usable], rate, channels, n))
                sent_s += n / rate
        finally:
            cut.cancel()
        STREAMS.labels(result).inc()
        if result == "cleared":  # the runner reports the interruption
            return
        if result != "played":
            log_fn = self._log.info if result == "sender_left" else self._log.warning
            log_fn("audio_in.stream_ended_early", reason=result, sent_s=round(sent_s, 2),
                   longest_gap_s=round(longest_gap_s, 2), max_queued_s=self._max_queued_s,
                   stall_s=self._stall_s, **ids)
        elif longest_gap_s > 1.0:  # played whole, but the network held it up this long
            self._log.info("audio_in.stream_held_up", longest_gap_s=round(longest_gap_s, 2),
                           sent_s=round(sent_s, 2), **ids)
        if sent_s > 0:
            self._ch.send_nowait(AudioSegmentEnd())  # the runner reports what played
        else:
            self.notify_playback_finished(0.0, interrupted=result != "played")

    # -- notices back to the voice agent ---------------------------------------------------------
    async def _send_notices(self) -> None:
        async for (dest, life), method, payload in self._notices:
            for attempt in range(self._rpc_retries):
                if self._departures.get(dest, 0) != life:
                    # it left (and maybe came back as a new session that never sent this
                    # stream): a notice now would be counted against its new speech
                    self._log.info("audio_in.notice_dropped", method=method, destination=dest,
                                   reason="voice agent left")
                    break
                try:
                    await self._room.local_participant.perform_rpc(
                        destination_identity=dest, method=method, payload=payload,
                        response_timeout=3.0)
                    break
                except rtc.RpcError as exc:
                    if attempt == self._rpc_retries - 1 or \
                            exc.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD:
                        # a voice agent that left (or never listens) misses it; nothing waits
                        self._log.info("audio_in.notice_undelivered", method=method,
                                       destination=dest, error=exc.message)
                        break
                    await asyncio.sleep(0.1)

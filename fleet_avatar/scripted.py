"""A scripted stand-in for an LLM (a fake, named as such: no LLM runs on these machines). It
answers the last user message by the first rule whose keywords it contains, else with the
fallback, streamed a few words per chunk like a real LLM. The example agent, the demo in
``make run`` and the tests use it; give a real agent a real LLM instead."""

from __future__ import annotations

import asyncio
import re
import uuid

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

DEFAULT_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("hello", "hi", "morning", "afternoon", "evening"),
     "Hello! It is lovely to see you. What would you like to practise today?"),
    (("homework", "finished", "exercise"),
     "Well done for finishing your homework! Read me the first sentence, slowly and clearly."),
    (("coffee", "tea", "order", "cafe"),
     "Let's practise ordering in a cafe. Say: I would like a cup of coffee, please."),
    (("bye", "goodbye", "thanks", "thank"),
     "You are welcome! See you in our next lesson."),
)
FALLBACK = "I see. Could you say that again in a full sentence?"


class ScriptedLLM(llm.LLM):
    def __init__(self, rules=DEFAULT_RULES, fallback: str = FALLBACK,
                 words_per_chunk: int = 3) -> None:
        super().__init__()
        self.rules, self.fallback, self.words_per_chunk = rules, fallback, words_per_chunk
        self.heard: list[str] = []  # every user message answered, in order

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "avatar-fleet (fake)"

    def reply_to(self, text: str) -> str:
        words = set(re.findall(r"[a-z']+", text.lower()))
        for keywords, reply in self.rules:
            if words & set(keywords):
                return reply
        return self.fallback

    def chat(self, *, chat_ctx: llm.ChatContext, tools=None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
             parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN, tool_choice=NOT_GIVEN,
             extra_kwargs=NOT_GIVEN) -> llm.LLMStream:
        return _Stream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _Stream(llm.LLMStream):
    async def _run(self) -> None:
        scripted: ScriptedLLM = self._llm  # type: ignore[assignment]
        said = next((m.text_content or "" for m in reversed(self._chat_ctx.messages())
                     if m.role == "user"), "")
        scripted.heard.append(said)
        words = scripted.reply_to(said).split()
        request = uuid.uuid4().hex
        n = scripted.words_per_chunk
        for i in range(0, len(words), n):
            chunk = " ".join(words[i:i + n]) + (" " if i + n < len(words) else "")
            self._event_ch.send_nowait(llm.ChatChunk(
                id=request, delta=llm.ChoiceDelta(role="assistant", content=chunk)))
            await asyncio.sleep(0.02)

"""The development model: answers with the last user message, word by word.

It needs no account, so the whole product can be tried on a fresh machine. A token here is
a whitespace-separated word.
"""

import asyncio

from django.conf import settings

from completions.models import ECHO_DESCRIPTION, Model
from completions.providers.base import (
    BaseProvider,
    ChatResult,
    Delta,
    Usage,
    finish_reason_for,
    flatten_content,
)


class EchoProvider(BaseProvider):
    def _answer(self, request):
        last_user = next(
            (m for m in reversed(request.messages) if m["role"] == "user"), {"content": ""}
        )
        words = flatten_content(last_user.get("content")).split()
        if request.max_tokens is not None:
            words = words[: request.max_tokens]
        prompt_tokens = sum(
            len(flatten_content(m.get("content")).split()) for m in request.messages
        )
        return words, Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words))

    async def chat(self, request):
        words, usage = self._answer(request)
        return ChatResult(
            content=" ".join(words), usage=usage, finish_reason=finish_reason_for(request, usage)
        )

    async def stream_chat(self, request):
        words, usage = self._answer(request)
        for index, word in enumerate(words):
            if index:
                await asyncio.sleep(settings.ECHO_STREAM_DELAY)
            yield Delta(text=word if index == 0 else " " + word)
        yield Delta(finish_reason=finish_reason_for(request, usage), usage=usage)

    async def list_models(self):
        return [{"name": "echo", "task": Model.TEXT_GENERATION, "description": ECHO_DESCRIPTION}]

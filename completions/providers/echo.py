"""The development model: answers with the last user (or tool) message, word by word.

It needs no account, so the whole product can be tried on a fresh machine. A token here is
a whitespace-separated word. It plays every part a client may try:

- chat: the last user message; given tools (and a tool_choice other than "none") after a
  user message, a call of the first tool (or the one named) with {"text": that message};
  in JSON mode, the object {"echo": that message}
- legacy completions: the prompt
- embeddings: a vector of EMBEDDING_DIMENSIONS numbers made from each text's hash, the
  same text always giving the same vector
"""

import asyncio
import hashlib
import json
import math
import random

from django.conf import settings

from completions.models import ECHO_DESCRIPTION, Model
from completions.providers.base import BaseProvider
from completions.providers.content import flatten_content
from completions.providers.estimates import finish_reason_for
from completions.providers.tool_calls import deltas_of_tool_calls, new_tool_call_id
from completions.providers.types import ChatResult, Delta, EmbeddingResult, Usage

EMBEDDING_DIMENSIONS = 16


class EchoProvider(BaseProvider):
    embedding_batch_size = 2048

    def _answer(self, request):
        last = request.messages[-1] if request.messages else {"role": "user"}
        last_turn = next(
            (m for m in reversed(request.messages) if m["role"] in ("user", "tool")),
            {"content": ""},
        )
        text = flatten_content(last_turn.get("content"))
        prompt_tokens = sum(
            len(flatten_content(m.get("content")).split()) for m in request.messages
        )
        tool = _chosen_tool(request) if last["role"] == "user" else None
        if tool is not None:
            arguments = json.dumps({"text": text})
            call = {
                "id": new_tool_call_id(),
                "type": "function",
                "function": {"name": tool["function"]["name"], "arguments": arguments},
            }
            usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(arguments.split()))
            return [], [call], usage
        if request.response_format and request.response_format["type"] != "text":
            text = json.dumps({"echo": text})
        words = text.split()
        if request.max_tokens is not None:
            words = words[: request.max_tokens]
        return words, [], Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words))

    async def chat(self, request):
        words, calls, usage = self._answer(request)
        if calls:
            return ChatResult(
                content=None, usage=usage, finish_reason="tool_calls", tool_calls=calls
            )
        return ChatResult(
            content=" ".join(words), usage=usage, finish_reason=finish_reason_for(request, usage)
        )

    async def stream_chat(self, request):
        words, calls, usage = self._answer(request)
        if calls:
            yield Delta(tool_calls=deltas_of_tool_calls(calls))
            yield Delta(finish_reason="tool_calls", usage=usage)
            return
        async for delta in _words(words, request, usage):
            yield delta

    def _completion(self, request):
        words = request.prompt.split()
        prompt_tokens = len(words)
        if request.max_tokens is not None:
            words = words[: request.max_tokens]
        return words, Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words))

    async def complete(self, request):
        words, usage = self._completion(request)
        return ChatResult(
            content=" ".join(words), usage=usage, finish_reason=finish_reason_for(request, usage)
        )

    async def stream_complete(self, request):
        words, usage = self._completion(request)
        async for delta in _words(words, request, usage):
            yield delta

    async def embed(self, request):
        vectors = [_vector(text) for text in request.texts]
        tokens = sum(len(text.split()) for text in request.texts)
        return EmbeddingResult(vectors=vectors, usage=Usage(prompt_tokens=tokens))

    async def list_models(self):
        return [{"name": "echo", "task": Model.TEXT_GENERATION, "description": ECHO_DESCRIPTION}]


async def _words(words, request, usage):
    for index, word in enumerate(words):
        if index:
            await asyncio.sleep(settings.ECHO_STREAM_DELAY)
        yield Delta(text=word if index == 0 else " " + word)
    yield Delta(finish_reason=finish_reason_for(request, usage), usage=usage)


def _chosen_tool(request):
    if not request.tools or request.tool_choice == "none":
        return None
    if isinstance(request.tool_choice, dict):
        name = request.tool_choice["function"]["name"]
        return next((t for t in request.tools if t["function"]["name"] == name), None)
    return request.tools[0]


def _vector(text):
    """Return a unit vector seeded by the text's hash, stable across processes."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    generator = random.Random(seed)
    vector = [generator.gauss(0, 1) for _ in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]

"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp's server) by base URL.

    POST {base}/chat/completions   chat, streamed or not
    POST {base}/completions        legacy text completions, streamed or not
    POST {base}/embeddings         embeddings
    GET  {base}/models             the catalogue

Requests pass through under OpenAI's own names, with one addition: a request that names no
maximum is sent the one admission reserved (completions/providers/bounds.py), so that no
answer runs past it. Streams always ask for usage (`stream_options.include_usage`) so that
every stream is accounted for; the gateway shows the usage chunk to a client only if the
client asked for it. Where a server reports no usage at all, the counts are estimated and
marked so.

Cloudflare's newer models answer in these same shapes, so the readers at the bottom of
this module serve both providers.
"""

import json
from urllib.parse import urlsplit

from completions.providers.answers import embeddings_answer_limit
from completions.providers.base import BaseProvider
from completions.providers.bounds import bounded
from completions.providers.estimates import estimate_usage, finish_reason_for
from completions.providers.sse import iter_sse_data, parse_event
from completions.providers.tool_calls import ToolCallPieces, whole_tool_calls
from completions.providers.types import ChatResult, Delta, EmbeddingResult, Usage
from gateway.errors import UpstreamError

PASSED_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "user",
    # Not OpenAI's, but vLLM, llama.cpp and Ollama's OpenAI endpoints take it.
    "top_k",
)
CHAT_PARAMS = (*PASSED_PARAMS, "parallel_tool_calls", "reasoning_effort")
COMPLETION_PARAMS = (*PASSED_PARAMS, "suffix")
EMBEDDING_PARAMS = ("dimensions", "user")
STREAM_FIELDS = {"stream": True, "stream_options": {"include_usage": True}}
# OpenAI's own API and Azure OpenAI's take a chat's bound as `max_completion_tokens`:
# `max_tokens` is deprecated there and refused by the o-series and gpt-5 models ("Unsupported
# parameter: 'max_tokens' is not supported with this model"). Every other server is sent
# `max_tokens`, the one name vLLM, llama.cpp and Ollama all take (Ollama no other:
# ollama/ollama#7125). Legacy completions take only `max_tokens`, everywhere.
OPENAI_HOSTS = ("api.openai.com",)
AZURE_OPENAI_HOST_SUFFIX = ".openai.azure.com"
# The largest context window a Model row holds (a PositiveIntegerField), in tokens.
MAX_WINDOW = 2**31 - 1


class OpenAIProvider(BaseProvider):
    takes_stop = True
    takes_suffix = True
    takes_dimensions = True
    # OpenAI's own limit of inputs per embeddings request.
    embedding_batch_size = 2048

    def _url(self, path):
        return f"{self.row.get_base_url()}/{path}"

    def _headers(self):
        key = self.row.get_api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _takes_max_completion_tokens(self):
        host = urlsplit(self.row.get_base_url()).hostname or ""
        return host in OPENAI_HOSTS or host.endswith(AZURE_OPENAI_HOST_SUFFIX)

    def _chat_body(self, request, stream):
        body = {"model": request.model, "messages": request.messages}
        body.update({k: request.params[k] for k in CHAT_PARAMS if k in request.params})
        if "max_tokens" in body and self._takes_max_completion_tokens():
            body["max_completion_tokens"] = body.pop("max_tokens")
        for name in ("tools", "tool_choice", "response_format", "prompt_cache_key"):
            if getattr(request, name) is not None:
                body[name] = getattr(request, name)
        if stream:
            body.update(STREAM_FIELDS)
        return body

    def _completion_body(self, request, stream):
        body = {"model": request.model, "prompt": request.prompt}
        body.update({k: request.params[k] for k in COMPLETION_PARAMS if k in request.params})
        if stream:
            body.update(STREAM_FIELDS)
        return body

    async def chat(self, request):
        request = bounded(request)
        data = await self.request_json(
            "POST", self._url("chat/completions"), self._headers(), self._chat_body(request, False)
        )
        return chat_result_from_openai(data, request)

    def stream_chat(self, request):
        request = bounded(request)
        body = self._chat_body(request, True)
        return self._stream(self._url("chat/completions"), body, request, chat_event_deltas)

    async def complete(self, request):
        request = bounded(request)
        data = await self.request_json(
            "POST", self._url("completions"), self._headers(), self._completion_body(request, False)
        )
        return completion_result_from_openai(data, request)

    def stream_complete(self, request):
        request = bounded(request)
        body = self._completion_body(request, True)
        return self._stream(self._url("completions"), body, request, completion_event_deltas)

    async def _stream(self, url, body, request, read_event):
        async with self.open_stream(url, body, self._headers()) as response:
            async for delta in read_openai_stream(iter_sse_data(response), request, read_event):
                yield delta

    async def embed(self, request):
        body = {"model": request.model, "input": request.texts, "encoding_format": "float"}
        body.update({k: request.params[k] for k in EMBEDDING_PARAMS if k in request.params})
        data = await self.request_json(
            "POST",
            self._url("embeddings"),
            self._headers(),
            body,
            limit=embeddings_answer_limit(len(request.texts)),
        )
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(request.texts):
            raise UpstreamError("The provider answered with a different number of embeddings.")
        try:
            items = sorted(items, key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError):
            raise UpstreamError("The provider answered with malformed embeddings.") from None
        return EmbeddingResult(vectors=vectors, usage=Usage.reported(data.get("usage")))

    async def list_models(self):
        data = await self.request_json("GET", self._url("models"), self._headers())
        items = data.get("data") if isinstance(data, dict) else None
        # OpenAI's list says nothing of a model's task: an empty task keeps what an
        # operator set, and makes a new model a text-generation one.
        return [
            {
                "name": item["id"],
                "task": "",
                "description": "",
                "context_window": _context_window(item),
            }
            for item in items or []
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    def error_message(self, data):
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return data["error"].get("message")
        return None


def _context_window(item):
    """Return the window vLLM lists a model with (its ModelCard's `max_model_len`), else None.

    It bounds the max_tokens a chat is sent (completions/providers/bounds.py): vLLM
    refuses a request whose prompt and max_tokens together pass it. OpenAI and Ollama list
    none; llama.cpp lists the window a model was trained with (meta.n_ctx_train), not the
    one it serves, and answers past neither. A count the column cannot hold is no window.
    """
    window = item.get("max_model_len")
    if isinstance(window, int) and not isinstance(window, bool) and 0 < window <= MAX_WINDOW:
        return window
    return None


def chat_result_from_openai(data, request):
    """Read OpenAI's chat.completion object into a ChatResult."""
    choice = _first_choice(data)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamError("The provider answered without a message.")
    tool_calls = whole_tool_calls(message.get("tool_calls"))
    content = message.get("content")
    if isinstance(content, (dict, list)):
        # Workers AI may answer a json_schema request with the object itself ([cf-sdk]
        # tanstack-ai adapters/workers-ai.ts); OpenAI's content is its JSON text.
        content = json.dumps(content, ensure_ascii=False)
    if content is not None and not isinstance(content, str):
        raise UpstreamError("The provider answered with content that is not text.")
    if content is None and not tool_calls:
        content = ""
    usage = Usage.reported(data.get("usage")) or estimate_usage(request, content or "")
    finish_reason = choice.get("finish_reason") or (
        "tool_calls" if tool_calls else finish_reason_for(request, usage)
    )
    return ChatResult(
        content=content,
        usage=usage,
        finish_reason=finish_reason,
        tool_calls=tool_calls,
        reasoning=reasoning_of(message) or None,
    )


def reasoning_of(message):
    """Return the reasoning text of a message or delta: vLLM, Workers AI and DeepSeek call
    it `reasoning_content`, others (Ollama, OpenRouter, some Workers AI models: [cf-sdk]
    streaming.ts) `reasoning`."""
    for name in ("reasoning_content", "reasoning"):
        text = message.get(name)
        if isinstance(text, str) and text:
            return text
    return ""


def completion_result_from_openai(data, request):
    """Read OpenAI's text_completion object into a ChatResult."""
    choice = _first_choice(data)
    text = choice.get("text")
    if not isinstance(text, str):
        raise UpstreamError("The provider answered the completion without text.")
    usage = Usage.reported(data.get("usage")) or estimate_usage(request, text)
    return ChatResult(
        content=text,
        usage=usage,
        finish_reason=choice.get("finish_reason") or finish_reason_for(request, usage),
    )


def chat_event_deltas(event, pieces):
    """Return the Deltas and the finish reason of one chat.completion.chunk."""
    deltas = []
    finish_reason = None
    for choice in _choices(event):
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        reasoning = reasoning_of(delta)
        if reasoning:
            deltas.append(Delta(reasoning=reasoning))
        text = delta.get("content")
        if isinstance(text, str) and text:
            deltas.append(Delta(text=text))
        calls = pieces.feed(delta.get("tool_calls"))
        if calls:
            deltas.append(Delta(tool_calls=calls))
        finish_reason = choice.get("finish_reason") or finish_reason
    return deltas, finish_reason


def completion_event_deltas(event, pieces):
    """Return the Deltas and the finish reason of one streamed text_completion."""
    deltas = []
    finish_reason = None
    for choice in _choices(event):
        text = choice.get("text")
        if isinstance(text, str) and text:
            deltas.append(Delta(text=text))
        finish_reason = choice.get("finish_reason") or finish_reason
    return deltas, finish_reason


async def read_openai_stream(events, request, read_event):
    """Yield the Deltas of a stream of OpenAI chunks, the last with finish reason and usage."""
    usage = None
    finish_reason = None
    pieces = ToolCallPieces()
    text = []
    # Events that carried text: a token each, on Workers AI, which is a floor for the
    # estimate of a stream that reports no usage.
    text_events = 0
    async for data in events:
        event = parse_event(data)
        if not isinstance(event, dict):
            continue
        usage = Usage.reported(event.get("usage")) or usage
        deltas, reason = read_event(event, pieces)
        for delta in deltas:
            text.append(delta.reasoning + delta.text)
            text_events += bool(delta.reasoning or delta.text)
            yield delta
        finish_reason = reason or finish_reason
    if usage is None:
        usage = estimate_usage(request, "".join(text))
        usage.completion_tokens = max(usage.completion_tokens, text_events)
    if finish_reason is None:
        finish_reason = "tool_calls" if pieces.count else finish_reason_for(request, usage)
    yield Delta(finish_reason=finish_reason, usage=usage)


def _first_choice(data):
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamError("The provider answered without a choice.")
    return choices[0]


def _choices(event):
    choices = event.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []

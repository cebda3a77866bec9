"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp's server) by base URL."""

from completions.providers.base import (
    BaseProvider,
    ChatResult,
    Delta,
    Usage,
    finish_reason_for,
    iter_sse_data,
    parse_event,
)
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
)


class OpenAIProvider(BaseProvider):
    takes_stop = True

    def _headers(self):
        key = self.row.get_api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _body(self, request, stream):
        body = {"model": request.model, "messages": request.messages}
        body.update({k: request.params[k] for k in PASSED_PARAMS if k in request.params})
        if stream:
            # Usage is always asked for, so that every stream can be accounted for.
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def chat(self, request):
        url = f"{self.row.get_base_url()}/chat/completions"
        data = await self.request_json("POST", url, self._headers(), self._body(request, False))
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError("The provider answered without a choice.") from None
        usage = _usage(data.get("usage"))
        return ChatResult(
            content=content,
            usage=usage,
            finish_reason=choice.get("finish_reason") or finish_reason_for(request, usage),
        )

    async def stream_chat(self, request):
        url = f"{self.row.get_base_url()}/chat/completions"
        async with self.open_stream(url, self._body(request, True), self._headers()) as response:
            usage = Usage()
            finish_reason = None
            async for data in iter_sse_data(response):
                event = parse_event(data)
                if not isinstance(event, dict):
                    continue
                if event.get("usage"):
                    usage = _usage(event["usage"])
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield Delta(text=text)
                    finish_reason = choice.get("finish_reason") or finish_reason
            yield Delta(
                finish_reason=finish_reason or finish_reason_for(request, usage), usage=usage
            )

    async def list_models(self):
        data = await self.request_json("GET", f"{self.row.get_base_url()}/models", self._headers())
        items = data.get("data") if isinstance(data, dict) else None
        # OpenAI's list says nothing of a model's task: an empty task keeps what an
        # operator set, and makes a new model a text-generation one.
        return [
            {"name": item["id"], "task": "", "description": ""}
            for item in items or []
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    def error_message(self, data):
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return data["error"].get("message")
        return None


def _usage(raw):
    raw = raw if isinstance(raw, dict) else {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )

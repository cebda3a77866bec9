"""Cloudflare Workers AI over its REST API.

    POST {base}/accounts/{account}/ai/run/{model}     chat, streamed or not
    GET  {base}/accounts/{account}/ai/models/search   the catalogue, page by page

Answers come in the envelope {result, success, errors, messages}; streams are SSE events
`data: {"response": "..."}`, the last with `usage`, then `data: [DONE]`.
"""

from completions.providers.base import (
    BaseProvider,
    ChatResult,
    Delta,
    Usage,
    finish_reason_for,
    flatten_content,
    iter_sse_data,
    parse_event,
)
from gateway.errors import UpstreamError

# OpenAI parameters that Workers AI text generation takes under the same name.
PASSED_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)
CATALOGUE_PAGE_SIZE = 100


class CloudflareProvider(BaseProvider):
    def _url(self, path):
        return f"{self.row.get_base_url()}/accounts/{self.row.get_account_id()}/ai/{path}"

    def _headers(self):
        return {"Authorization": f"Bearer {self.row.get_api_key()}"}

    def _body(self, request, stream):
        # Workers AI text models take content as a string only.
        messages = [
            {"role": m["role"], "content": flatten_content(m.get("content"))}
            for m in request.messages
        ]
        body = {"messages": messages, "stream": stream}
        body.update({k: request.params[k] for k in PASSED_PARAMS if k in request.params})
        return body

    async def chat(self, request):
        data = await self.request_json(
            "POST", self._url(f"run/{request.model}"), self._headers(), self._body(request, False)
        )
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise UpstreamError("The provider answered without a result.")
        response = result.get("response")
        if response is None:
            response = ""
        elif not isinstance(response, str):
            raise UpstreamError("The provider answered with a response that is not text.")
        usage = _usage(result.get("usage"))
        return ChatResult(
            content=response, usage=usage, finish_reason=finish_reason_for(request, usage)
        )

    async def stream_chat(self, request):
        url = self._url(f"run/{request.model}")
        async with self.open_stream(url, self._body(request, True), self._headers()) as response:
            usage = Usage()
            async for data in iter_sse_data(response):
                event = parse_event(data)
                if not isinstance(event, dict):
                    continue
                if event.get("usage"):
                    usage = _usage(event["usage"])
                text = event.get("response")
                if isinstance(text, str) and text:
                    yield Delta(text=text)
            yield Delta(finish_reason=finish_reason_for(request, usage), usage=usage)

    async def list_models(self):
        models = []
        seen = 0
        page = 1
        while True:
            url = self._url(f"models/search?page={page}&per_page={CATALOGUE_PAGE_SIZE}")
            data = await self.request_json("GET", url, self._headers())
            results = data.get("result") if isinstance(data, dict) else None
            if not isinstance(results, list):
                raise UpstreamError("The provider answered the model search without a result.")
            models.extend(
                {
                    "name": item["name"],
                    "task": (item.get("task") or {}).get("name", ""),
                    "description": item.get("description") or "",
                }
                for item in results
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            )
            seen += len(results)
            info = data.get("result_info") or {}
            total = info.get("total_count")
            # The server may cap the page size below what was asked for.
            per_page = info.get("per_page") or CATALOGUE_PAGE_SIZE
            if len(results) < per_page or (total is not None and seen >= total):
                return models
            page += 1

    def error_message(self, data):
        if isinstance(data, dict):
            errors = data.get("errors") or []
            messages = [e.get("message", "") for e in errors if isinstance(e, dict)]
            if any(messages):
                return "; ".join(m for m in messages if m)
        return None


def _usage(raw):
    raw = raw if isinstance(raw, dict) else {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )

"""Cloudflare Workers AI over its REST API.

    POST {base}/accounts/{account}/ai/run/{model}     chat, completion, embeddings
    GET  {base}/accounts/{account}/ai/models/search   the catalogue, page by page

Answers come in the envelope {result, success, errors, messages}. Text models answer in
one of two shapes, told apart by `choices`:

    older  result {"response": "..." (a JSON object in JSON mode), "tool_calls":
           [{"name", "arguments": {...}}], "usage"}; streams of {"response": "..."}
           events, tool calls in "tool_calls", the last event carrying "usage"
    newer  result is OpenAI's chat.completion object; streams of OpenAI's
           chat.completion.chunk events ({"choices": [{"delta": ...}]})

Embedding models take {"text": [...]}, at most 100 texts a call, and answer
{"shape": [n, dim], "data": [[...], ...]}, without token counts.
"""

import json
from decimal import Decimal

from completions.providers import cloudflare_errors
from completions.providers.base import (
    BaseProvider,
    ChatResult,
    Delta,
    EmbeddingResult,
    Usage,
    deltas_of_tool_calls,
    estimate_usage,
    finish_reason_for,
    first_image_message,
    flatten_content,
    iter_sse_data,
    whole_tool_calls,
)
from completions.providers.openai import (
    chat_event_deltas,
    chat_result_from_openai,
    completion_event_deltas,
    completion_result_from_openai,
    read_openai_stream,
)
from gateway.errors import UpstreamError

# OpenAI parameters that Workers AI text generation takes under the same name; top_k is
# Workers AI's own, accepted by the gateway for it.
PASSED_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
)
CATALOGUE_PAGE_SIZE = 100


class CloudflareProvider(BaseProvider):
    # Workers AI's limit of texts in one embeddings call.
    embedding_batch_size = 100

    def _url(self, path):
        return f"{self.row.get_base_url()}/accounts/{self.row.get_account_id()}/ai/{path}"

    def _headers(self):
        return {"Authorization": f"Bearer {self.row.get_api_key()}"}

    def _chat_body(self, request, stream):
        # Image parts reach here only for a model marked as taking images; the rest of
        # Workers AI's text models take content as a string only.
        keep_parts = first_image_message(request.messages) is not None
        body = {
            "messages": [_message(m, keep_parts) for m in request.messages],
            "stream": stream,
        }
        body.update({k: request.params[k] for k in PASSED_PARAMS if k in request.params})
        body.update(_tools(request.tools, request.tool_choice))
        if request.response_format is not None:
            response_format = _response_format(request.response_format)
            if response_format is not None:
                body["response_format"] = response_format
        return body

    def _completion_body(self, request, stream):
        # Workers AI applies the model's chat template to a prompt, as OpenAI's instruct
        # models answer one; `raw` would skip it, and instruct models then ramble.
        body = {"prompt": request.prompt, "stream": stream}
        body.update({k: request.params[k] for k in PASSED_PARAMS if k in request.params})
        return body

    async def _run(self, request, body):
        data = await self.request_json(
            "POST", self._url(f"run/{request.model}"), self._headers(), body
        )
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise UpstreamError("The provider answered without a result.")
        return result

    async def chat(self, request):
        result = await self._run(request, self._chat_body(request, False))
        if "choices" in result:
            return chat_result_from_openai(result, request)
        return _chat_result(result, request)

    async def stream_chat(self, request):
        if request.response_format is not None and _response_format(request.response_format):
            # Workers AI's JSON mode does not stream: the whole answer is sent as one delta.
            result = await self.chat(request)
            if result.content:
                yield Delta(text=result.content)
            if result.tool_calls:
                yield Delta(tool_calls=deltas_of_tool_calls(result.tool_calls))
            yield Delta(finish_reason=result.finish_reason, usage=result.usage)
            return
        async for delta in self._stream(request, self._chat_body(request, True)):
            yield delta

    async def complete(self, request):
        result = await self._run(request, self._completion_body(request, False))
        choices = result.get("choices")
        if (
            isinstance(choices, list)
            and choices
            and isinstance(choices[0], dict)
            and "text" in choices[0]
        ):
            return completion_result_from_openai(result, request)
        if "choices" in result:
            answer = chat_result_from_openai(result, request)
        else:
            answer = _chat_result(result, request)
        return ChatResult(
            content=answer.content or "", usage=answer.usage, finish_reason=answer.finish_reason
        )

    async def stream_complete(self, request):
        async for delta in self._stream(request, self._completion_body(request, True)):
            if delta.text or delta.finish_reason:
                yield delta

    async def _stream(self, request, body):
        url = self._url(f"run/{request.model}")
        async with self.open_stream(url, body, self._headers()) as response:
            async for delta in read_openai_stream(iter_sse_data(response), request, _event_deltas):
                yield delta

    async def embed(self, request):
        result = await self._run(request, {"text": request.texts})
        vectors = result.get("data")
        if not isinstance(vectors, list) or len(vectors) != len(request.texts):
            raise UpstreamError("The provider answered with a different number of embeddings.")
        try:
            vectors = [[float(x) for x in vector] for vector in vectors]
        except (TypeError, ValueError):
            raise UpstreamError("The provider answered with malformed embeddings.") from None
        return EmbeddingResult(vectors=vectors, usage=Usage.reported(result.get("usage")))

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
                    **_catalogue_prices(item.get("properties")),
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

    @property
    def allowance(self):
        # Workers AI's allowances (the daily free neurons) belong to the account, which
        # several provider rows may share.
        return (self.row.kind, self.row.get_account_id())

    def error_message(self, data):
        if isinstance(data, dict):
            errors = data.get("errors") or []
            messages = [e.get("message", "") for e in errors if isinstance(e, dict)]
            if any(messages):
                return "; ".join(m for m in messages if m)
        return None

    def may_retry(self, response, data):
        # No answer with a code of cloudflare_errors.ERROR_CODES is worth another attempt
        # on the same model.
        return cloudflare_errors.coded_error(data) is None

    def error_for(self, response, data):
        by_code = cloudflare_errors.error_for(self, response, data)
        return by_code or super().error_for(response, data)


def _message(message, keep_parts):
    role = message["role"]
    content = message.get("content")
    if not (keep_parts and isinstance(content, list)):
        content = flatten_content(content)
    # Workers AI knows no developer role; OpenAI made it the system role of newer models.
    mapped = {"role": "system" if role == "developer" else role, "content": content}
    if message.get("tool_calls"):
        mapped["tool_calls"] = message["tool_calls"]
    if role == "tool":
        mapped["tool_call_id"] = message.get("tool_call_id", "")
        if message.get("name"):
            mapped["name"] = message["name"]
    return mapped


def _tools(tools, tool_choice):
    """Return the body fields for OpenAI's tools and tool_choice.

    Workers AI takes tools in OpenAI's shape but not every model honours tool_choice, so
    "none" sends no tools at all, and naming one function sends only that one, required.
    """
    if not tools or tool_choice == "none":
        return {}
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        return {
            "tools": [t for t in tools if t["function"]["name"] == name],
            "tool_choice": "required",
        }
    fields = {"tools": tools}
    if tool_choice == "required":
        fields["tool_choice"] = "required"
    return fields


def _response_format(response_format):
    """Return Workers AI's JSON mode for OpenAI's response_format, or None for plain text.

    OpenAI wraps the schema as {"name", "schema", "strict"}; Workers AI takes the schema
    itself as `json_schema`.
    """
    kind = response_format["type"]
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": response_format["json_schema"]["schema"]}
    return None


def _chat_result(result, request):
    """Read the older shape of answer into a ChatResult."""
    response = result.get("response")
    if isinstance(response, (dict, list)):
        # JSON mode answers with the object itself; OpenAI's content is its JSON text.
        content = json.dumps(response, ensure_ascii=False)
    elif isinstance(response, (int, float)) and not isinstance(response, bool):
        content = str(response)
    elif response is None or isinstance(response, str):
        content = response
    else:
        raise UpstreamError("The provider answered with a response that is not text.")
    tool_calls = whole_tool_calls(result.get("tool_calls"))
    if content is None and not tool_calls:
        content = ""
    elif tool_calls and not content:
        content = None
    usage = Usage.reported(result.get("usage")) or estimate_usage(request, content or "")
    finish_reason = "tool_calls" if tool_calls else finish_reason_for(request, usage)
    return ChatResult(
        content=content, usage=usage, finish_reason=finish_reason, tool_calls=tool_calls
    )


def _event_deltas(event, pieces):
    """Return the Deltas and finish reason of one Workers AI stream event, of either shape.

    Usage, in either shape a top-level field, is read by read_openai_stream.
    """
    choices = event.get("choices")
    if isinstance(choices, list):
        if any(isinstance(c, dict) and "delta" in c for c in choices):
            return chat_event_deltas(event, pieces)
        return completion_event_deltas(event, pieces)
    deltas = []
    text = event.get("response")
    if isinstance(text, str) and text:
        deltas.append(Delta(text=text))
    calls = pieces.feed(event.get("tool_calls"))
    if calls:
        deltas.append(Delta(tool_calls=calls))
    return deltas, None


# The catalogue's price units, and the Model field each one fills (USD per million tokens).
PRICE_UNITS = {"per M input tokens": "input_price", "per M output tokens": "output_price"}


def _catalogue_prices(properties):
    """Return input_price and output_price (Decimal USD, None if not given) of an entry.

    Prices come as {"property_id": "price", "value": [{"unit": "per M input tokens",
    "price": 0.28, "currency": "USD"}, ...]}; other units (per image, per audio minute) and
    other currencies are left out.
    """
    prices = dict.fromkeys(PRICE_UNITS.values())
    for prop in properties if isinstance(properties, list) else []:
        if not isinstance(prop, dict) or prop.get("property_id") != "price":
            continue
        for entry in prop.get("value") if isinstance(prop.get("value"), list) else []:
            if not isinstance(entry, dict) or entry.get("currency") != "USD":
                continue
            field = PRICE_UNITS.get(entry.get("unit"))
            price = entry.get("price")
            if field and isinstance(price, int | float) and not isinstance(price, bool):
                # Through str, so 0.28 becomes Decimal("0.28"), not its binary approximation.
                prices[field] = Decimal(str(price))
    return prices

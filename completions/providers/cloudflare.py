"""Cloudflare Workers AI over its REST API.

    POST {base}/accounts/{account}/ai/run/{model}     chat, completion, embeddings
    GET  {base}/accounts/{account}/ai/models/search   the catalogue, page by page
    GET  {base}/accounts/{account}/ai/models/schema   a model's request and answer schemas

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

import datetime
import json
from decimal import Decimal
from urllib.parse import urlencode

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


class CloudflareProvider(BaseProvider):
    # Workers AI's limit of texts in one embeddings call.
    embedding_batch_size = 100
    # Models asked for per catalogue page; Workers AI's own default and largest page size
    # are not documented, so the answer's page may be shorter.
    catalogue_page_size = 100
    # Pages read before the catalogue is taken for broken (one that never sends an empty
    # page): 50 pages of 100 models is far more than Workers AI's ~100 models.
    catalogue_max_pages = 50

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
        """Return every catalogue entry, those past their deprecation date included.

        Pages are read until one comes back empty, as Cloudflare's SDK does (cloudflare-
        typescript pagination.ts V4PagePaginationArray: the next page is always asked for,
        and an empty one ends the list); result_info's count and total_count are not
        documented for this endpoint, and a page may hold fewer models than asked for.
        """
        models = []
        for page in range(1, self.catalogue_max_pages + 1):
            query = {
                "page": page,
                "per_page": self.catalogue_page_size,
                # Without it, models past their planned_deprecation_date are not listed
                # (cloudflare-typescript models.ts), and a sync could not tell them apart
                # from a catalogue blip.
                "include_deprecated": "true",
            }
            data = await self.request_json(
                "GET", self._url(f"models/search?{urlencode(query)}"), self._headers()
            )
            results = data.get("result") if isinstance(data, dict) else None
            if not isinstance(results, list):
                raise UpstreamError("The provider answered the model search without a result.")
            if not results:
                return models
            models.extend(
                _catalogue_model(item)
                for item in results
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            )
        raise UpstreamError(
            f"The provider's model search did not end within {self.catalogue_max_pages} "
            f"pages of {self.catalogue_page_size} models."
        )

    async def model_schema(self, name):
        """Return {"input": ..., "output": ...}, the JSON Schemas of a model's request and answer.

        cloudflare-typescript models/schema.ts (SchemaGetResponse {input, output}, unwrapped
        from the envelope's `result`) and cloudflare-python resources/ai/models/schema.py
        (GET /accounts/{id}/ai/models/schema with the query parameter `model`).
        """
        url = self._url(f"models/schema?{urlencode({'model': name})}")
        data = await self.request_json("GET", url, self._headers())
        result = data.get("result") if isinstance(data, dict) else None
        if not (
            isinstance(result, dict)
            and isinstance(result.get("input"), dict)
            and isinstance(result.get("output"), dict)
        ):
            raise UpstreamError("The provider answered the schema request without two schemas.")
        return {"input": result["input"], "output": result["output"]}

    def error_message(self, data):
        if isinstance(data, dict):
            errors = data.get("errors") or []
            messages = [e.get("message", "") for e in errors if isinstance(e, dict)]
            if any(messages):
                return "; ".join(m for m in messages if m)
        return None


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
PRICE_UNITS = {
    "per M input tokens": "input_price",
    "per M output tokens": "output_price",
    "per M cached input tokens": "cached_input_price",
}


def _catalogue_model(item):
    """Return one catalogue entry as sync_models takes it.

    Entries are {"name", "description", "task": {"name"}, "properties": [{"property_id",
    "value"}, ...]}; property values are strings (context_window "128000", vision "true",
    planned_deprecation_date "2026-05-30"), except price, a list (see _catalogue_prices),
    and a few objects (reasoning_effort).
    """
    listed = item.get("properties")
    listed = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
    properties = {
        p["property_id"]: p.get("value") for p in listed if isinstance(p.get("property_id"), str)
    }
    return {
        "name": item["name"],
        "task": (item.get("task") or {}).get("name", ""),
        "description": item.get("description") or "",
        **_catalogue_prices(listed),
        "context_window": _positive_int(properties.get("context_window")),
        "properties": properties,
        "deprecation_date": _date(properties.get("planned_deprecation_date")),
    }


def _positive_int(value):
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number > 0 else None


def _date(value):
    """Read a date written "2026-05-30" (or a timestamp starting so); None if it is not one."""
    try:
        return datetime.date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _catalogue_prices(properties):
    """Return input, output and cached input prices (Decimal USD, None if not given).

    Prices come as {"property_id": "price", "value": [{"unit": "per M input tokens",
    "price": 0.28, "currency": "USD"}, ...]}; other units (per image, per audio minute) and
    other currencies are left out.
    """
    prices = dict.fromkeys(PRICE_UNITS.values())
    for prop in properties:
        if prop.get("property_id") != "price":
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

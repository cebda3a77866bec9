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

import asyncio
import datetime
import json
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings

from completions.image_urls import decode_data_uri
from completions.providers import cloudflare_errors, cloudflare_media
from completions.providers.base import BaseProvider
from completions.providers.bounds import bounded
from completions.providers.content import first_image_message, flatten_content
from completions.providers.estimates import estimate_usage, finish_reason_for
from completions.providers.openai import (
    chat_event_deltas,
    chat_result_from_openai,
    completion_event_deltas,
    completion_result_from_openai,
    read_openai_stream,
)
from completions.providers.sse import iter_sse_data
from completions.providers.tool_calls import whole_tool_calls
from completions.providers.types import (
    ChatRequest,
    ChatResult,
    Delta,
    EmbeddingResult,
    Usage,
    deltas_of_result,
)
from completions.providers.workers_ai_schema import check_params, schema_of
from gateway.errors import InvalidRequest, UpstreamError

# OpenAI parameters that Workers AI text generation takes under the same name; top_k is
# Workers AI's own, accepted by the gateway for it. Sent to a model with no stored schema.
PASSED_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
)
# Sent to a model with a stored schema when its schema has a field of that name (checked
# against the field's range by workers_ai_schema.check_params).
SCHEMA_PARAMS = (*PASSED_PARAMS, "stop", "reasoning_effort")


class CloudflareProvider(BaseProvider):
    # "HTTP URL will not be accepted": image_url parts must be data: URIs.
    takes_image_urls = False
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

    def _headers(self, request=None):
        headers = {"Authorization": f"Bearer {self.row.get_api_key()}"}
        affinity = getattr(request, "session_affinity", None)
        if affinity:
            # Sends a conversation's turns to the instance that holds its prompt prefix
            # cached ([doc] prompt-caching.mdx); see completions/affinity.py.
            headers["x-session-affinity"] = affinity
        return headers

    def applies_stop(self, model, chat=True):
        schema = schema_of(model)
        return schema is not None and schema.has("stop", chat)

    def check_chat(self, request):
        self._chat_body(_with_max_tokens(request), stream=False)

    def check_completion(self, request):
        self._completion_body(_with_max_tokens(request, chat=False), stream=False)

    def _chat_body(self, request, stream):
        schema = request.schema
        if schema is not None and not schema.takes_messages:
            raise InvalidRequest(
                f"The model '{request.model}' takes no chat messages; use /v1/completions.",
                param="model",
                code="unsupported_model",
            )
        body = {"messages": _messages(request.messages, schema), "stream": stream}
        if schema is not None and not schema.content_takes_images and schema.takes_image_bytes:
            image = _first_image(request.messages)
            if image is not None:
                body["image"] = image
        body.update(_params(request, chat=True))
        body.update(_tools(request, schema))
        body.update(_response_format(request, schema))
        return body

    def _completion_body(self, request, stream):
        schema = request.schema
        if schema is not None and not schema.takes_prompt:
            # A model with a Messages form only (gpt-oss as Cloudflare's types describe it:
            # XOR<ResponsesInput, ChatCompletionsMessagesInput>): the prompt as one user turn.
            body = {"messages": [{"role": "user", "content": request.prompt}], "stream": stream}
        else:
            # Workers AI applies the model's chat template to a prompt, as OpenAI's instruct
            # models answer one; `raw` would skip it, and instruct models then ramble.
            body = {"prompt": request.prompt, "stream": stream}
        body.update(_params(request, chat=False))
        return body

    async def _run(self, request, body):
        data = await self.request_json(
            "POST", self._url(f"run/{request.model}"), self._headers(request), body
        )
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise UpstreamError("The provider answered without a result.")
        return result

    async def chat(self, request):
        request = _with_max_tokens(request)
        result = await self._run(request, self._chat_body(request, False))
        return _read_chat(result, request)

    async def stream_chat(self, request):
        request = _with_max_tokens(request)
        if _json_mode_does_not_stream(request):
            # Workers AI's JSON mode does not stream ([doc] features/json-mode.mdx): the
            # whole answer is sent as one delta.
            for delta in deltas_of_result(await self.chat(request)):
                yield delta
            return
        async for delta in self._stream(request, self._chat_body(request, True), self.chat):
            yield delta

    async def complete(self, request):
        request = _with_max_tokens(request, chat=False)
        result = await self._run(request, self._completion_body(request, False))
        return _read_completion(result, request)

    async def stream_complete(self, request):
        request = _with_max_tokens(request, chat=False)
        body = self._completion_body(request, True)
        async for delta in self._stream(request, body, self.complete):
            if delta.text or delta.finish_reason:
                yield delta

    async def _stream(self, request, body, whole):
        """Yield the Deltas of a streamed call; `whole(request)` answers it unstreamed.

        Some models (gpt-oss; earlier Kimi) answer `stream: true` on /ai/run with a JSON
        body, `{"result": {}, ...}`, not an event stream: Cloudflare's own provider sees the
        content type and asks again without streaming ([cf-sdk] workers-ai-provider
        utils.ts createRun, and its test "should retry without streaming when REST returns
        JSON instead of SSE"). The gateway does the same, and reads a JSON body that does
        carry an answer as it is.
        """
        url = self._url(f"run/{request.model}")
        answer = None
        async with self.open_stream(url, body, self._headers(request)) as response:
            if "text/event-stream" in response.headers.get("content-type", ""):
                async for delta in read_openai_stream(
                    iter_sse_data(response), request, _event_deltas
                ):
                    yield delta
                return
            content = await self.read_body(response)
            data = self.check_response(response, content)
            result = data.get("result") if isinstance(data, dict) else None
            if isinstance(result, dict) and result:
                if isinstance(request, ChatRequest):
                    answer = _read_chat(result, request)
                else:
                    answer = _read_completion(result, request)
        if answer is None:
            answer = await whole(request)
        for delta in deltas_of_result(answer):
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

    # The media tasks (completions/providers/cloudflare_media.py).

    async def generate_image(self, request):
        result, binary = await self._run_media(request.model, cloudflare_media.image_body(request))
        return cloudflare_media.read_image(result, binary)

    async def transcribe(self, request):
        body = cloudflare_media.transcription_body(request)
        result, _ = await self._run_media(request.model, body)
        return cloudflare_media.read_transcription(result)

    async def speak(self, request):
        body, content_type = cloudflare_media.speech_body(request)
        result, binary = await self._run_media(request.model, body)
        return cloudflare_media.read_speech(result, binary, content_type)

    async def moderate(self, request):
        body = cloudflare_media.moderation_body(request)
        result, _ = await self._run_media(request.model, body)
        return cloudflare_media.read_moderation(result)

    async def rerank(self, request):
        result, _ = await self._run_media(request.model, cloudflare_media.rerank_body(request))
        return cloudflare_media.read_rerank(result, len(request.documents))

    async def _run_media(self, model, body):
        """Run a model whose answer may be bare bytes (an image, audio) rather than JSON.

        Return (the envelope's result, None) for a JSON answer, or ({}, (bytes, content
        type)) for a binary one. Bounded and retried as request_json is.
        """
        total = settings.UPSTREAM_TIMEOUT
        response, deadline = await self.send(
            "POST", self._url(f"run/{model}"), self._headers(), body, total=total
        )
        try:
            with self.translate_errors(total):
                async with asyncio.timeout_at(deadline):
                    content = await response.aread()
        finally:
            await response.aclose()
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status_code < 400 and content_type and content_type != "application/json":
            return {}, (content, content_type)
        data = self.check_response(response, content)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise UpstreamError("The provider answered without a result.")
        return result, None


def _with_max_tokens(request, chat=True):
    """Return the request with the max_tokens the gateway sends (bounds.bounded), unless the
    model's schema has no field for it.

    Workers AI's older models stop at 256 tokens when a request has none (each model's
    schema: `max_tokens` default 256), and say nothing of having stopped; most OpenAI
    clients send none. The gateway's bound goes in the request itself, so that an answer
    that stops there is reported with finish_reason "length".
    """
    schema = request.schema
    if request.max_tokens is not None or schema is None:
        return bounded(request)
    if not schema.has("max_tokens", chat):
        return request
    # The gateway's own bound (a model's default may be set above what its schema allows)
    # is kept within the schema's range, which a client's value is checked against.
    return bounded(request, highest=schema.bounds("max_tokens", chat).maximum)


def _params(request, chat):
    """Return the sampling fields of the body: those the model's schema takes, in range.

    Without a schema, the parameters every Workers AI text model has always taken.
    """
    schema = request.schema
    if schema is None:
        return {k: request.params[k] for k in PASSED_PARAMS if k in request.params}
    asked = {k: request.params[k] for k in SCHEMA_PARAMS if k in request.params}
    return check_params(schema, request.model, asked, chat)


def _messages(messages, schema):
    if schema is None:
        # Image parts reach here only for a model marked as taking images; the rest of
        # Workers AI's text models take content as a string only.
        keep_parts = first_image_message(messages) is not None
    else:
        keep_parts = schema.content_takes_images or (
            schema.content_takes_parts and first_image_message(messages) is None
        )
    return [_message(m, keep_parts) for m in messages]


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


def _first_image(messages):
    """Return the first image of the messages as the byte list older vision models take
    as `image` (llama-3.2-11b-vision's schema: an array of 0-255 integers)."""
    index = first_image_message(messages)
    if index is None:
        return None
    for part in messages[index]["content"]:
        if part["type"] == "image_url":
            # Images by URL were fetched and inlined before (completions/image_urls.py).
            _, data = decode_data_uri(part["image_url"]["url"], param=f"messages[{index}].content")
            return list(data)
    return None


def _tools(request, schema):
    """Return the body fields for OpenAI's tools and tool_choice.

    A model whose schema has `tool_choice` (the Chat-Completions-schema models) takes
    OpenAI's own, and enforces a named function; "required" is advisory there and fails
    open ([cf-sdk] workers-ai-provider CHANGELOG #575). Older models have no tool_choice:
    "none" sends no tools, and naming a function sends only that one.
    """
    tool_choice = request.tool_choice
    if not request.tools or tool_choice == "none":
        return {}
    tools = [_tool(tool) for tool in request.tools]
    if schema is not None and not schema.has("tools"):
        raise InvalidRequest(f"The model '{request.model}' cannot call tools.", param="tools")
    if schema is not None and schema.has("tool_choice"):
        fields = {"tools": tools}
        if tool_choice is not None:
            fields["tool_choice"] = tool_choice
        return fields
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        fields = {"tools": [t for t in tools if t["function"]["name"] == name]}
        if schema is None:
            fields["tool_choice"] = "required"
        return fields
    fields = {"tools": tools}
    if tool_choice == "required" and schema is None:
        fields["tool_choice"] = "required"
    return fields


def _tool(tool):
    """Return an OpenAI function tool in the form Workers AI's schemas require.

    Their `tools` item requires the function's `description` and `parameters` (with `type`
    and `properties`), and `type` and `description` on every parameter (each text model's
    schema, e.g. llama-3.1-8b-instruct.json); OpenAI makes all of these optional, and
    pydantic-built parameters often give a property `anyOf` instead of `type`.
    """
    function = tool["function"]
    parameters = dict(function.get("parameters") or {})
    parameters.setdefault("type", "object")
    properties = parameters.get("properties")
    parameters["properties"] = {name: _parameter(spec) for name, spec in (properties or {}).items()}
    return {
        "type": "function",
        "function": {
            **function,
            "description": function.get("description") or "",
            "parameters": parameters,
        },
    }


def _parameter(spec):
    if not isinstance(spec, dict):
        return spec
    spec = dict(spec)
    spec.setdefault("description", spec.get("title") or "")
    if "type" not in spec:
        alternatives = spec.get("anyOf") or spec.get("oneOf") or []
        types = [a.get("type") for a in alternatives if isinstance(a, dict)]
        named = [t for t in types if isinstance(t, str) and t != "null"]
        spec["type"] = named[0] if named else "object" if "$ref" in spec else "string"
    return spec


def _response_format(request, schema):
    """Return the body fields for OpenAI's response_format, in the form the model takes.

    Chat-Completions-schema models take OpenAI's envelope {type: "json_schema",
    json_schema: {name, schema, strict}}; the older "JSON Mode" takes the schema itself as
    `json_schema` ([cf-sdk] utils.ts buildJsonSchemaPayload: "Native Workers AI expects a
    BARE JSON Schema"); gemma-3 has only vLLM's `guided_json`. Without a schema, JSON Mode.
    """
    response_format = request.response_format
    if response_format is None or response_format["type"] == "text":
        return {}
    form = "bare" if schema is None else schema.json_schema_form
    if form is None:
        raise InvalidRequest(
            f"The model '{request.model}' cannot be held to a JSON answer.",
            param="response_format",
        )
    kind = response_format["type"]
    wanted = {"type": "object"}
    if kind == "json_schema":
        wanted = response_format["json_schema"].get("schema") or wanted
    if form == "guided_json":
        return {"guided_json": wanted}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if form == "envelope":
        envelope = response_format["json_schema"]
        return {"response_format": {"type": "json_schema", "json_schema": envelope}}
    return {"response_format": {"type": "json_schema", "json_schema": wanted}}


def _json_mode_does_not_stream(request):
    if request.response_format is None or request.response_format["type"] == "text":
        return False
    schema = request.schema
    return schema is None or schema.json_schema_form in ("bare", "guided_json")


def _read_chat(result, request):
    if "choices" in result:
        return chat_result_from_openai(result, request)
    return _chat_result(result, request)


def _read_completion(result, request):
    choices = result.get("choices")
    if (
        isinstance(choices, list)
        and choices
        and isinstance(choices[0], dict)
        and "text" in choices[0]
    ):
        return completion_result_from_openai(result, request)
    answer = _read_chat(result, request)
    return ChatResult(
        content=answer.content or "", usage=answer.usage, finish_reason=answer.finish_reason
    )


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
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        # "Workers AI sometimes returns numbers instead of strings for the `response`
        # field" ([cf-sdk] workers-ai-provider CHANGELOG): a digit is text all the same.
        text = str(text)
    if isinstance(text, str) and text:
        deltas.append(Delta(text=text))
    calls = pieces.feed(event.get("tool_calls"))
    if calls:
        deltas.append(Delta(tool_calls=calls))
    reason = event.get("finish_reason")
    # A top-level finish_reason on native events is read by [cf-sdk] streaming.ts.
    return deltas, reason if isinstance(reason, str) and reason else None


# The catalogue's price units, and the Model field each one fills (USD per million tokens).
PRICE_UNITS = {
    "per M input tokens": "input_price",
    "per M output tokens": "output_price",
    "per M cached input tokens": "cached_input_price",
}
# Catalogue units of media models' prices, with the seconds in one: speech recognition is
# priced per audio minute and recorded in audio seconds (Model.unit_price is USD per
# second). Text-to-speech's "per audio minute" (aura-1) is not read: its requests are
# counted in characters, and the audio's length is not known without decoding it. Image
# prices (per 512x512 tile, per step) depend on size and steps, and are not read either.
AUDIO_MINUTE = "per audio minute"
SPEECH_RECOGNITION = "Automatic Speech Recognition"
SECONDS_PER_MINUTE = 60


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
    task = (item.get("task") or {}).get("name", "")
    return {
        "name": item["name"],
        "task": task,
        "description": item.get("description") or "",
        **_catalogue_prices(listed),
        "unit_price": _audio_second_price(listed) if task == SPEECH_RECOGNITION else None,
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


def _audio_second_price(properties):
    """Return the USD price of one second of audio heard, from a price per audio minute."""
    for prop in properties:
        if prop.get("property_id") != "price" or not isinstance(prop.get("value"), list):
            continue
        for entry in prop["value"]:
            if (
                isinstance(entry, dict)
                and entry.get("unit") == AUDIO_MINUTE
                and entry.get("currency") == "USD"
                and isinstance(entry.get("price"), int | float)
                and not isinstance(entry.get("price"), bool)
            ):
                return Decimal(str(entry["price"])) / SECONDS_PER_MINUTE
    return None

"""A fake Cloudflare Workers AI and OpenAI upstream for tests.

The server runs its own event loop in a daemon thread and listens on a real loopback port, so
both in-process code and a separate gateway process (for example daphne) reach it over HTTP.

Behaviour is chosen by substrings of the requested model name, because a gateway running in
another process can only influence the upstream through the request it forwards:

    fail-500      500 whose message contains the account id, base URL and token
    rate-limited  429 with ``Retry-After: 7``
    bad-request   400 "context too long"
    unknown       400 "No such model" (Cloudflare) / 404 model_not_found (OpenAI)
    cut-stream    streaming stops after 3 word events and the connection is dropped
    bad-json      streaming sends 2 word events, one malformed event, then [DONE]
    slow          0.5 s before answering, 0.05 s between stream events
    drip          streams a "drip" word every 0.2 s, up to 100 events
    hang          30 s before answering
    no-usage      answers and streams without token counts

Other behaviour follows the request, as the real services do:

- Cloudflare models named with ``qwen3`` or ``gpt-oss`` answer in the newer OpenAI shape
  (``result`` is a chat.completion object, streams are chat.completion.chunk events); the
  others in the older shape (``{"response": ...}``).
- Given ``tools`` after a user (not a tool) message, the model calls the first tool (or the
  one ``tool_choice`` names) with ``{"text": <the user message>}``; Cloudflare's older shape
  sends ``arguments`` as an object, and streams the call in pieces ending with an empty one.
- Given ``response_format`` (other than text), the answer is ``{"echo": <the message>}``:
  the object itself in Cloudflare's ``response``, a JSON text elsewhere. Cloudflare refuses
  JSON mode in a stream, as Workers AI does not stream it.
- The answer echoes the last user or tool message: "Echo: <message>".
- Cloudflare embedding models (``bge`` or ``embedding`` in the name) take ``{"text": ...}``,
  at most 100 texts, and answer ``{"shape": [n, dim], "data": [...]}`` with no usage; the
  OpenAI ``/embeddings`` answers with usage (a token is a word). Vectors come from
  ``embedding_vector(text, dimensions)``.
- OpenAI's legacy ``/completions`` echoes the prompt: "Echo: <prompt>".

Usage::

    with FakeUpstream().start() as upstream:
        httpx.post(f"{upstream.cloudflare_base_url}/accounts/acc-test-123/ai/run/@cf/x", ...)
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

CLOUDFLARE_TOKEN = "cf-test-token"
CLOUDFLARE_ACCOUNT = "acc-test-123"
OPENAI_KEY = "oa-test-key"

RETRY_AFTER_SECONDS = 7
SLOW_DELAY_SECONDS = 0.5
SLOW_EVENT_INTERVAL_SECONDS = 0.05
DRIP_EVENT_INTERVAL_SECONDS = 0.2
DRIP_MAX_EVENTS = 100
HANG_SECONDS = 30.0
CUT_STREAM_AFTER_EVENTS = 3
BAD_JSON_AFTER_EVENTS = 2
DEFAULT_PER_PAGE = 20
# Workers AI's limit on texts in one embeddings call.
EMBEDDING_BATCH_LIMIT = 100
EMBEDDING_DIMENSIONS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
}
# Dimensions of other embedding models, Cloudflare's and OpenAI's.
DEFAULT_EMBEDDING_DIMENSIONS = 16
# Cloudflare model names that answer in the newer, OpenAI-shaped format.
OPENAI_SHAPED_MARKERS = ("qwen3", "gpt-oss")

# Handlers still sleeping (hang, drip) are cancelled after this long when the server stops, so
# stop() never waits for them to finish on their own.
SHUTDOWN_TIMEOUT_SECONDS = 0.5

DONE_EVENT = b"data: [DONE]\n\n"
MALFORMED_EVENT = b"data: {not json\n\n"

TEXT_GENERATION_TASK = {
    "id": "c329a1f9-323d-4e91-b2aa-582dd4188d34",
    "name": "Text Generation",
    "description": "Family of generative text models, such as large language models (LLM).",
}
TEXT_EMBEDDINGS_TASK = {
    "id": "0137cdcf-162a-4108-94f2-1ca59e8c65ee",
    "name": "Text Embeddings",
    "description": "Feature extraction models transform raw data into numerical features.",
}
TEXT_TO_IMAGE_TASK = {
    "id": "3d6e1f35-341b-4915-a6c8-9a7142a9033a",
    "name": "Text-to-Image",
    "description": "Generates images from input text.",
}

# Prices in USD per million tokens, as (input, output). Distinct values let an import test tell
# models apart.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "@cf/meta/llama-3.1-8b-instruct": (0.28, 0.83),
    "@cf/meta/llama-3.2-1b-instruct": (0.027, 0.201),
    "@cf/test/model-05": (0.5, 1.5),
    "@cf/test/model-17": (0.1, 0.2),
}
# Named explicitly so that the catalogue stays readable; the rest are @cf/test/model-NN.
NAMED_TEXT_GENERATION_MODELS = [
    "@cf/meta/llama-3.1-8b-instruct",
    "@cf/meta/llama-3.2-1b-instruct",
    "@hf/mistral/mistral-7b-instruct-v0.2",
]
EMBEDDING_MODELS = [
    "@cf/baai/bge-small-en-v1.5",
    "@cf/baai/bge-base-en-v1.5",
    "@cf/baai/bge-large-en-v1.5",
]
IMAGE_MODELS = [
    "@cf/stabilityai/stable-diffusion-xl-base-1.0",
    "@cf/black-forest-labs/flux-1-schnell",
]

OPENAI_MODELS = [
    {"id": "gpt-test-mini", "object": "model", "created": 1700000000, "owned_by": "fake"},
    {"id": "text-embed-test", "object": "model", "created": 1700000000, "owned_by": "fake"},
]


def _model_id(number: int) -> str:
    return f"{number:08x}-0000-4000-8000-{number:012x}"


def _catalogue_entry(number: int, name: str, task: dict[str, str]) -> dict[str, Any]:
    properties: list[dict[str, Any]] = []
    if task is TEXT_GENERATION_TASK:
        properties.append({"property_id": "context_window", "value": "8192"})
    elif task is TEXT_EMBEDDINGS_TASK:
        properties.append({"property_id": "context_window", "value": "512"})
    if name in DEFAULT_PRICES:
        input_price, output_price = DEFAULT_PRICES[name]
        properties.append(
            {
                "property_id": "price",
                "value": [
                    {"unit": "per M input tokens", "price": input_price, "currency": "USD"},
                    {"unit": "per M output tokens", "price": output_price, "currency": "USD"},
                ],
            }
        )
    return {
        "id": _model_id(number),
        "name": name,
        "description": f"Test model {name}.",
        "task": dict(task),
        "created_at": "2024-07-23 17:00:00.000",
        "tags": [],
        "properties": properties,
    }


def default_catalogue() -> list[dict[str, Any]]:
    """Return a fresh copy of the 25-model catalogue.

    Embedding and image models sit between the text generation models so that some text
    generation models land on page 2: a client that ignores pagination misses them.
    """
    text_generation = NAMED_TEXT_GENERATION_MODELS + [
        f"@cf/test/model-{number:02d}" for number in range(4, 21)
    ]
    ordered = (
        [(name, TEXT_GENERATION_TASK) for name in text_generation[:3]]
        + [(name, TEXT_EMBEDDINGS_TASK) for name in EMBEDDING_MODELS]
        + [(name, TEXT_TO_IMAGE_TASK) for name in IMAGE_MODELS]
        + [(name, TEXT_GENERATION_TASK) for name in text_generation[3:]]
    )
    return [_catalogue_entry(number, name, task) for number, (name, task) in enumerate(ordered, 1)]


def _content_text(content: Any) -> str:
    """Flatten a message content that may be a string or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _json_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _fault(model: str) -> str | None:
    """The error fault a model name asks for, if any; checked before anything is answered."""
    for name in ("unknown", "fail-500", "rate-limited", "bad-request"):
        if name in model:
            return name
    return None


# Workers AI's error answers by code, asked for by a model name holding "cf-<code>": each is
# (HTTP status, code, message) as its source gives them. Sources (workers-ai-rest.md
# section 1): [doc] platform/errors.mdx @0309c8b, the table of codes, statuses and
# descriptions, which is the message unless noted; [doc] features/reject-if-busy.mdx
# @c19784c for 3040's message; [3p] captures of 4006 (the REST API's daily allowance: several
# projects capture it, none 3036) and of 7003 (anomalyco/opencode issue #23773, a path with an
# account id the API cannot route). Whether any of them carries Retry-After is UNVERIFIED,
# so none does.
CLOUDFLARE_CODED_ERRORS: dict[str, tuple[int, int, str]] = {
    "cf-3040": (429, 3040, "Capacity temporarily exceeded, please try again."),
    "cf-4006": (
        429,
        4006,
        "AiError: AiError: you have used up your daily free allocation of 10,000 neurons, "
        "please upgrade to Cloudflare's Workers Paid plan if you would like to continue "
        "usage. (4f3c2a1e-7b6d-4c5e-9f8a-0b1c2d3e4f5a)",
    ),
    "cf-3036": (
        429,
        3036,
        "You have used up your daily free allocation of 10,000 neurons. Please upgrade to "
        "Cloudflare's Workers Paid plan if you would like to continue usage.",
    ),
    "cf-5016": (403, 5016, "User has not agreed to Llama3.2 model terms"),
    "cf-5018": (403, 5018, "The account is not allowed to access this model"),
    "cf-3041": (403, 3041, "The account is not allowed to access this model"),
    "cf-3023": (403, 3023, "Service unavailable for account"),
    "cf-3007": (408, 3007, "Request timeout"),
    "cf-3008": (408, 3008, "Request was aborted"),
    "cf-3006": (413, 3006, "Request is too large"),
    "cf-3042": (404, 3042, "The model name is invalid"),
    "cf-5007": (400, 5007, "No such model {model} or task"),
    "cf-7003": (
        404,
        7003,
        "Could not route to /client/v4/accounts/{account}/ai/run/{model}, perhaps your "
        "object identifier is invalid?",
    ),
}


def _cloudflare_coded_error(model: str, account: str) -> web.Response | None:
    """The coded Workers AI error a model name asks for, if any."""
    for marker, (status, code, message) in CLOUDFLARE_CODED_ERRORS.items():
        if marker in model:
            return _cloudflare_error(status, code, message.format(model=model, account=account))
    return None


@dataclass
class Answer:
    words: list[str]
    prompt_tokens: int
    truncated: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return len(self.words)

    @property
    def pieces(self) -> list[str]:
        """Words as streamed: every word but the first carries its leading space."""
        return [word if index == 0 else f" {word}" for index, word in enumerate(self.words)]

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _answer(messages: list[Any], max_tokens: Any, model: str, stream: bool) -> Answer:
    contents = [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    prompt_tokens = sum(len(text.split()) for text in contents)
    if stream and "drip" in model:
        words = ["drip"] * DRIP_MAX_EVENTS
    else:
        words = f"Echo: {_last_turn(messages)[1]}".split()
    truncated = False
    # bool is an int subclass, but "max_tokens": true is not a limit.
    is_limit = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
    if is_limit and 0 <= max_tokens < len(words):
        words = words[:max_tokens]
        truncated = True
    return Answer(words=words, prompt_tokens=prompt_tokens, truncated=truncated)


def _apply_stop(answer: Answer, stop: Any) -> Answer:
    """The answer up to its first stop sequence, as OpenAI applies `stop` (Workers AI does not)."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    text = answer.text
    cuts = [text.find(s) for s in stops if isinstance(s, str) and s and s in text]
    if not cuts:
        return answer
    return Answer(
        words=text[: min(cuts)].split(), prompt_tokens=answer.prompt_tokens, truncated=False
    )


def _last_turn(messages: list[Any]) -> tuple[str, str]:
    """The role and text of the last user or tool message."""
    turns = [
        (m.get("role"), _content_text(m.get("content")))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "tool")
    ]
    return turns[-1] if turns else ("user", "")


def _tool_call(body: dict[str, Any], messages: list[Any]) -> tuple[str, dict[str, str]] | None:
    """The tool the model calls and its arguments, or None if it answers with text."""
    tools = body.get("tools")
    role, text = _last_turn(messages)
    last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or last_role != "user" or choice == "none":
        return None
    names = [
        (tool.get("function") or {}).get("name") or tool.get("name")
        for tool in tools
        if isinstance(tool, dict)
    ]
    name = names[0]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or name
    return name, {"text": text}


def _wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") != "text"


def _is_embedding_model(model: str) -> bool:
    return "bge" in model or "embedding" in model or "embed" in model


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """The fake's embedding of a text: a unit vector seeded by the text's SHA-256."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    generator = random.Random(seed)
    vector = [generator.gauss(0, 1) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _openai_completion(
    model: str,
    answer: Answer,
    tool: tuple[str, dict[str, str]] | None,
    json_mode: bool,
    include_usage: bool = True,
) -> dict[str, Any]:
    """A chat.completion object, as OpenAI and Cloudflare's newer models answer."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    finish_reason = "length" if answer.truncated else "stop"
    if tool is not None:
        name, arguments = tool
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }
        finish_reason = "tool_calls"
    elif json_mode:
        message["content"] = json.dumps({"echo": _json_text(answer)})
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if include_usage:
        completion["usage"] = answer.usage()
    return completion


def _json_text(answer: Answer) -> str:
    """The message a JSON answer echoes: the answer without its "Echo:" word."""
    return " ".join(answer.words[1:])


def _tool_call_pieces(name: str, arguments: dict[str, str]) -> list[dict[str, Any]]:
    """OpenAI's streamed tool call: the name first, then the arguments in two pieces."""
    text = json.dumps(arguments)
    middle = len(text) // 2
    return [
        {
            "index": 0,
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        },
        {"index": 0, "function": {"arguments": text[:middle]}},
        {"index": 0, "function": {"arguments": text[middle:]}},
    ]


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.catalogue: list[dict[str, Any]] = default_catalogue()
        # Only changed on the server's event loop thread, so reads from tests are safe enough.
        self.open_streams = 0
        self.drip_closed = threading.Event()
        self._requests_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def cloudflare_base_url(self) -> str:
        return f"{self.url}/client/v4"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"

    # Lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-upstream", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            cleanup.result(timeout=SHUTDOWN_TIMEOUT_SECONDS + 10)
            self._runner = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = None
        self._thread = None

    def reset(self) -> None:
        with self._requests_lock:
            self.requests.clear()
        self.catalogue = default_catalogue()
        self.drip_closed.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._record_and_render_http_errors])
        app.router.add_post("/client/v4/accounts/{account}/ai/run/{model:.+}", self._cloudflare_run)
        app.router.add_get(
            "/client/v4/accounts/{account}/ai/models/search", self._cloudflare_models
        )
        app.router.add_post("/openai/v1/chat/completions", self._openai_chat)
        app.router.add_post("/openai/v1/completions", self._openai_completions)
        app.router.add_post("/openai/v1/embeddings", self._openai_embeddings)
        app.router.add_get("/openai/v1/models", self._openai_models)
        # handler_cancellation makes a client disconnect cancel the handler at once, as a real
        # upstream would stop generating; drip tests rely on noticing that.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{bound_port}"

    # Shared plumbing

    @web.middleware
    async def _record_and_render_http_errors(
        self, request: web.Request, handler: Any
    ) -> web.StreamResponse:
        raw_body = await request.read()
        record = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "json": _json_body(raw_body),
        }
        with self._requests_lock:
            self.requests.append(record)
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status not in (404, 405):
                raise
            if error.status == 405:
                message = f"Method {request.method} not allowed for {request.path}"
            else:
                message = f"No route for {request.path}"
            if request.path.startswith("/client/v4"):
                return _cloudflare_error(error.status, 7000, message)
            if request.path.startswith("/openai"):
                return _openai_error(error.status, message, "invalid_request_error", None)
            return web.json_response({"error": message}, status=error.status)

    async def _wait_before_answering(self, model: str) -> None:
        if "hang" in model:
            await asyncio.sleep(HANG_SECONDS)
        elif "slow" in model:
            await asyncio.sleep(SLOW_DELAY_SECONDS)

    async def _stream(
        self,
        request: web.Request,
        model: str,
        opening: list[bytes],
        word_events: list[bytes],
        closing: list[bytes],
    ) -> web.StreamResponse:
        """Send an SSE stream, applying the stream faults the model name asks for."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        is_drip = "drip" in model
        if is_drip:
            interval = DRIP_EVENT_INTERVAL_SECONDS
            self.open_streams += 1
        else:
            interval = SLOW_EVENT_INTERVAL_SECONDS if "slow" in model else 0.0
        try:
            for event in opening:
                await _send(response, event)
            for index, event in enumerate(word_events):
                if "cut-stream" in model and index == CUT_STREAM_AFTER_EVENTS:
                    return _drop_connection(request, response)
                if "bad-json" in model and index == BAD_JSON_AFTER_EVENTS:
                    await _send(response, MALFORMED_EVENT)
                    await _send(response, DONE_EVENT)
                    await response.write_eof()
                    return response
                if index and interval:
                    await asyncio.sleep(interval)
                await _send(response, event)
            if "cut-stream" in model:
                return _drop_connection(request, response)
            for event in closing:
                await _send(response, event)
            await _send(response, DONE_EVENT)
        except (ConnectionError, asyncio.CancelledError):
            # The client went away mid-stream; drip tests wait for exactly this signal.
            if is_drip:
                self.drip_closed.set()
            raise
        finally:
            if is_drip:
                self.open_streams -= 1
        await response.write_eof()
        return response

    # Cloudflare Workers AI

    def _cloudflare_auth_error(self, request: web.Request) -> web.Response | None:
        if _bearer_token(request) != CLOUDFLARE_TOKEN:
            return _cloudflare_error(401, 10000, "Authentication error")
        if request.match_info.get("account") != CLOUDFLARE_ACCOUNT:
            return _cloudflare_error(403, 10000, "Authentication error")
        return None

    async def _cloudflare_run(self, request: web.Request) -> web.StreamResponse:
        if auth_error := self._cloudflare_auth_error(request):
            return auth_error
        model = request.match_info["model"]
        body = _json_body(await request.read())
        if not isinstance(body, dict):
            return _cloudflare_error(400, 5006, "AiError: Bad input: body must be a JSON object")
        if coded_error := _cloudflare_coded_error(model, request.match_info["account"]):
            return coded_error
        fault = _fault(model)
        if fault == "unknown":
            return _cloudflare_error(400, 5007, f"No such model {model} or task")
        if fault == "fail-500":
            message = (
                f"Internal error on account {CLOUDFLARE_ACCOUNT} at {self.cloudflare_base_url}"
                f" with token {CLOUDFLARE_TOKEN}"
            )
            return _cloudflare_error(500, 3043, message)
        if fault == "rate-limited":
            return _cloudflare_error(
                429,
                3040,
                "Capacity temporarily exceeded",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if fault == "bad-request":
            return _cloudflare_error(400, 5006, "AiError: Bad input: context too long")

        if _is_embedding_model(model):
            return _cloudflare_embeddings(model, body)
        messages = body.get("messages")
        if messages is None and isinstance(body.get("prompt"), str):
            messages = [{"role": "user", "content": body["prompt"]}]
        if not isinstance(messages, list):
            return _cloudflare_error(400, 5006, "AiError: Bad input: missing messages")

        await self._wait_before_answering(model)
        stream = bool(body.get("stream"))
        json_mode = _wants_json(body)
        if stream and json_mode:
            return _cloudflare_error(400, 5006, "AiError: JSON mode does not support streaming")
        answer = _answer(messages, body.get("max_tokens"), model, stream)
        tool = _tool_call(body, messages)
        with_usage = "no-usage" not in model
        openai_shaped = any(marker in model for marker in OPENAI_SHAPED_MARKERS)
        if not stream:
            if openai_shaped:
                result = _openai_completion(model, answer, tool, json_mode, with_usage)
            else:
                result = _cloudflare_result(answer, tool, json_mode, with_usage)
            return web.json_response(
                {"result": result, "success": True, "errors": [], "messages": []}
            )
        if openai_shaped:
            return await self._openai_stream(request, model, answer, tool, with_usage)
        if tool is not None:
            name, arguments = tool
            pieces = _tool_call_pieces(name, arguments)
            # Workers AI ends a streamed call with an empty piece.
            pieces.append({"id": None, "type": None, "function": {"name": None}})
            word_events = [_sse({"response": "", "tool_calls": [piece]}) for piece in pieces]
        else:
            word_events = [_sse({"response": piece, "p": "abc"}) for piece in answer.pieces]
        closing = [_sse({"response": "", "usage": answer.usage()})] if with_usage else []
        return await self._stream(
            request, model, opening=[], word_events=word_events, closing=closing
        )

    async def _cloudflare_models(self, request: web.Request) -> web.Response:
        if auth_error := self._cloudflare_auth_error(request):
            return auth_error
        page = _positive_int(request.query.get("page"), 1)
        per_page = _positive_int(request.query.get("per_page"), DEFAULT_PER_PAGE)
        models = self.catalogue
        # Workers AI filters by task name; supporting it keeps a client using it honest.
        if task := request.query.get("task"):
            models = [
                m for m in models if m.get("task", {}).get("name", "").lower() == task.lower()
            ]
        start = (page - 1) * per_page
        page_models = copy.deepcopy(models[start : start + per_page])
        return web.json_response(
            {
                "result": page_models,
                "success": True,
                "errors": [],
                "messages": [],
                "result_info": {
                    "count": len(page_models),
                    "page": page,
                    "per_page": per_page,
                    "total_count": len(models),
                },
            }
        )

    # OpenAI

    def _openai_fault(self, model: str) -> web.Response | None:
        fault = _fault(model)
        if fault == "unknown":
            return _openai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        if fault == "fail-500":
            message = f"Internal error at {self.openai_base_url} with key {OPENAI_KEY}"
            return _openai_error(500, message, "server_error", None)
        if fault == "rate-limited":
            return _openai_error(
                429,
                f"Rate limit reached for {model}. Please try again in {RETRY_AFTER_SECONDS}s.",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if fault == "bad-request":
            return _openai_error(
                400,
                "This model's maximum context length is 8192 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        return None

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        token = _bearer_token(request)
        if token != OPENAI_KEY:
            return _openai_invalid_key(token)
        body = _json_body(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _openai_error(
                400, "'messages' is a required property", "invalid_request_error", None
            )
        model = str(body.get("model", ""))
        if fault_response := self._openai_fault(model):
            return fault_response

        await self._wait_before_answering(model)
        stream = bool(body.get("stream"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        answer = _apply_stop(_answer(body["messages"], max_tokens, model, stream), body.get("stop"))
        tool = _tool_call(body, body["messages"])
        with_usage = "no-usage" not in model
        if not stream:
            return web.json_response(
                _openai_completion(model, answer, tool, _wants_json(body), with_usage)
            )
        stream_options = body.get("stream_options")
        include_usage = (
            with_usage
            and isinstance(stream_options, dict)
            and bool(stream_options.get("include_usage"))
        )
        return await self._openai_stream(
            request, model, answer, tool, include_usage, _wants_json(body)
        )

    async def _openai_stream(
        self,
        request: web.Request,
        model: str,
        answer: Answer,
        tool: tuple[str, dict[str, str]] | None,
        include_usage: bool,
        json_mode: bool = False,
    ) -> web.StreamResponse:
        """Stream chat.completion.chunk events, as OpenAI and Cloudflare's newer models do."""
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            # OpenAI adds "usage": null to every chunk once usage was asked for.
            if include_usage:
                payload["usage"] = usage
            return _sse(payload)

        def delta(content: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}
            return chunk([choice])

        if tool is not None:
            word_events = [delta({"tool_calls": [piece]}) for piece in _tool_call_pieces(*tool)]
            finish_reason = "tool_calls"
        elif json_mode:
            word_events = [delta({"content": json.dumps({"echo": _json_text(answer)})})]
            finish_reason = "stop"
        else:
            word_events = [delta({"content": piece}) for piece in answer.pieces]
            finish_reason = "length" if answer.truncated else "stop"
        closing = [delta({}, finish_reason)]
        if include_usage:
            closing.append(chunk([], answer.usage()))
        return await self._stream(
            request,
            model,
            opening=[delta({"role": "assistant", "content": ""})],
            word_events=word_events,
            closing=closing,
        )

    async def _openai_completions(self, request: web.Request) -> web.StreamResponse:
        token = _bearer_token(request)
        if token != OPENAI_KEY:
            return _openai_invalid_key(token)
        body = _json_body(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return _openai_error(
                400, "'prompt' must be a string here", "invalid_request_error", None
            )
        model = str(body.get("model", ""))
        if fault_response := self._openai_fault(model):
            return fault_response
        await self._wait_before_answering(model)
        stream = bool(body.get("stream"))
        messages = [{"role": "user", "content": body["prompt"]}]
        answer = _apply_stop(
            _answer(messages, body.get("max_tokens"), model, stream), body.get("stop")
        )
        finish_reason = "length" if answer.truncated else "stop"
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def completion(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }

        def choice(text: str, finish: str | None = None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        if not stream:
            return web.json_response(
                completion([choice(answer.text, finish_reason)], usage=answer.usage())
            )
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        closing = [_sse(completion([choice("", finish_reason)]))]
        if include_usage:
            closing.append(_sse(completion([], usage=answer.usage())))
        return await self._stream(
            request,
            model,
            opening=[],
            word_events=[_sse(completion([choice(piece)])) for piece in answer.pieces],
            closing=closing,
        )

    async def _openai_embeddings(self, request: web.Request) -> web.Response:
        token = _bearer_token(request)
        if token != OPENAI_KEY:
            return _openai_invalid_key(token)
        body = _json_body(await request.read())
        texts = body.get("input") if isinstance(body, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _openai_error(
                400,
                "'input' must be a string or an array of strings",
                "invalid_request_error",
                None,
            )
        model = str(body.get("model", ""))
        if fault_response := self._openai_fault(model):
            return fault_response
        dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
        tokens = sum(len(text.split()) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": index, "embedding": vector}
                    for index, vector in enumerate(
                        embedding_vector(text, dimensions) for text in texts
                    )
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _openai_models(self, request: web.Request) -> web.Response:
        token = _bearer_token(request)
        if token != OPENAI_KEY:
            return _openai_invalid_key(token)
        return web.json_response({"object": "list", "data": copy.deepcopy(OPENAI_MODELS)})


def _cloudflare_result(
    answer: Answer, tool: tuple[str, dict[str, str]] | None, json_mode: bool, with_usage: bool
) -> dict[str, Any]:
    """The older shape of Workers AI's result."""
    result: dict[str, Any] = {"response": answer.text}
    if tool is not None:
        name, arguments = tool
        result = {"response": None, "tool_calls": [{"name": name, "arguments": arguments}]}
    elif json_mode:
        result = {"response": {"echo": _json_text(answer)}}
    if with_usage:
        result["usage"] = answer.usage()
    return result


def _cloudflare_embeddings(model: str, body: dict[str, Any]) -> web.Response:
    texts = body.get("text")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return _cloudflare_error(400, 5006, "AiError: Bad input: text must be a string or array")
    if len(texts) > EMBEDDING_BATCH_LIMIT:
        return _cloudflare_error(
            400,
            5006,
            f"AiError: Bad input: /text must NOT have more than {EMBEDDING_BATCH_LIMIT} items",
        )
    dimensions = EMBEDDING_DIMENSIONS.get(model, DEFAULT_EMBEDDING_DIMENSIONS)
    result = {
        "shape": [len(texts), dimensions],
        "data": [embedding_vector(text, dimensions) for text in texts],
        "pooling": "mean",
    }
    return web.json_response({"result": result, "success": True, "errors": [], "messages": []})


async def _send(response: web.StreamResponse, event: bytes) -> None:
    # write() hands each event to the socket at once and waits when the buffer is full, so a
    # separate drain() (deprecated in aiohttp 3.14) is not needed to flush event by event.
    await response.write(event)


def _drop_connection(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the socket without the final chunk, so the client sees a truncated body."""
    if request.transport is not None:
        request.transport.close()
    return response


def _positive_int(value: str | None, default: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return number if number > 0 else default


def _cloudflare_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {
            "result": None,
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
        },
        status=status,
        headers=headers,
    )


def _openai_error(
    status: int,
    message: str,
    error_type: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


def _openai_invalid_key(token: str | None) -> web.Response:
    message = "You didn't provide an API key." if token is None else "Incorrect API key provided."
    return _openai_error(401, message, "invalid_request_error", "invalid_api_key")

"""A fake Cloudflare Workers AI and OpenAI upstream for tests.

The server runs its own event loop in a daemon thread and listens on a real loopback port, so
both in-process code and a separate gateway process (for example daphne) reach it over HTTP.

Sources are named as in tests/fixtures/workers-ai-rest.md ([doc] Cloudflare's documentation,
[types] its generated types, [cf-sdk] its own client code, [3p] third parties, UNVERIFIED
where no primary source was found), and [openai-python] for the openai package as pinned in
requirements.txt, by its file under openai/ (its types and docstrings are OpenAI's API
reference in code). Wording, token counts and contents that no source gives are this fake's
own and say so.

Test controls. Behaviour is chosen by substrings of the requested model name, because a
gateway running in another process can only influence the upstream through the request it
forwards. None of these switches is a behaviour of Workers AI or OpenAI: each provokes a
fault for a test, and stands in for the real failure named beside it:

    fail-500      500 whose message contains the account id, base URL and token: an
                  upstream's internal error (Workers AI's 5xx codes are UNVERIFIED; 3043
                  is the one other fakes use, workers-ai-rest.md section 1), whose message
                  the gateway must never repeat
    rate-limited  429 with ``Retry-After: 7``: Workers AI out of capacity, code 3040 ([doc]
                  platform/errors.mdx; whether it sends Retry-After is UNVERIFIED); OpenAI's
                  429, whose retry-after header the SDK reads ([openai-python]
                  _base_client.py _parse_retry_after_header)
    bad-request   400 "context too long": Workers AI's bad input, code 5006 ([3p] captures,
                  section 1); OpenAI's 400 context_length_exceeded ("The request exceeds
                  the model's context window": [openai-python]
                  types/beta/session_turn_error.py)
    unknown       400 "No such model ... or task", code 5007 ([doc] platform/errors.mdx) /
                  404 (OpenAI: the SDK's NotFoundError, [openai-python] _client.py
                  _make_status_error; the code model_not_found and the wording are this
                  fake's)
    cut-stream    streaming stops after 3 word events and the connection is dropped: a
                  stream interrupted by the network ("If the stream is interrupted ... you
                  may not receive the final usage chunk": [openai-python]
                  types/chat/chat_completion_chunk.py)
    bad-json      streaming sends 2 word events, one malformed event, then [DONE]: a
                  corrupted event; no source shows an upstream sending one
    slow          0.5 s before answering, 0.05 s between stream events: a slow model
    drip          streams a "drip" word every 0.2 s, up to 100 events: a long generation,
                  for tests that a client leaving closes the upstream (``drip_closed``,
                  ``open_streams``)
    hang          30 s before answering: an upstream that does not answer within the
                  gateway's timeout (Workers AI's own 408, code 3007 "Request timeout",
                  [doc] platform/errors.mdx, would come later if at all)
    gated         waits until the test opens the gate (``close_gate``, ``open_gate``), so
                  that requests sent together are all in flight at once; ``at_gate``
                  counts those that arrived: many slow answers at once
    no-usage      answers and streams without token counts: an answer with no usage, as
                  llama-3.1-8b-instruct's output schema has none ([doc] its catalogue
                  file) and an OpenAI stream without stream_options.include_usage sends
                  none ([openai-python] types/chat/chat_completion_chunk.py); a Llama
                  Guard verdict without usage, which its output schema allows (`usage`
                  is not required: [doc] llama-guard-3-8b's catalogue file)
    fail-500-later
                  not in a model's name but in a request's text (a prompt, a message, an
                  embedding input): 500 after SLOW_DELAY_SECONDS, so that the other calls
                  of a request split in several (a list of prompts, batches of embeddings)
                  have answered before this one fails: one call of several failing
    absurd-usage-negative, -huge, -inf
                  a hostile upstream's token counts: -1000, 10**30, infinity (ABSURD_USAGE);
                  no real service is known to send them
    cf-<code>     Workers AI's error answer with that code, as its source gives it
                  (CLOUDFLARE_CODED_ERRORS): the control is the name, the answer is sourced

Tests may also set ``upstream.schemas`` (a model's schemas instead of its catalogue file)
and ``upstream.catalogue`` (the model search's entries); ``reset()`` restores both.

Workers AI models that have a catalogue file in tests/fixtures/workers_ai_models/ (copied
from Cloudflare's docs; or a schema a test puts in ``upstream.schemas``) behave as their
file says, each behaviour citing its source beside the code (``WorkersAIModel``,
``_cloudflare_chat``):

- the body is checked against the model's input schema; a mismatch is 400, code 5006
  ("AiError: Bad input: ..."): ranges (top_k 1-50, seed >= 1, penalties 0-2 on the older
  models), fields, the response_format form, data:-only image URLs on llama-4-scout;
- ``max_tokens`` defaults to the schema's default (256 on the older models), cutting the
  answer without a word said of it in the older shape;
- the answer's shape follows the output schema (``choices``: OpenAI's chat.completion);
- gpt-oss answers ``stream: true`` with a JSON body and an empty result;
- reasoning models (catalogue ``reasoning``, with an effort to set) write
  ``reasoning_content`` first, spending the token budget;
- Chat-Completions-schema models apply ``stop``, enforce a named ``tool_choice`` and treat
  "required" as advisory; glm streams a tool call's arguments before its name;
- the older models stream digits as JSON numbers.

Other behaviour follows the request: its shapes are the services', its contents (what a
model says, which tool it calls, what a token is) this fake's:

- Cloudflare models without a file that are named with ``qwen3`` or ``gpt-oss`` answer in
  the newer OpenAI shape (``result`` is a chat.completion object, streams are
  chat.completion.chunk events: [types] section 2c names both); the others in the older
  shape (``{"response": ...}``, [types] section 2c).
- Given ``tools`` after a user (not a tool) message, the model calls the first tool (or the
  one ``tool_choice`` names) with ``{"text": <the user message>}`` (this fake's choice);
  Cloudflare's older shape sends ``arguments`` as an object with no id ([doc]
  function-calling/traditional.mdx), and streams the call in pieces ending with an empty
  one ([cf-sdk] streaming.ts emitToolCallDeltas); OpenAI's shape sends them as a JSON text
  ([openai-python] types/chat/chat_completion_message_function_tool_call.py).
- Given ``response_format`` (other than text), the answer is ``{"echo": <the message>}``:
  the object itself in Cloudflare's ``response`` ([doc] features/json-mode.mdx), a JSON
  text elsewhere. Cloudflare refuses JSON mode in a stream, as Workers AI does not stream
  it ([doc] json-mode.mdx; the 400 it answers instead is UNVERIFIED, this fake's).
- The answer echoes the last user or tool message: "Echo: <message>"; a token is a word.
- Cloudflare embedding models (``bge`` or ``embedding`` in the name) take ``{"text": ...}``,
  at most 100 texts, and answer ``{"shape": [n, dim], "data": [...]}`` with no usage
  ([types] and [doc] section 3); the OpenAI ``/embeddings`` answers with usage
  ([openai-python] types/create_embedding_response.py). Vectors come from
  ``embedding_vector(text, dimensions)``.
- OpenAI's legacy ``/completions`` ([openai-python] types/completion.py) echoes the
  prompt: "Echo: <prompt>".

Usage::

    with FakeUpstream().start() as upstream:
        httpx.post(f"{upstream.cloudflare_base_url}/accounts/acc-test-123/ai/run/@cf/x", ...)
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import random
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Self

import jsonschema_rs
from aiohttp import web

from tests import workers_ai_models

CLOUDFLARE_TOKEN = "cf-test-token"
CLOUDFLARE_ACCOUNT = "acc-test-123"
OPENAI_KEY = "oa-test-key"

# TEST CONTROLS' figures (see the module docstring): none is a service's.
RETRY_AFTER_SECONDS = 7
SLOW_DELAY_SECONDS = 0.5
SLOW_EVENT_INTERVAL_SECONDS = 0.05
DRIP_EVENT_INTERVAL_SECONDS = 0.2
DRIP_MAX_EVENTS = 100
HANG_SECONDS = 30.0
CUT_STREAM_AFTER_EVENTS = 3
BAD_JSON_AFTER_EVENTS = 2
# The model search's page size when none is asked for; the real default is UNVERIFIED
# (workers-ai-rest.md section 4).
DEFAULT_PER_PAGE = 20
# Workers AI's limit on texts in one embeddings call (`maxItems: 100`, [types] section 3).
EMBEDDING_BATCH_LIMIT = 100
# The catalogue's output_dimensions ([doc] section 3).
EMBEDDING_DIMENSIONS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
}
# Dimensions of other embedding models, Cloudflare's and OpenAI's: this fake's, small.
DEFAULT_EMBEDDING_DIMENSIONS = 16
# Cloudflare model names that answer in the newer, OpenAI-shaped format ([types] section
# 2c: qwen3-30b-a3b, gpt-oss).
OPENAI_SHAPED_MARKERS = ("qwen3", "gpt-oss")

# Handlers still sleeping (hang, drip) are cancelled after this long when the server stops, so
# stop() never waits for them to finish on their own.
SHUTDOWN_TIMEOUT_SECONDS = 0.5

# Streams end with `data: [DONE]` ([cf-sdk] streaming.ts, section 2d; [openai-python]
# _streaming.py stops there).
DONE_EVENT = b"data: [DONE]\n\n"
# TEST CONTROL bad-json's corrupted event.
MALFORMED_EVENT = b"data: {not json\n\n"

# The Cloudflare catalogue (GET .../ai/models/search). Its entries are Cloudflare's own, as
# the docs' model JSONs hold them ([doc] src/content/workers-ai-models/*.json, generated
# there from this API; copied into tests/fixtures/workers_ai_models/), without their schema,
# which GET .../ai/models/schema serves instead. A few synthetic entries follow them.

# SYNTHETIC: models with a planned_deprecation_date, which no fixture entry has. The
# property's form, {"property_id": "planned_deprecation_date", "value": "2026-05-30"}, is
# [3p] (a cloudflare-docs commit, workers-ai-rest.md section 4); the dates are relative to
# today so that one has passed (inside the grace window below) and one has not. Their
# schemas are those of the model named beside them.
RETIRED_MODEL = "@cf/test/retired"
RETIRING_MODEL = "@cf/test/retiring"
RETIRED_DAYS_AGO = 30
RETIRING_IN_DAYS = 180
SYNTHETIC_SCHEMA_OF = {
    RETIRED_MODEL: "@cf/meta/llama-3.1-8b-instruct",
    RETIRING_MODEL: "@cf/meta/llama-3.1-8b-instruct",
}
# [types] workers-ai-rest.md section 4, on include_deprecated: models past their
# planned_deprecation_date are hidden unless it is true, and then shown for a three-month
# grace window after the date; three months taken here as 90 days.
DEPRECATION_GRACE = datetime.timedelta(days=90)

# Model objects as [openai-python] types/model.py has them; the models are this fake's.
OPENAI_MODELS = [
    {"id": "gpt-test-mini", "object": "model", "created": 1700000000, "owned_by": "fake"},
    {"id": "text-embed-test", "object": "model", "created": 1700000000, "owned_by": "fake"},
]


def _synthetic_entry(
    name: str, description: str, properties: list[dict[str, Any]]
) -> dict[str, Any]:
    """A Text Generation entry shaped as the fixture entries are (SYNTHETIC, see above)."""
    like = workers_ai_models.catalogue_entry(SYNTHETIC_SCHEMA_OF[name])
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "source": 1,
        "name": name,
        "description": description,
        "task": like["task"],
        "created_at": "2024-07-23 17:00:00.000",
        "tags": [],
        "properties": [{"property_id": "context_window", "value": "8192"}, *properties],
    }


def default_catalogue() -> list[dict[str, Any]]:
    """Return a fresh copy of the catalogue: every fixture entry, then the synthetic ones."""
    today = datetime.datetime.now(datetime.UTC).date()
    retired_on = today - datetime.timedelta(days=RETIRED_DAYS_AGO)
    retiring_on = today + datetime.timedelta(days=RETIRING_IN_DAYS)
    return [
        *(workers_ai_models.catalogue_entry(name) for name in workers_ai_models.names()),
        _synthetic_entry(
            RETIRED_MODEL,
            "A model whose deprecation date has passed.",
            [{"property_id": "planned_deprecation_date", "value": retired_on.isoformat()}],
        ),
        _synthetic_entry(
            RETIRING_MODEL,
            "A model to be deprecated.",
            [{"property_id": "planned_deprecation_date", "value": retiring_on.isoformat()}],
        ),
    ]


def model_schema(name: str) -> dict[str, Any] | None:
    """Return {"input", "output"} of a catalogue model, or None if the fake knows none."""
    return workers_ai_models.schema(SYNTHETIC_SCHEMA_OF.get(name, name))


def _deprecation_date(entry: dict[str, Any]) -> datetime.date | None:
    for prop in entry.get("properties", []):
        if prop.get("property_id") == "planned_deprecation_date":
            return datetime.date.fromisoformat(str(prop["value"])[:10])
    return None


def _listed(entry: dict[str, Any], include_deprecated: bool, today: datetime.date) -> bool:
    """Whether the model search lists an entry (see DEPRECATION_GRACE)."""
    retired_on = _deprecation_date(entry)
    # [doc] cloudflare-docs src/components/models/ModelBadges.tsx marks a model "Deprecated"
    # once now is past its date (read as midnight UTC), so on the date itself.
    if retired_on is None or retired_on > today:
        return True
    return include_deprecated and today < retired_on + DEPRECATION_GRACE


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
    """A server-sent event, `data: <json>` and a blank line ([cf-sdk] streaming.ts, section
    2d; [openai-python] _streaming.py)."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _json_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _bearer_token(request: web.Request) -> str | None:
    # `Authorization: Bearer <token>` on both services ([doc] section 0; [openai-python]
    # lib/_client_auth.py).
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


# TEST CONTROL: a request whose text holds this fails with a 500, late (see the module
# docstring): one call of several failing while the others succeed.
FAIL_LATER = "fail-500-later"


async def _failed_later(body: Any) -> web.Response | None:
    """The late 500 a request whose text holds FAIL_LATER is answered with, if it does
    (TEST CONTROL; the body is OpenAI's error object, as _openai_error's)."""
    if FAIL_LATER not in json.dumps(body):
        return None
    await asyncio.sleep(SLOW_DELAY_SECONDS)
    return web.json_response(
        {"error": {"message": "Internal error", "type": "server_error"}}, status=500
    )


def _fault(model: str) -> str | None:
    """The TEST CONTROL fault a model name asks for, if any; checked before anything is
    answered (the module docstring names the real failure each stands in for)."""
    for name in ("unknown", "fail-500", "rate-limited", "bad-request"):
        if name in model:
            return name
    return None


# TEST CONTROL: a hostile upstream's fault, not a Workers AI or OpenAI behaviour: usage
# counts no real service sends (negative, beyond any context window, infinite), asked for by
# a model name holding the marker. Every count of the usage object is the marker's value.
# JSON has no infinity: Python's json writes float("inf") as Infinity, which json.loads
# reads as it reads 1e999.
ABSURD_USAGE: dict[str, int | float] = {
    "absurd-usage-negative": -1000,
    "absurd-usage-huge": 10**30,
    "absurd-usage-inf": float("inf"),
}


def _absurd_usage(model: str) -> int | float | None:
    """The count a hostile upstream reports for every token kind of this model, if any."""
    for marker, count in ABSURD_USAGE.items():
        if marker in model:
            return count
    return None


# Workers AI's error answers by code, asked for by a model name holding "cf-<code>" (the name
# is a TEST CONTROL, the answers are sourced): each is
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
    # What a reasoning model thought before answering; counted as completion tokens.
    reasoning: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return len(self.reasoning) + len(self.words)

    @property
    def reasoning_text(self) -> str:
        return " ".join(self.reasoning)

    @property
    def pieces(self) -> list[str]:
        """Words as streamed: every word but the first carries its leading space."""
        return [word if index == 0 else f" {word}" for index, word in enumerate(self.words)]

    # Prompt tokens read from the prefix cache, reported only when set (see PrefixCache).
    cached_tokens: int | None = None
    # What a hostile upstream reports instead of the counts (ABSURD_USAGE).
    absurd_count: int | float | None = None

    def usage(self) -> dict[str, Any]:
        """The usage object of both services ([types] section 2c; [openai-python]
        types/completion_usage.py), cached tokens under prompt_tokens_details."""
        if self.absurd_count is not None:
            kinds = ("prompt_tokens", "completion_tokens", "total_tokens")
            return dict.fromkeys(kinds, self.absurd_count)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


class PrefixCache:
    """Workers AI's prefix cache, as [doc] features/prompt-caching.mdx describes it.

    A request with an `x-session-affinity` header reaches the instance that served the
    earlier requests with that header; the start of its prompt that an earlier prompt there
    shares is read from the cache, and reported as `usage.prompt_tokens_details.
    cached_tokens` ([doc] prompt-caching.mdx; [cf-sdk] map-workersai-usage.ts reads it).
    Without the header a request may land anywhere: nothing is cached. A token is a word,
    and the real cache's block size is left out: every shared word counts.
    """

    def __init__(self) -> None:
        # Affinity -> the prompts (lists of words) its instance has seen.
        self._prompts: dict[str, list[list[str]]] = {}

    def cached_tokens(self, affinity: str | None, messages: list[Any]) -> int:
        """Return the cached tokens of this prompt, and keep it for later requests."""
        if not affinity:
            return 0
        words = [
            word
            for m in messages
            if isinstance(m, dict)
            for word in _content_text(m.get("content")).split()
        ]
        earlier = self._prompts.setdefault(affinity, [])
        cached = max((_shared_prefix(words, prompt) for prompt in earlier), default=0)
        earlier.append(words)
        return cached

    def clear(self) -> None:
        self._prompts.clear()


def _shared_prefix(words: list[str], other: list[str]) -> int:
    count = 0
    for mine, theirs in zip(words, other, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def _answer(
    messages: list[Any],
    max_tokens: Any,
    model: str,
    stream: bool,
    reasoning: list[str] | None = None,
) -> Answer:
    """The answer, cut at max_tokens; reasoning comes first and spends the budget first.

    Its words and counts are this fake's: it echoes, and a token is a word.
    """
    contents = [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    prompt_tokens = sum(len(text.split()) for text in contents)
    if stream and "drip" in model:
        words = ["drip"] * DRIP_MAX_EVENTS
    else:
        words = f"Echo: {_last_turn(messages)[1]}".split()
    reasoning = list(reasoning or [])
    truncated = False
    # bool is an int subclass, but "max_tokens": true is not a limit.
    is_limit = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
    if is_limit and 0 <= max_tokens < len(reasoning) + len(words):
        reasoning = reasoning[:max_tokens]
        words = words[: max_tokens - len(reasoning)]
        truncated = True
    return Answer(
        words=words,
        prompt_tokens=prompt_tokens,
        truncated=truncated,
        reasoning=reasoning,
        absurd_count=_absurd_usage(model),
    )


def _apply_stop(answer: Answer, stop: Any) -> Answer:
    """The answer up to its first stop sequence, as OpenAI applies `stop`: "The returned text
    will not contain the stop sequence" ([openai-python] types/chat/completion_create_params.py).
    The older Workers AI schemas have no `stop` (section 2a)."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    text = answer.text
    cuts = [text.find(s) for s in stops if isinstance(s, str) and s and s in text]
    if not cuts:
        return answer
    return dataclasses.replace(answer, words=text[: min(cuts)].split(), truncated=False)


def _last_turn(messages: list[Any]) -> tuple[str, str]:
    """The role and text of the last user or tool message."""
    turns = [
        (m.get("role"), _content_text(m.get("content")))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "tool")
    ]
    return turns[-1] if turns else ("user", "")


def _tool_call(body: dict[str, Any], messages: list[Any]) -> tuple[str, dict[str, str]] | None:
    """The tool the model calls and its arguments, or None if it answers with text.

    Which tool and what arguments are this fake's choice; "`none` means the model will not
    call any tool" ([openai-python] types/chat/completion_create_params.py tool_choice), and
    a named tool_choice is the one called ([cf-sdk] workers-ai-provider CHANGELOG #575).
    """
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
    # guided_json: "JSON schema that should be fulfilled for the response" (gemma-3's and
    # llama-4-scout's schemas).
    if isinstance(body.get("guided_json"), dict):
        return True
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
    """A chat.completion object, as OpenAI and Cloudflare's newer models answer ([openai-python]
    types/chat/chat_completion.py; [types] section 2c): finish_reason "length" when cut at
    max_tokens, "tool_calls" with a call, "stop" otherwise, as its docstring says."""
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
    if answer.reasoning:
        # Reasoning models answer with `reasoning_content` beside the content ([types] 2c).
        message["reasoning_content"] = answer.reasoning_text
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
    """OpenAI's streamed tool call: the name first, then the arguments in two pieces
    ([openai-python] types/chat/chat_completion_chunk.py ChoiceDeltaToolCall; [cf-sdk]
    streaming.ts emitToolCallDeltas, section 2d); two pieces are this fake's choice."""
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


def _forms(schema: Any) -> list[dict[str, Any]]:
    """The object forms of a schema's oneOf/anyOf tree (Prompt, Messages, async, Responses).

    Written apart from the gateway's own reader (completions/providers/workers_ai_schema.py)
    on purpose: a fake that imported it would share its mistakes.
    """
    if not isinstance(schema, dict):
        return []
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list):
            return [form for branch in schema[key] for form in _forms(branch)]
    return [schema] if isinstance(schema.get("properties"), dict) else []


@functools.lru_cache(maxsize=64)
def _validator(schema_text: str) -> Any:
    """A validator of a model's input schema.

    llama-3.3's docs copy gives its Async Batch form no `required`, so that every body
    would match two forms of its `oneOf` (tests/fixtures/workers_ai_models/SOURCES.md);
    as in the other models' async forms, `requests` is taken to be required.
    """
    schema = json.loads(schema_text)
    for form in _forms(schema):
        if set(form["properties"]) == {"requests"} and "required" not in form:
            form["required"] = ["requests"]
    return jsonschema_rs.validator_for(schema)


# Reasoning words a reasoning model writes before its answer, by effort. Reasoning models
# "burn the output budget on chain-of-thought unless reasoning_effort or
# chat_template_kwargs are sent" ([cf-sdk] workers-ai-provider CHANGELOG #504); the counts
# are this fake's, chosen so that the medium default outgrows a 256-token budget.
REASONING_WORDS = {"none": 0, "minimal": 2, "low": 4, "medium": 300, "high": 600, "xhigh": 900}


@dataclass
class WorkersAIModel:
    """A Workers AI model as Cloudflare's catalogue file describes it (tests/fixtures)."""

    name: str
    schema: dict[str, Any]
    properties: dict[str, Any]

    @classmethod
    def named(cls, name: str, schema: dict[str, Any] | None = None) -> WorkersAIModel | None:
        """The model's description, with `schema` standing in for its file's if given."""
        schema = schema or model_schema(name)
        if schema is None:
            return None
        return cls(name, schema, workers_ai_models.properties(name))

    def input_error(self, body: dict[str, Any]) -> str | None:
        errors = list(_validator(json.dumps(self.schema["input"])).iter_errors(body))
        return errors[0].message if errors else None

    @property
    def answers_like_openai(self) -> bool:
        """Whether answers are chat.completion objects: the output schema says so, or the
        model is one the types list as OpenAI-shaped ([types] 2c: qwen3, gpt-oss, kimi,
        glm) though its docs output schema is unspecified (gpt-oss-120b)."""
        output = json.dumps(self.schema.get("output"))
        return '"choices"' in output or any(m in self.name for m in OPENAI_SHAPED_MARKERS)

    @property
    def answers_stream_with_json(self) -> bool:
        return "gpt-oss" in self.name

    def _form(self, key: str) -> dict[str, Any]:
        for form in _forms(self.schema["input"]):
            if key in form["properties"]:
                return form["properties"]
        return {}

    def has(self, field: str, form: str = "messages") -> bool:
        return field in self._form(form)

    def default(self, field: str, form: str) -> Any:
        spec = self._form(form).get(field)
        return spec.get("default") if isinstance(spec, dict) else None

    def reasoning_words(self, body: dict[str, Any]) -> list[str]:
        """The words of the model's reasoning, for models the catalogue marks as reasoning
        and whose answers carry `reasoning_content` (the OpenAI-shaped ones: [types] 2c)."""
        if self.properties.get("reasoning") != "true" or not self.answers_like_openai:
            return []
        # A model whose effort can be set: by `reasoning_effort` in its schema (kimi, glm),
        # or its catalogue's `reasoning_effort` property (gpt-oss: {"default_effort":
        # "medium", "mandatory": true}). Others (qwen3 here) are taken not to reason.
        setting = self.properties.get("reasoning_effort")
        if not self.has("reasoning_effort") and not isinstance(setting, dict):
            return []
        default = setting.get("default_effort", "medium") if isinstance(setting, dict) else "medium"
        effort = body.get("reasoning_effort") or default
        count = REASONING_WORDS.get(effort, REASONING_WORDS["medium"])
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = [{"role": "user", "content": body.get("prompt")}]
        thought = f"Reasoning about: {_last_turn(messages)[1]}".split()
        return (thought + ["thinking"] * count)[:count]


def _native_parts(piece: str) -> list[Any]:
    """The `response` values of a native stream event for one word: a number comes as a
    JSON number, after its space ("Workers AI sometimes returns numbers instead of strings
    for the `response` field": [cf-sdk] workers-ai-provider CHANGELOG)."""
    word = piece.lstrip(" ")
    if word.isdigit() and len(word) < 16:
        return [" ", int(word)] if piece != word else [int(word)]
    return [piece]


def _text_completion(model: str, answer: Answer, include_usage: bool) -> dict[str, Any]:
    """A text_completion object ([openai-python] types/completion.py, completion_choice.py)."""
    completion: dict[str, Any] = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": answer.text,
                "logprobs": None,
                "finish_reason": "length" if answer.truncated else "stop",
            }
        ],
    }
    if include_usage:
        completion["usage"] = answer.usage()
    return completion


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.catalogue: list[dict[str, Any]] = default_catalogue()
        # Input/output schemas standing in for a model's catalogue file, by model name.
        self.schemas: dict[str, dict[str, Any]] = {}
        self.prefix_cache = PrefixCache()
        # TEST CONTROLS (see the module docstring): what the drip model tells tests, and the
        # gate of the gated model.
        # Only changed on the server's event loop thread, so reads from tests are safe enough.
        self.open_streams = 0
        self.drip_closed = threading.Event()
        # Open unless a test closes it (see "gated" above).
        self.gate = threading.Event()
        self.gate.set()
        self.at_gate = 0
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
        self.schemas.clear()
        self.prefix_cache.clear()
        self.drip_closed.clear()
        self.open_gate()
        self.at_gate = 0

    def close_gate(self) -> None:
        self.gate.clear()

    def open_gate(self) -> None:
        self.gate.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        # Workers AI's paths: [doc] section 2 (ai/run), [types] section 4 (models/search) and
        # _cloudflare_model_schema (models/schema); OpenAI's, under /openai/v1, as
        # [openai-python] resources/ (chat/completions, completions, embeddings, models)
        # post or get them.
        app = web.Application(middlewares=[self._record_and_render_http_errors])
        app.router.add_post("/client/v4/accounts/{account}/ai/run/{model:.+}", self._cloudflare_run)
        app.router.add_get(
            "/client/v4/accounts/{account}/ai/models/search", self._cloudflare_models
        )
        app.router.add_get(
            "/client/v4/accounts/{account}/ai/models/schema", self._cloudflare_model_schema
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
            # The statuses are HTTP's; code 7000 and the wording are this fake's: what
            # Cloudflare answers a path that is no route is UNVERIFIED (the nearest is [3p]
            # 7003 "Could not route to ...", section 1, CLOUDFLARE_CODED_ERRORS).
            if request.path.startswith("/client/v4"):
                return _cloudflare_error(error.status, 7000, message)
            if request.path.startswith("/openai"):
                return _openai_error(error.status, message, "invalid_request_error", None)
            return web.json_response({"error": message}, status=error.status)

    async def _wait_before_answering(self, model: str) -> None:
        """TEST CONTROLS gated, hang and slow (see the module docstring)."""
        if "gated" in model:
            with self._requests_lock:
                self.at_gate += 1
            while not self.gate.is_set():
                await asyncio.sleep(0.005)
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
        """Send an SSE stream, applying the TEST CONTROL stream faults the model name asks
        for (slow, drip, cut-stream, bad-json: see the module docstring)."""
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
        # Cloudflare's generic API code 10000 "Authentication error", on 401 and 403 ([3p]
        # section 1); which of the two a wrong account draws is this fake's choice.
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
            # 5006, Workers AI's bad input ([3p] section 1); the wording is this fake's.
            return _cloudflare_error(400, 5006, "AiError: Bad input: body must be a JSON object")
        if coded_error := _cloudflare_coded_error(model, request.match_info["account"]):
            return coded_error
        if failed := await _failed_later(body):
            return failed
        # TEST CONTROLS by name; each answer's source is in the module docstring.
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

        if (media := _cloudflare_media(model, body)) is not None:
            return media
        if _is_embedding_model(model):
            return _cloudflare_embeddings(model, body)
        return await self._cloudflare_chat(request, model, body)

    async def _cloudflare_chat(
        self, request: web.Request, model: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        """Answer a text model's /ai/run call as the model's own schemas say it would."""
        spec = WorkersAIModel.named(model, self.schemas.get(model))
        if spec is not None and (error := spec.input_error(body)):
            # Workers AI checks the body against the model's input schema and answers 400
            # with code 5006 "AiError: Bad input: ..." ([doc] platform/errors.mdx; the
            # message's wording here is the validator's, not Cloudflare's).
            return _cloudflare_error(400, 5006, f"AiError: Bad input: {error}")
        # The input is `oneOf` Prompt or Messages ([types] section 2a); a prompt is read as
        # one user message, as Workers AI wraps it in the model's chat template (2a).
        messages = body.get("messages")
        if messages is None and isinstance(body.get("prompt"), str):
            messages = [{"role": "user", "content": body["prompt"]}]
        if not isinstance(messages, list):
            # 5006 as for any bad input ([3p] section 1); the wording is this fake's.
            return _cloudflare_error(400, 5006, "AiError: Bad input: missing messages")
        # Workers AI takes images only inline: "image uri with data (e.g.
        # data:image/jpeg;base64,/9j/...). HTTP URL will not be accepted" ([types]
        # llama-3.2-11b-vision Messages; the llama-4-scout and gemma-3 fixture schemas give
        # image_url.url the pattern "^data:*"), and Cloudflare's own provider refuses URL
        # image sources ([cf-sdk] convert-to-workersai-chat-messages.ts). The wording of the
        # real schema error is not documented; 5006 is Workers AI's code for bad input.
        for index, message in enumerate(messages):
            parts = message.get("content") if isinstance(message, dict) else None
            for number, part in enumerate(parts if isinstance(parts, list) else []):
                url = (part.get("image_url") or {}).get("url") if isinstance(part, dict) else None
                if isinstance(url, str) and not url.startswith("data:"):
                    return _cloudflare_error(
                        400,
                        5006,
                        "AiError: Bad input: String does not match the pattern of "
                        f"\"^data:*\" at '/messages/{index}/content/{number}/image_url/url'",
                    )

        await self._wait_before_answering(model)
        stream = bool(body.get("stream"))
        json_mode = _wants_json(body)
        openai_shaped = (
            spec.answers_like_openai
            if spec is not None
            else any(marker in model for marker in OPENAI_SHAPED_MARKERS)
        )
        if stream and spec is not None and spec.answers_stream_with_json:
            # gpt-oss answers `stream: true` on /ai/run with a JSON body and an empty result,
            # not SSE ([cf-sdk] workers-ai-provider utils.ts createRun and its test "should
            # retry without streaming when REST returns JSON instead of SSE").
            return web.json_response({"result": {}, "success": True, "errors": [], "messages": []})
        if stream and json_mode and not openai_shaped:
            # JSON Mode does not stream ([doc] features/json-mode.mdx); what the server answers
            # is UNVERIFIED, and a 5006 is this fake's choice.
            return _cloudflare_error(400, 5006, "AiError: JSON mode does not support streaming")
        # The model's default when the body has none: 256 on the older models ([doc] each
        # model's schema, `max_tokens` default), none on the Chat-Completions-schema ones.
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is None and spec is not None:
            max_tokens = spec.default("max_tokens", "prompt" if "prompt" in body else "messages")
        reasoning = spec.reasoning_words(body) if spec is not None else []
        answer = _answer(messages, max_tokens, model, stream, reasoning)
        if spec is not None and spec.has("stop") and body.get("stop"):
            # Chat-Completions-schema models take OpenAI's `stop` ([doc] kimi-k2.6.json).
            answer = _apply_stop(answer, body["stop"])
        tool = _tool_call(body, messages)
        if tool is not None and spec is not None and spec.has("tool_choice"):
            choice = body.get("tool_choice")
            if choice == "required":
                # "required" is advisory on these models and fails open ([cf-sdk]
                # workers-ai-provider CHANGELOG #575): this fake answers with text.
                tool = None
        # TEST CONTROL no-usage (see the module docstring).
        with_usage = "no-usage" not in model
        if openai_shaped:
            answer.cached_tokens = self.prefix_cache.cached_tokens(
                request.headers.get("x-session-affinity"), messages
            )
        if not stream:
            if openai_shaped and "prompt" in body:
                # A prompt to these models is answered with a text_completion ([types] qwen3).
                result = _text_completion(model, answer, with_usage)
            elif openai_shaped:
                result = _openai_completion(model, answer, tool, json_mode, with_usage)
            else:
                result = _cloudflare_result(answer, tool, json_mode, with_usage)
            return web.json_response(
                {"result": result, "success": True, "errors": [], "messages": []}
            )
        if openai_shaped:
            return await self._openai_stream(
                request,
                model,
                answer,
                tool,
                with_usage,
                json_mode,
                # Some models stream tool-call argument pieces before the piece that names
                # the function (cloudflare/ai issue #523, fix #572; the issue names no model:
                # glm is this fake's choice).
                arguments_first="glm" in model,
            )
        if tool is not None:
            name, arguments = tool
            pieces = _tool_call_pieces(name, arguments)
            # Workers AI ends a streamed call with an empty piece ([cf-sdk] streaming.ts
            # emitToolCallDeltas).
            pieces.append({"id": None, "type": None, "function": {"name": None}})
            word_events = [_sse({"response": "", "tool_calls": [piece]}) for piece in pieces]
        else:
            # Native events: `response` pieces with `p` padding ([3p] captures, section 2d),
            # then one with usage and an empty response.
            word_events = [
                _sse({"response": part, "p": "abc"})
                for piece in answer.pieces
                for part in _native_parts(piece)
            ]
        closing = [_sse({"response": "", "usage": answer.usage()})] if with_usage else []
        return await self._stream(
            request, model, opening=[], word_events=word_events, closing=closing
        )

    async def _cloudflare_models(self, request: web.Request) -> web.Response:
        if auth_error := self._cloudflare_auth_error(request):
            return auth_error
        # [types] cloudflare-typescript pagination.ts V4PagePaginationArrayParams: page and
        # per_page; the default and largest per_page are UNVERIFIED.
        page = _positive_int(request.query.get("page"), 1)
        per_page = _positive_int(request.query.get("per_page"), DEFAULT_PER_PAGE)
        models = self.catalogue
        # [types] models.ts ModelListParams.task: "Filter by Task Name".
        if task := request.query.get("task"):
            models = [
                m for m in models if m.get("task", {}).get("name", "").lower() == task.lower()
            ]
        # [types] models.ts include_deprecated, false unless given (see DEPRECATION_GRACE);
        # the SDKs send a boolean query parameter as "true".
        include_deprecated = request.query.get("include_deprecated") == "true"
        today = datetime.datetime.now(datetime.UTC).date()
        models = [m for m in models if _listed(m, include_deprecated, today)]
        start = (page - 1) * per_page
        page_models = copy.deepcopy(models[start : start + per_page])
        # [types] pagination.ts: an array `result`, and `result_info` with page and per_page;
        # the SDK reads the next page until one comes back empty. count and total_count are
        # the v4 API's usual fields but UNVERIFIED here, so the gateway must not need them.
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

    async def _cloudflare_model_schema(self, request: web.Request) -> web.Response:
        if auth_error := self._cloudflare_auth_error(request):
            return auth_error
        # [types] cloudflare-typescript models/schema.ts Schema.get (cloudflare-python
        # resources/ai/models/schema.py): GET .../ai/models/schema?model=<name>, answering
        # the envelope whose `result` is SchemaGetResponse {input, output}, the two JSON
        # Schemas, as the fixture entries' `schema` holds them.
        name = request.query.get("model", "")
        if _fault(name) == "fail-500":
            # TEST CONTROL fail-500 (see the module docstring), in the [doc] envelope.
            return _cloudflare_error(500, 3043, "Internal server error")
        schema = model_schema(name)
        if schema is None:
            # A belief, UNVERIFIED for this endpoint: 404 with code 3042 "Invalid model ID",
            # as [doc] platform/errors.mdx gives for a model id that /ai/run does not know.
            return _cloudflare_error(404, 3042, f"Invalid model ID: {name}")
        return web.json_response({"result": schema, "success": True, "errors": [], "messages": []})

    # OpenAI

    def _openai_fault(self, model: str) -> web.Response | None:
        """OpenAI's answer to a TEST CONTROL fault: the error object ([openai-python]
        _client.py reads `error`, _exceptions.py its message, type, param and code) with
        the SDK's statuses; types other than those the SDK lists and the wording are this
        fake's."""
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
            # `messages` is required ([openai-python] types/chat/completion_create_params.py);
            # the wording is this fake's.
            return _openai_error(
                400, "'messages' is a required property", "invalid_request_error", None
            )
        model = str(body.get("model", ""))
        if fault_response := self._openai_fault(model) or await _failed_later(body):
            return fault_response

        await self._wait_before_answering(model)
        stream = bool(body.get("stream"))
        # max_tokens "is now deprecated in favor of `max_completion_tokens`" ([openai-python]
        # types/chat/completion_create_params.py): the newer one wins.
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        answer = _apply_stop(_answer(body["messages"], max_tokens, model, stream), body.get("stop"))
        tool = _tool_call(body, body["messages"])
        with_usage = "no-usage" not in model
        if not stream:
            return web.json_response(
                _openai_completion(model, answer, tool, _wants_json(body), with_usage)
            )
        # Usage in a stream only when stream_options.include_usage asks for it
        # ([openai-python] types/chat/chat_completion_stream_options_param.py).
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
        arguments_first: bool = False,
    ) -> web.StreamResponse:
        """Stream chat.completion.chunk events, as OpenAI and Cloudflare's newer models do
        ([openai-python] types/chat/chat_completion_chunk.py; [types] section 2d): a first
        chunk with the assistant's role, the deltas, one with the finish reason, and with
        include_usage a last chunk whose `choices` is empty and `usage` set
        ([openai-python] types/chat/chat_completion_stream_options_param.py).

        With arguments_first, a tool call's argument pieces come before the piece that
        names its function (see _cloudflare_chat).
        """
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
            # "All other chunks will also include a `usage` field, but with a null value"
            # ([openai-python] types/chat/chat_completion_stream_options_param.py).
            if include_usage:
                payload["usage"] = usage
            return _sse(payload)

        def delta(content: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}
            return chunk([choice])

        # `delta.reasoning_content` carries reasoning, before the content ([types] 2d).
        reasoning_events = [
            delta({"reasoning_content": word if index == 0 else f" {word}"})
            for index, word in enumerate(answer.reasoning)
        ]
        if tool is not None:
            pieces = _tool_call_pieces(*tool)
            if arguments_first:
                named, *rest = pieces
                named_without_arguments = {
                    **named,
                    "function": {"name": named["function"]["name"]},
                }
                pieces = [*rest, named_without_arguments]
            word_events = [delta({"tool_calls": [piece]}) for piece in pieces]
            finish_reason = "tool_calls"
        elif json_mode:
            word_events = [delta({"content": json.dumps({"echo": _json_text(answer)})})]
            finish_reason = "stop"
        else:
            word_events = [delta({"content": piece}) for piece in answer.pieces]
            finish_reason = "length" if answer.truncated else "stop"
        word_events = reasoning_events + word_events
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
        # OpenAI's legacy completions ([openai-python] types/completion.py,
        # completion_choice.py, completion_create_params.py); a prompt that is not one
        # string (a list, token ids) is refused here, the wording this fake's.
        body = _json_body(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return _openai_error(
                400, "'prompt' must be a string here", "invalid_request_error", None
            )
        model = str(body.get("model", ""))
        if fault_response := self._openai_fault(model) or await _failed_later(body):
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
        # `input`: a string or an array of strings (token arrays are refused here, this
        # fake's wording); `dimensions` shortens the vectors ([openai-python]
        # types/embedding_create_params.py). The answer: [openai-python]
        # types/create_embedding_response.py and embedding.py.
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
        if fault_response := self._openai_fault(model) or await _failed_later(body):
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
        # A list page: `object` "list" and `data` ([openai-python] pagination.py SyncPage).
        return web.json_response({"object": "list", "data": copy.deepcopy(OPENAI_MODELS)})


def _cloudflare_result(
    answer: Answer, tool: tuple[str, dict[str, str]] | None, json_mode: bool, with_usage: bool
) -> dict[str, Any]:
    """The older shape of Workers AI's result ([types] section 2c): `response`, `usage`,
    and `tool_calls` whose arguments are an object, with no id ([doc]
    function-calling/traditional.mdx); in JSON mode `response` is the object itself ([doc]
    json-mode.mdx). `response` null beside tool calls is this fake's choice."""
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
    """Workers AI's embeddings ([types], [doc] section 3): `text` a string or at most 100
    strings; `{"shape", "data", "pooling"}` with no usage. The errors' wording is this
    fake's, their code 5006 Workers AI's bad input ([3p] section 1)."""
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


# Media tasks: images, speech recognition, text-to-speech, Llama Guard, the reranker.
#
# Each model answers as workers-ai-rest.md section 6 and its catalogue file's schemas say
# ([doc] for the formats; the contents are this fake's): its body is checked against its
# input schema first (400, code 5006, as for text models), then answered by its task.
#
#   Text-to-Image   an output schema of contentType image/png (SDXL) answers a bare PNG
#                   (1x1, made below); flux answers {"image": base64 JPEG}.
#   Speech          the fake "hears" the audio's bytes as UTF-8 text; whisper answers
#   recognition     {text, word_count, words, vtt}, whisper-large-v3-turbo {text,
#                   word_count, segments: [{start, end, text, words}], transcription_info:
#                   {language, duration}, vtt}; task "translate" prefixes "English: ".
#                   Each word lasts WORD_SECONDS.
#   Text-to-speech  melotts {"audio": base64 MP3} (its output's first form); aura-1 bare
#                   audio, audio/mpeg unless `encoding` asks otherwise.
#   Llama Guard     "unsafe" with S1 for a text with "kill", S10 for one with "hate", else
#                   "safe"; {safe, categories} in JSON mode, "unsafe\nS1" text otherwise,
#                   with usage (a token is a word) unless TEST CONTROL no-usage.
#   Reranker        {response: [{id, score}]}, best first, cut at top_k; a score is the share
#                   of the query's words found in the context.

WORD_SECONDS = 0.5
# Llama Guard 3's verdict for a text holding each word, by this fake's rule.
HAZARD_WORDS = {"kill": "S1", "hate": "S10"}
# Deepgram's encodings on aura-1 and the content types they are answered with.
AURA_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "linear16": "audio/wav",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def tiny_png() -> bytes:
    """A valid 1x1 white PNG (8-bit grayscale)."""
    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    # One scanline: filter byte 0, then one white pixel.
    pixels = zlib.compress(b"\x00\xff")
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


# A JPEG's start-of-image, JFIF header and end-of-image markers, without a scan: told
# apart as a JPEG by its first bytes, not meant to be decoded.
TINY_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def tiny_mp3(frames: int = 3) -> bytes:
    """Silent MPEG-1 Layer III frames: 128 kbit/s, 44.1 kHz, 417 bytes each."""
    header = b"\xff\xfb\x90\x64"
    return (header + bytes(417 - len(header))) * frames


def _media_task(model: str) -> str | None:
    entry = workers_ai_models.entry(model)
    return entry["task"]["name"] if entry is not None else None


def _cloudflare_media(model: str, body: dict[str, Any]) -> web.StreamResponse | None:
    """Answer a media model's /ai/run call, or None if `model` is not one."""
    task = _media_task(model)
    guard = "llama-guard" in model
    if task not in ("Text-to-Image", "Automatic Speech Recognition", "Text-to-Speech") and not (
        guard or (task == "Text Classification" and "reranker" in model)
    ):
        return None
    spec = WorkersAIModel.named(model)
    if spec is not None and (error := spec.input_error(body)):
        return _cloudflare_error(400, 5006, f"AiError: Bad input: {error}")
    if guard:
        return _cloudflare_ok(_llama_guard(body, with_usage="no-usage" not in model))
    if task == "Text-to-Image":
        if (spec.schema.get("output") or {}).get("contentType") == "image/png":
            return web.Response(body=tiny_png(), content_type="image/png")
        return _cloudflare_ok({"image": base64.b64encode(TINY_JPEG).decode()})
    if task == "Automatic Speech Recognition":
        return _cloudflare_ok(_heard(body, segmented="segments" in json.dumps(spec.schema)))
    if task == "Text-to-Speech":
        if "prompt" in body:
            return _cloudflare_ok({"audio": base64.b64encode(tiny_mp3()).decode()})
        encoding = body.get("encoding", "mp3")
        content_type = AURA_CONTENT_TYPES.get(encoding, "application/octet-stream")
        return web.Response(body=tiny_mp3(), content_type=content_type)
    return _cloudflare_ok(_ranked(body))


def _cloudflare_ok(result: dict[str, Any]) -> web.Response:
    # Workers AI's success envelope ([doc], [types] section 1).
    return web.json_response({"result": result, "success": True, "errors": [], "messages": []})


def _heard(body: dict[str, Any], segmented: bool) -> dict[str, Any]:
    audio = body["audio"]
    raw = bytes(audio) if isinstance(audio, list) else base64.b64decode(audio)
    text = raw.decode("utf-8", errors="replace").strip()
    if body.get("task") == "translate":
        text = f"English: {text}"
    words = [
        {"word": word, "start": n * WORD_SECONDS, "end": (n + 1) * WORD_SECONDS}
        for n, word in enumerate(text.split())
    ]
    duration = len(words) * WORD_SECONDS
    vtt = f"WEBVTT\n\n00:00:00.000 --> 00:00:{duration:06.3f}\n{text}\n"
    if not segmented:
        return {"text": text, "word_count": len(words), "words": words, "vtt": vtt}
    return {
        "text": text,
        "word_count": len(words),
        "segments": [{"start": 0.0, "end": duration, "text": text, "words": words}],
        "transcription_info": {"language": body.get("language", "en"), "duration": duration},
        "vtt": vtt,
    }


def _llama_guard(body: dict[str, Any], with_usage: bool) -> dict[str, Any]:
    text = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    categories = [code for word, code in HAZARD_WORDS.items() if word in text.lower()]
    if isinstance(body.get("response_format"), dict):
        response: Any = {"safe": not categories, "categories": categories}
    else:
        response = "unsafe\n" + ",".join(categories) if categories else "safe"
    if not with_usage:
        # TEST CONTROL no-usage (see the module docstring).
        return {"response": response}
    words = len(text.split())
    return {
        "response": response,
        "usage": {"prompt_tokens": words, "completion_tokens": 2, "total_tokens": words + 2},
    }


def _ranked(body: dict[str, Any]) -> dict[str, Any]:
    query = set(body["query"].lower().split())
    scores = []
    for index, context in enumerate(body["contexts"]):
        words = set(str(context.get("text", "")).lower().split())
        scores.append({"id": index, "score": len(query & words) / len(query)})
    scores.sort(key=lambda item: item["score"], reverse=True)
    return {"response": scores[: body.get("top_k") or len(scores)]}


async def _send(response: web.StreamResponse, event: bytes) -> None:
    # write() hands each event to the socket at once and waits when the buffer is full, so a
    # separate drain() (deprecated in aiohttp 3.14) is not needed to flush event by event.
    await response.write(event)


def _drop_connection(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the socket without the final chunk, so the client sees a truncated body
    (TEST CONTROL cut-stream)."""
    if request.transport is not None:
        request.transport.close()
    return response


def _positive_int(value: str | None, default: int) -> int:
    # A page number that is not a positive integer is read as the default: this fake's
    # choice, what Cloudflare answers is UNVERIFIED.
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return number if number > 0 else default


def _cloudflare_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Workers AI's error envelope ([doc] section 1). `result` is null, as other fakes send
    it; the [3p] captures show {}, and the gateway reads `errors`."""
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
    """OpenAI's error object under `error` ([openai-python] _client.py _make_status_error,
    _exceptions.py APIError)."""
    return web.json_response(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


def _openai_invalid_key(token: str | None) -> web.Response:
    # 401, the SDK's AuthenticationError ([openai-python] _client.py _make_status_error);
    # the code and wording are this fake's.
    message = "You didn't provide an API key." if token is None else "Incorrect API key provided."
    return _openai_error(401, message, "invalid_request_error", "invalid_api_key")

"""Workers AI as Cloudflare describes it: each model's own schema drives the request.

The models here carry the input schema of their catalogue file (tests/fixtures), as
`sync_models` stores it, and the fake upstream checks every body against the same schema
and answers as the model's output schema says (see WorkersAIModel in tests/fake_upstream.py).
"""

import json

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model
from tests import workers_ai_models

pytestmark = pytest.mark.django_db(transaction=True)

LLAMA_31 = "@cf/meta/llama-3.1-8b-instruct"
LLAMA_33 = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
GPT_OSS = "@cf/openai/gpt-oss-120b"
KIMI = "@cf/moonshotai/kimi-k2.6"
GLM = "@cf/zai-org/glm-4.7-flash"
GEMMA = "@cf/google/gemma-3-12b-it"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The city."}},
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now.",
        "parameters": {"type": "object", "properties": {}},
    },
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string"}},
    "required": ["echo"],
}


@pytest.fixture
def workers_ai(cloudflare):
    """Return a function that adds a Workers AI model with its catalogue file's schema."""

    def add(name, schema=None):
        properties = workers_ai_models.properties(name)
        model, _ = Model.objects.update_or_create(
            name=name,
            defaults={
                "provider": cloudflare,
                "input_schema": (schema or workers_ai_models.schema(name))["input"],
                "output_schema": workers_ai_models.schema(name)["output"],
                "properties": properties,
                "context_window": int(properties["context_window"])
                if "context_window" in properties
                else None,
            },
        )
        return model

    return add


async def _post(api, persona, path="/v1/chat/completions", **body):
    body.setdefault("messages", [{"role": "user", "content": "hello there"}])
    return await api.post(path, data=body, content_type="application/json", headers=persona.headers)


def _sent(upstream):
    [sent] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    return sent["json"]


async def _stream(api, persona, **body):
    response = await _post(api, persona, stream=True, **body)
    assert response.status_code == 200
    chunks = []
    async for part in response.streaming_content:
        chunks.append(part)
    text = b"".join(chunks).decode()
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def _streamed_text(events, field="content"):
    return "".join(e["choices"][0]["delta"].get(field) or "" for e in events if e.get("choices"))


@sync_to_async
def _record():
    return UsageRecord.objects.get()


# 1. Length is honest.


async def test_it_gives_an_older_model_a_whole_long_answer_when_the_client_sends_no_max_tokens(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(LLAMA_31)
    words = " ".join(f"w{i}" for i in range(300))

    response = await _post(
        api, alice, model=LLAMA_31, messages=[{"role": "user", "content": words}]
    )

    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == f"Echo: {words}"
    assert choice["finish_reason"] == "stop"


async def test_it_says_length_when_the_answer_stops_at_the_gateways_default(
    api, alice, workers_ai, upstream, settings
):
    settings.DEFAULT_MAX_TOKENS = 3
    await sync_to_async(workers_ai)(LLAMA_31)

    response = await _post(api, alice, model=LLAMA_31)
    events = await _stream(api, alice, model=LLAMA_31)

    assert response.json()["choices"][0]["finish_reason"] == "length"
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello there"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "length"


async def test_it_bounds_its_default_by_what_the_context_window_leaves(
    api, alice, workers_ai, upstream, settings
):
    model = await sync_to_async(workers_ai)(LLAMA_33)
    model.context_window = 1000
    await model.asave()

    await _post(api, alice, model=LLAMA_33, messages=[{"role": "user", "content": "x" * 2000}])

    # 2000 characters are about 500 tokens of prompt, and a chat template's 32 that
    # admission allows for: 468 are left of the window.
    assert _sent(upstream)["max_tokens"] == 1000 - 500 - 32


def _with_max_tokens_maximum(schema, maximum):
    """Return a copy of a model's schema whose max_tokens fields allow at most `maximum`."""
    if isinstance(schema, dict):
        return {
            name: {**value, "maximum": maximum}
            if name == "max_tokens" and isinstance(value, dict)
            else _with_max_tokens_maximum(value, maximum)
            for name, value in schema.items()
        }
    if isinstance(schema, list):
        return [_with_max_tokens_maximum(value, maximum) for value in schema]
    return schema


async def test_a_models_own_default_bound_keeps_within_its_schemas_maximum(
    api, alice, workers_ai, upstream
):
    # A schema with a maximum for max_tokens: the gateway's own bound keeps within it
    # rather than being refused as if the client had asked for more.
    schema = _with_max_tokens_maximum(workers_ai_models.schema(LLAMA_33), 1000)
    model = await sync_to_async(workers_ai)(LLAMA_33, schema=schema)
    model.default_max_tokens = 5000
    await model.asave()

    response = await _post(api, alice, model=LLAMA_33)

    assert response.status_code == 200
    assert _sent(upstream)["max_tokens"] == 1000


# 2. Streams that aren't.


async def test_it_streams_gpt_oss_which_answers_a_stream_with_json(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(GPT_OSS)

    events = await _stream(api, alice, model=GPT_OSS, stream_options={"include_usage": True})

    assert _streamed_text(events) == "Echo: hello there"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["usage"]["completion_tokens"] > 0
    # Asked with streaming, then again without, as Cloudflare's own provider does.
    streamed = [r["json"]["stream"] for r in upstream.requests if "/ai/run/" in r["path"]]
    assert streamed == [True, False]


# 3. Structured output in each model's form.


@pytest.mark.parametrize("name", [LLAMA_33, KIMI, GEMMA])
async def test_it_holds_a_model_to_a_json_schema_in_the_form_it_takes(
    api, alice, workers_ai, upstream, name
):
    await sync_to_async(workers_ai)(name)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
    }

    response = await _post(api, alice, model=name, response_format=response_format)

    assert response.status_code == 200, response.json()
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {
        "echo": "hello there"
    }
    sent = _sent(upstream)
    if name == KIMI:
        assert sent["response_format"] == response_format
    elif name == GEMMA:
        assert sent["guided_json"] == ANSWER_SCHEMA
    else:
        assert sent["response_format"] == {"type": "json_schema", "json_schema": ANSWER_SCHEMA}


async def test_it_refuses_a_json_schema_for_a_model_that_takes_none(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(LLAMA_31)

    response = await _post(api, alice, model=LLAMA_31, response_format={"type": "json_object"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format"
    assert not upstream.requests


# 4. Tool-call fragments and numbers.


async def test_it_streams_a_tool_call_whose_arguments_come_before_its_name_whole(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(GLM)

    events = await _stream(
        api, alice, model=GLM, tools=[WEATHER], messages=[{"role": "user", "content": "Paris"}]
    )

    pieces = [
        call
        for e in events
        if e.get("choices")
        for call in e["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert pieces[0]["function"]["name"] == "get_weather"
    arguments = "".join(p["function"].get("arguments") or "" for p in pieces)
    assert json.loads(arguments) == {"text": "Paris"}


async def test_it_keeps_the_digits_an_older_model_streams_as_numbers(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(LLAMA_31)

    events = await _stream(
        api, alice, model=LLAMA_31, messages=[{"role": "user", "content": "42 apples and 7"}]
    )

    assert _streamed_text(events) == "Echo: 42 apples and 7"


# 5. A named tool on a newer model.


async def test_it_calls_the_named_tool_on_a_model_that_enforces_tool_choice(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(KIMI)
    choice = {"type": "function", "function": {"name": "get_time"}}

    response = await _post(api, alice, model=KIMI, tools=[WEATHER, TIME], tool_choice=choice)

    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    assert _sent(upstream)["tool_choice"] == choice


# 6. Reasoning models.


async def test_it_returns_the_reasoning_and_a_whole_answer_of_gpt_oss(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(GPT_OSS)

    response = await _post(api, alice, model=GPT_OSS)

    message = response.json()["choices"][0]["message"]
    assert message["content"] == "Echo: hello there"
    assert message["reasoning_content"].startswith("Reasoning about: hello there thinking")
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def test_it_sends_reasoning_effort_and_streams_the_reasoning(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(KIMI)

    events = await _stream(api, alice, model=KIMI, reasoning_effort="low")

    assert _sent(upstream)["reasoning_effort"] == "low"
    # Low effort: four words of reasoning.
    assert _streamed_text(events, "reasoning_content") == "Reasoning about: hello there"
    assert _streamed_text(events) == "Echo: hello there"


async def test_it_drops_reasoning_effort_for_a_model_without_it(api, alice, workers_ai, upstream):
    await sync_to_async(workers_ai)(LLAMA_31)

    response = await _post(api, alice, model=LLAMA_31, reasoning_effort="high")

    assert response.status_code == 200
    assert "reasoning_effort" not in _sent(upstream)


# 7. Ranges by model.


@pytest.mark.parametrize(
    ("name", "param", "value"),
    [
        (LLAMA_31, "top_k", 99),
        (LLAMA_31, "seed", 0),
        (LLAMA_31, "presence_penalty", -1.0),
        (LLAMA_31, "frequency_penalty", -0.5),
        (KIMI, "top_k", 5),
    ],
)
async def test_it_refuses_a_parameter_the_model_does_not_take_naming_it(
    api, alice, workers_ai, upstream, name, param, value
):
    await sync_to_async(workers_ai)(name)

    response = await _post(api, alice, model=name, **{param: value})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert name in response.json()["error"]["message"]
    assert not upstream.requests


async def test_it_passes_a_parameter_in_the_models_range(api, alice, workers_ai, upstream):
    await sync_to_async(workers_ai)(KIMI)

    response = await _post(api, alice, model=KIMI, presence_penalty=-1.0, seed=0)

    assert response.status_code == 200
    assert _sent(upstream)["presence_penalty"] == -1.0


# 11. Legacy completions and stop.


async def test_it_completes_a_prompt_on_a_model_that_takes_messages_only(
    api, alice, workers_ai, upstream
):
    # gpt-oss as Cloudflare's generated types describe it: XOR<ResponsesInput,
    # ChatCompletionsMessagesInput>, no prompt ([types] Base_Ai_Cf_Openai_Gpt_Oss_120B).
    schema = workers_ai_models.schema(GPT_OSS)
    [chat_forms, *others] = schema["input"]["oneOf"]
    chat_forms["oneOf"] = [f for f in chat_forms["oneOf"] if "prompt" not in f["properties"]]
    upstream.schemas[GPT_OSS] = schema
    await sync_to_async(workers_ai)(GPT_OSS, schema)

    # Enough tokens for its reasoning, which comes first.
    response = await _post(
        api, alice, "/v1/completions", model=GPT_OSS, prompt="Say this", max_tokens=1000
    )

    assert response.status_code == 200, response.json()
    assert response.json()["choices"][0]["text"] == "Echo: Say this"
    assert _sent(upstream)["messages"] == [{"role": "user", "content": "Say this"}]


async def test_it_lets_a_model_that_takes_stop_apply_it_and_bills_what_it_generated(
    api, alice, workers_ai, upstream
):
    await sync_to_async(workers_ai)(GLM)

    response = await _post(
        api,
        alice,
        model=GLM,
        stop=["three"],
        reasoning_effort="low",
        messages=[{"role": "user", "content": "one two three four five"}],
    )

    assert _sent(upstream)["stop"] == ["three"]
    assert response.json()["choices"][0]["message"]["content"] == "Echo: one two"
    record = await _record()
    # Four words of low-effort reasoning, then the answer up to its stop.
    assert record.completion_tokens == 4 + 3


async def test_it_sends_an_older_vision_model_its_image_as_bytes(api, alice, workers_ai, upstream):
    # llama-3.2-11b-vision takes content as a string and the image as a top-level byte
    # array (its schema), not as image_url parts.
    vision = "@cf/meta/llama-3.2-11b-vision-instruct"
    model = await sync_to_async(workers_ai)(vision)
    model.accepts_images = True
    await model.asave()
    png = "iVBORw0KGgo="  # the PNG signature
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]

    response = await _post(
        api, alice, model=vision, messages=[{"role": "user", "content": content}]
    )

    assert response.status_code == 200, response.json()
    sent = _sent(upstream)
    assert sent["image"] == [137, 80, 78, 71, 13, 10, 26, 10]
    assert sent["messages"] == [{"role": "user", "content": "what is this?"}]

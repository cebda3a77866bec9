"""The official openai SDK against daphne and Workers AI models served from their schemas."""

import json

import openai
import pytest

from tests.integration.conftest import GLM, GPT_OSS, KIMI, SCHEMA_LLAMA

pytestmark = pytest.mark.integration

ECHO_SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string"}},
    "required": ["echo"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name}.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string", "description": "What to look up."}},
            },
        },
    }
    for name in ("get_weather", "get_time")
]


def _user(text):
    return [{"role": "user", "content": text}]


def test_a_long_answer_without_max_tokens_is_whole(client):
    words = " ".join(f"w{i}" for i in range(300))

    completion = client.chat.completions.create(model=SCHEMA_LLAMA, messages=_user(words))

    assert completion.choices[0].message.content == f"Echo: {words}"
    assert completion.choices[0].finish_reason == "stop"


def test_gpt_oss_streams(client):
    stream = client.chat.completions.create(
        model=GPT_OSS,
        messages=_user("stream please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream please"
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", [SCHEMA_LLAMA, KIMI])
def test_json_schema_works_on_an_older_and_a_newer_model(client, model):
    completion = client.chat.completions.create(
        model=model,
        messages=_user("structured"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "echo", "schema": ECHO_SCHEMA, "strict": True},
        },
    )

    assert json.loads(completion.choices[0].message.content) == {"echo": "structured"}


def test_a_streamed_tool_call_whose_arguments_come_first_reaches_the_sdk_whole(client):
    stream = client.chat.completions.create(
        model=GLM, messages=_user("Paris"), tools=TOOLS[:1], stream=True
    )
    calls = {}
    for chunk in stream:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(piece.index, {"name": "", "arguments": ""})
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""

    assert calls == {0: {"name": "get_weather", "arguments": json.dumps({"text": "Paris"})}}


def test_a_named_tool_is_called_on_a_newer_model(client):
    completion = client.chat.completions.create(
        model=KIMI,
        messages=_user("what time is it"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )

    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "get_time"


def test_an_out_of_range_parameter_gets_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=SCHEMA_LLAMA, messages=_user("hi"), extra_body={"top_k": 500}
        )

    assert raised.value.status_code == 400
    assert raised.value.body["param"] == "top_k"


def test_reasoning_comes_back_beside_the_answer(client):
    completion = client.chat.completions.create(model=GPT_OSS, messages=_user("think"))

    message = completion.choices[0].message
    assert message.content == "Echo: think"
    assert message.model_extra["reasoning_content"].startswith("Reasoning about: think")


def test_legacy_completions_work_on_gpt_oss(client):
    completion = client.completions.create(model=GPT_OSS, prompt="Say this", max_tokens=1000)

    assert completion.choices[0].text == "Echo: Say this"

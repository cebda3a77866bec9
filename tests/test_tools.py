"""Tool calling: OpenAI's tools, tool_choice, tool_calls and tool messages, to Workers AI and back.

What a client gets back is checked for every provider kind in tests/contract/; these are
the mappings on the way to the upstream, and the validation on the way in.
"""

import json

import pytest

from completions.providers.base import ToolCallPieces, whole_tool_calls
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

USER = {"role": "user", "content": "weather in Paris?"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
# The same tools as Workers AI's schemas require them: a description on the function and
# on each parameter, and parameters with type and properties (llama-3.1-8b-instruct.json).
WORKERS_AI_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": ""}},
        },
    },
}
WORKERS_AI_TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "",
        "parameters": {"type": "object", "properties": {}},
    },
}
CALL = {
    "id": "call_abc",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


async def _chat(api, persona, **body):
    body.setdefault("model", LLAMA)
    body.setdefault("messages", [USER])
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=persona.headers
    )


def _sent(upstream):
    [sent] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    return sent["json"]


async def test_it_sends_workers_ai_the_tools_in_openais_shape(api, alice, cloudflare, upstream):
    await _chat(api, alice, tools=[WEATHER, TIME])

    sent = _sent(upstream)
    assert sent["tools"] == [WORKERS_AI_WEATHER, WORKERS_AI_TIME]
    assert "tool_choice" not in sent


async def test_it_sends_required_tool_choice(api, alice, cloudflare, upstream):
    await _chat(api, alice, tools=[WEATHER, TIME], tool_choice="required")

    assert _sent(upstream)["tool_choice"] == "required"


async def test_it_sends_only_the_named_tool_as_required(api, alice, cloudflare, upstream):
    await _chat(
        api,
        alice,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )

    sent = _sent(upstream)
    assert sent["tools"] == [WORKERS_AI_TIME]
    assert sent["tool_choice"] == "required"


async def test_it_sends_no_tools_when_tool_choice_is_none(api, alice, cloudflare, upstream):
    response = await _chat(api, alice, tools=[WEATHER], tool_choice="none")

    assert "tools" not in _sent(upstream)
    assert response.json()["choices"][0]["message"]["content"] == "Echo: weather in Paris?"


async def test_it_maps_the_assistants_calls_and_the_tool_results(api, alice, cloudflare, upstream):
    messages = [
        {"role": "developer", "content": "Use tools."},
        USER,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny, 21 C"},
    ]

    response = await _chat(api, alice, messages=messages, tools=[WEATHER])

    assert response.status_code == 200
    assert _sent(upstream)["messages"] == [
        # Workers AI has no developer role: it is the system role of newer models.
        {"role": "system", "content": "Use tools."},
        USER,
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "call_abc"},
    ]
    assert response.json()["choices"][0]["message"]["content"] == "Echo: Sunny, 21 C"


async def test_it_passes_tools_through_to_an_openai_compatible_server(
    api, alice, openai_upstream, upstream
):
    choice = {"type": "function", "function": {"name": "get_time"}}

    response = await _chat(
        api,
        alice,
        model="gpt-test-mini",
        tools=[WEATHER, TIME],
        tool_choice=choice,
        parallel_tool_calls=False,
    )

    [sent] = [r for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert sent["json"]["tools"] == [WEATHER, TIME]
    assert sent["json"]["tool_choice"] == choice
    assert sent["json"]["parallel_tool_calls"] is False
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"


async def test_it_records_the_usage_of_a_tool_call(api, alice, cloudflare):
    response = await _chat(api, alice, tools=[WEATHER])

    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert response.json()["usage"]["prompt_tokens"] == 3


def test_workers_ai_calls_with_object_arguments_become_json_strings():
    calls = whole_tool_calls(
        [
            {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}},
            {"name": "get_time", "arguments": '{"zone": "CET"}'},
            {"name": "no_arguments"},
        ]
    )

    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time", "no_arguments"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "days": 2}
    assert calls[1]["function"]["arguments"] == '{"zone": "CET"}'
    assert calls[2]["function"]["arguments"] == ""
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 3


def test_streamed_pieces_keep_their_call_and_the_empty_closing_piece_is_dropped():
    pieces = ToolCallPieces()

    deltas = [
        *pieces.feed([{"index": 0, "id": "t1", "type": "function", "function": {"name": "a"}}]),
        *pieces.feed([{"index": 1, "id": "t2", "type": "function", "function": {"name": "b"}}]),
        *pieces.feed([{"index": 0, "function": {"arguments": '{"x":'}}]),
        *pieces.feed([{"index": 1, "function": {"arguments": "{}"}}]),
        *pieces.feed([{"index": 0, "function": {"arguments": " 1}"}}]),
        *pieces.feed([{"id": None, "type": None, "function": {"name": None}}]),
    ]

    assert deltas == [
        {"index": 0, "id": "t1", "type": "function", "function": {"name": "a", "arguments": ""}},
        {"index": 1, "id": "t2", "type": "function", "function": {"name": "b", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"x":'}},
        {"index": 1, "function": {"arguments": "{}"}},
        {"index": 0, "function": {"arguments": " 1}"}},
    ]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools[0].function.name",
        ),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tools": "get_weather"}, "tools"),
        ({"messages": [USER, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
        (
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [USER, {"role": "assistant"}]}, "messages[1].content"),
    ],
)
async def test_it_refuses_malformed_tools_naming_the_parameter(
    api, alice, cloudflare, upstream, change, param
):
    response = await _chat(api, alice, **change)

    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith(param)
    assert upstream.requests == []

"""Chat completions, streamed and not, tools and JSON mode: the same cases for every kind."""

import json

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from tests.contract.conftest import post, stream_events

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
MESSAGES_TEXT = "Be brief. hello there world"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a text up.",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


def _content(chunks):
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def _tool_calls(chunks):
    """Join streamed tool-call deltas by index, as the openai SDK does."""
    calls = {}
    for chunk in chunks:
        for choice in chunk.get("choices", []):
            for piece in choice["delta"].get("tool_calls", []):
                call = calls.setdefault(piece["index"], {"id": None, "name": "", "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                call["name"] += piece.get("function", {}).get("name") or ""
                call["arguments"] += piece.get("function", {}).get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


async def test_it_answers_a_chat(api, alice, kind):
    response = await post(api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES)

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == kind.chat_model
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": kind.answer("hello there world")}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == kind.usage(MESSAGES_TEXT, "hello there world")


async def test_it_records_the_usage_it_answers_with(api, alice, kind):
    response = await post(api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES)

    [record] = await _records()
    assert record.model == kind.chat_model
    assert record.endpoint == "/v1/chat/completions"
    assert record.total_tokens == response.json()["usage"]["total_tokens"]
    assert not record.tokens_estimated


async def test_it_streams_a_chat_with_usage_when_asked(api, alice, kind):
    response, events = await stream_events(
        api,
        alice,
        "chat/completions",
        model=kind.chat_model,
        messages=MESSAGES,
        stream_options={"include_usage": True},
    )

    assert response.status_code == 200
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert _content(chunks) == kind.answer("hello there world")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == kind.usage(MESSAGES_TEXT, "hello there world")
    [record] = await _records()
    assert record.stream and record.total_tokens == chunks[-1]["usage"]["total_tokens"]


async def test_it_sends_no_usage_chunk_unless_asked(api, alice, kind):
    _, events = await stream_events(
        api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES
    )

    assert all("usage" not in chunk for chunk in events[:-1])
    [record] = await _records()
    # The provider's usage is recorded all the same.
    assert record.total_tokens == kind.usage(MESSAGES_TEXT, "hello there world")["total_tokens"]


async def test_it_cuts_the_answer_at_max_tokens(api, alice, kind):
    response = await post(
        api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES, max_tokens=2
    )

    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == " ".join(kind.answer("hello there world").split()[:2])


async def test_it_applies_stop_sequences(api, alice, kind):
    response = await post(
        api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES, stop=["there"]
    )

    [choice] = response.json()["choices"]
    # OpenAI-compatible servers cut the text themselves, and may drop the trailing space.
    assert choice["message"]["content"].rstrip() == kind.answer("hello")
    assert choice["finish_reason"] == "stop"


async def test_it_answers_with_a_tool_call_whose_arguments_are_a_json_string(api, alice, kind):
    response = await post(
        api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES, tools=TOOLS
    )

    assert response.status_code == 200
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"text": "hello there world"}


async def test_it_calls_the_tool_that_tool_choice_names(api, alice, kind):
    response = await post(
        api,
        alice,
        "chat/completions",
        model=kind.chat_model,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "other"}},
    )

    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "other"


async def test_it_answers_with_text_when_tool_choice_is_none(api, alice, kind):
    response = await post(
        api,
        alice,
        "chat/completions",
        model=kind.chat_model,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="none",
    )

    [choice] = response.json()["choices"]
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == kind.answer("hello there world")


async def test_it_streams_a_tool_call_as_openai_deltas(api, alice, kind):
    response, events = await stream_events(
        api, alice, "chat/completions", model=kind.chat_model, messages=MESSAGES, tools=TOOLS
    )

    assert response.status_code == 200
    chunks = events[:-1]
    [call] = _tool_calls(chunks)
    assert call["id"] and call["name"] == "lookup"
    assert json.loads(call["arguments"]) == {"text": "hello there world"}
    first_piece = next(
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    )
    assert first_piece["type"] == "function" and first_piece["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1] == "[DONE]"


async def test_it_answers_after_a_tool_result(api, alice, kind):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"text": "hello"}'},
    }
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "forty two"},
    ]

    response = await post(
        api, alice, "chat/completions", model=kind.chat_model, messages=messages, tools=TOOLS
    )

    assert response.status_code == 200
    [choice] = response.json()["choices"]
    assert choice["message"]["content"] == kind.answer("forty two")
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "echo",
                "schema": {"type": "object", "properties": {"echo": {"type": "string"}}},
            },
        },
    ],
)
async def test_it_answers_in_json_as_a_string(api, alice, kind, response_format):
    response = await post(
        api,
        alice,
        "chat/completions",
        model=kind.chat_model,
        messages=MESSAGES,
        response_format=response_format,
    )

    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    assert json.loads(content) == kind.json_answer("hello there world")


async def test_it_streams_json_mode(api, alice, kind):
    response, events = await stream_events(
        api,
        alice,
        "chat/completions",
        model=kind.chat_model,
        messages=MESSAGES,
        response_format={"type": "json_object"},
    )

    assert response.status_code == 200
    assert json.loads(_content(events[:-1])) == kind.json_answer("hello there world")
    assert events[-1] == "[DONE]"


async def test_it_flattens_text_parts(api, alice, kind):
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]
    messages = [{"role": "user", "content": parts}]

    response = await post(api, alice, "chat/completions", model=kind.chat_model, messages=messages)

    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    assert content.split() == kind.answer("hello world").split()


async def test_it_refuses_an_image_for_a_model_that_takes_none(api, alice, kind):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [MESSAGES[0], {"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]

    response = await post(api, alice, "chat/completions", model=kind.chat_model, messages=messages)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[1].content"
    assert kind.chat_model in error["message"] and "image_url" in error["message"]
    assert await _records() == []

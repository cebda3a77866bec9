"""The official openai package for Python, at its defaults (two retries, its own timeouts)."""

import json
import time

import openai
import pytest
from pydantic import BaseModel

from tests.clients.conftest import (
    CHAT_MODEL,
    ECHO,
    EMBEDDING_MODEL,
    TOOL_ANSWER,
    TOOL_RESULT,
    USER,
)

CLIENT = "openai-python"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a text up.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
}
# Seconds a refused request may take: no retry is worth more than that.
PROMPT_REFUSAL_SECONDS = 5


class Echo(BaseModel):
    echo: str


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.api_base, api_key=gateway.printed["alice"])


@pytest.mark.compat(CLIENT, "models")
def test_it_lists_the_models(client):
    ids = [model.id for model in client.models.list()]

    assert {CHAT_MODEL, EMBEDDING_MODEL} <= set(ids)


@pytest.mark.compat(CLIENT, "chat")
def test_it_chats(client):
    completion = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": USER}]
    )

    assert completion.choices[0].message.content == ECHO


@pytest.mark.compat(CLIENT, "stream")
def test_it_streams_with_usage(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": USER}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO
    assert chunks[-1].usage.total_tokens > 0


@pytest.mark.compat(CLIENT, "tools")
def test_it_calls_a_tool_and_answers_from_its_result(client):
    messages = [{"role": "user", "content": USER}]
    first = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[LOOKUP])
    [call] = first.choices[0].message.tool_calls
    # The history as applications keep it: the SDK's own message, dumped.
    messages.append(first.choices[0].message.model_dump())
    text = json.loads(call.function.arguments)["text"]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": f"found {text}"})

    second = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[LOOKUP])

    assert call.function.name == "lookup"
    assert text == USER and f"found {text}" == TOOL_RESULT
    assert second.choices[0].message.content == TOOL_ANSWER


@pytest.mark.compat(CLIENT, "structured")
def test_it_parses_structured_output(client):
    completion = client.chat.completions.parse(
        model=CHAT_MODEL, messages=[{"role": "user", "content": USER}], response_format=Echo
    )

    assert completion.choices[0].message.parsed == Echo(echo=USER)


@pytest.mark.compat(CLIENT, "embeddings")
def test_it_embeds(client):
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=["first text", "second"])

    assert [len(item.embedding) for item in result.data] == [384, 384]


ERRORS = {
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    429: openai.RateLimitError,
    400: openai.BadRequestError,
}


def error_request(gateway, status):
    """The key, model and extra parameters that earn each status."""
    return {
        401: ("sk-gw-not-a-key", CHAT_MODEL, {}),
        403: (gateway.printed["bob"], CHAT_MODEL, {}),
        404: (gateway.printed["alice"], "no-such-model", {}),
        429: (gateway.printed["dave"], CHAT_MODEL, {}),
        400: (gateway.printed["alice"], CHAT_MODEL, {"temperature": 5}),
    }[status]


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=pytest.mark.compat(CLIENT, f"error {s}")) for s in ERRORS],
)
def test_it_raises_its_own_error_class_promptly(gateway, compat_detail, status):
    key, model, extra = error_request(gateway, status)
    client = openai.OpenAI(base_url=gateway.api_base, api_key=key)
    started = time.monotonic()

    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": USER}], **extra
        )

    compat_detail(type(raised.value).__name__)
    assert type(raised.value) is ERRORS[status]
    assert time.monotonic() - started < PROMPT_REFUSAL_SECONDS

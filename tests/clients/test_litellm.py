"""LiteLLM as a client (`litellm.completion`, `litellm.embedding`), at its defaults.

A server that speaks OpenAI's API is LiteLLM's `openai/` provider with an `api_base`.
"""

import json

import litellm
import openai
import pytest
from pydantic import BaseModel

from tests.clients.conftest import CHAT_MODEL, ECHO, EMBEDDING_MODEL, TOOL_ANSWER, USER
from tests.clients.test_openai_python import LOOKUP, error_request

CLIENT = "litellm"
ERRORS = {
    401: litellm.AuthenticationError,
    # LiteLLM's mapping of the openai provider's errors has no branch for 403.
    403: litellm.APIError,
    404: litellm.NotFoundError,
    429: litellm.RateLimitError,
    400: litellm.BadRequestError,
}


class Echo(BaseModel):
    echo: str


def complete(gateway, key="alice", model=CHAT_MODEL, **params):
    return litellm.completion(
        model=f"openai/{model}",
        api_base=gateway.api_base,
        api_key=gateway.printed.get(key, key),
        **{"messages": [{"role": "user", "content": USER}], **params},
    )


@pytest.mark.compat(CLIENT, "chat")
def test_it_chats(gateway):
    assert complete(gateway).choices[0].message.content == ECHO


@pytest.mark.compat(CLIENT, "stream")
def test_it_streams_with_usage(gateway):
    chunks = list(complete(gateway, stream=True, stream_options={"include_usage": True}))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO
    assert [c.usage.total_tokens for c in chunks if getattr(c, "usage", None)][-1] > 0


@pytest.mark.compat(CLIENT, "tools")
def test_it_calls_a_tool_and_answers_from_its_result(gateway):
    messages = [{"role": "user", "content": USER}]
    first = complete(gateway, messages=messages, tools=[LOOKUP])
    [call] = first.choices[0].message.tool_calls
    # LiteLLM's own message object goes back into the history, as its docs show.
    messages.append(first.choices[0].message)
    text = json.loads(call.function.arguments)["text"]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": f"found {text}"})

    second = complete(gateway, messages=messages, tools=[LOOKUP])

    assert call.function.name == "lookup"
    assert second.choices[0].message.content == TOOL_ANSWER


@pytest.mark.compat(CLIENT, "structured")
def test_it_gets_structured_output(gateway):
    answer = complete(gateway, response_format=Echo).choices[0].message.content

    assert Echo.model_validate_json(answer) == Echo(echo=USER)


@pytest.mark.compat(CLIENT, "embeddings")
def test_it_embeds(gateway):
    result = litellm.embedding(
        model=f"openai/{EMBEDDING_MODEL}",
        input=["first text", "second"],
        api_base=gateway.api_base,
        api_key=gateway.printed["alice"],
    )

    assert [len(item["embedding"]) for item in result.data] == [384, 384]


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=pytest.mark.compat(CLIENT, f"error {s}")) for s in ERRORS],
)
def test_it_raises_its_own_error_class(gateway, compat_detail, status):
    key, model, extra = error_request(gateway, status)

    with pytest.raises(openai.APIError) as raised:
        complete(gateway, key=key, model=model, **extra)

    compat_detail(type(raised.value).__name__)
    if status == 403:
        compat_detail("LiteLLM maps no 403 of an OpenAI-compatible server to a class of its own")
    assert type(raised.value) is ERRORS[status]
    assert raised.value.status_code == status


@pytest.mark.compat(CLIENT, "models")
def test_it_lists_the_servers_models(gateway):
    models = litellm.get_valid_models(
        check_provider_endpoint=True,
        custom_llm_provider="openai",
        api_base=gateway.api_base,
        api_key=gateway.printed["alice"],
    )

    assert {CHAT_MODEL, EMBEDDING_MODEL} <= set(models)

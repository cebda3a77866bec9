"""A null for an optional parameter means "not given", as in OpenAI's API.

The SDKs' own types allow null for every optional parameter, and clients built on them send
it: LangChain and pydantic-ai send `"temperature": null` at their defaults, and a history kept
as `message.model_dump()` carries `"tool_calls": null`, `"refusal": null` and the like.
"""

import pytest
from openai.types.chat import ChatCompletionMessage, ChatCompletionMessageToolCall

from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

USER = {"role": "user", "content": "hello there world"}
# Every optional parameter of a chat request, as a client at its defaults may send it.
CHAT_NULLS = {
    "temperature": None,
    "top_p": None,
    "top_k": None,
    "max_tokens": None,
    "max_completion_tokens": None,
    "stop": None,
    "seed": None,
    "n": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "logit_bias": None,
    "logprobs": None,
    "top_logprobs": None,
    "user": None,
    "stream": None,
    "stream_options": None,
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "response_format": None,
}
COMPLETION_NULLS = {
    "temperature": None,
    "top_p": None,
    "max_tokens": None,
    "stop": None,
    "seed": None,
    "n": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "logit_bias": None,
    "logprobs": None,
    "user": None,
    "stream": None,
    "stream_options": None,
    "echo": None,
    "best_of": None,
    "suffix": None,
}


async def _post(api, persona, path, body):
    return await api.post(path, data=body, content_type="application/json", headers=persona.headers)


def _sent(upstream):
    [sent] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    return sent["json"]


@pytest.mark.parametrize("param", sorted(CHAT_NULLS))
async def test_it_takes_a_null_chat_parameter_as_not_given(api, alice, cloudflare, upstream, param):
    response = await _post(
        api, alice, "/v1/chat/completions", {"model": LLAMA, "messages": [USER], param: None}
    )

    assert response.status_code == 200, response.json()
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello there world"


async def test_it_sends_none_of_the_null_parameters_upstream(api, alice, cloudflare, upstream):
    response = await _post(
        api, alice, "/v1/chat/completions", {"model": LLAMA, "messages": [USER], **CHAT_NULLS}
    )

    assert response.status_code == 200, response.json()
    # max_tokens is the gateway's own default, sent when the client gives none.
    assert _sent(upstream) == {"messages": [USER], "stream": False, "max_tokens": 4096}


@pytest.mark.parametrize("param", sorted(COMPLETION_NULLS))
async def test_it_takes_a_null_completion_parameter_as_not_given(
    api, alice, cloudflare, upstream, param
):
    response = await _post(
        api, alice, "/v1/completions", {"model": LLAMA, "prompt": "hello there", param: None}
    )

    assert response.status_code == 200, response.json()
    assert response.json()["choices"][0]["text"] == "Echo: hello there"


async def test_a_null_max_tokens_on_a_legacy_completion_is_openais_default_of_16(
    api, alice, cloudflare, upstream
):
    await _post(api, alice, "/v1/completions", {"model": LLAMA, "prompt": "hi", "max_tokens": None})

    assert _sent(upstream)["max_tokens"] == 16


async def test_a_null_user_on_embeddings_is_not_given(api, alice, cloudflare, upstream):
    response = await _post(
        api,
        alice,
        "/v1/embeddings",
        {"model": "@cf/baai/bge-small-en-v1.5", "input": "hi", "user": None, "dimensions": None},
    )

    assert response.status_code == 200, response.json()


async def test_a_required_parameter_is_still_refused_when_null(api, alice, cloudflare):
    response = await _post(api, alice, "/v1/chat/completions", {"model": None, "messages": [USER]})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


async def test_it_takes_a_history_kept_as_the_sdks_own_messages(api, alice, cloudflare, upstream):
    answer = ChatCompletionMessage(role="assistant", content="Echo: hello there world")
    history = [USER, answer.model_dump(), {"role": "user", "content": "and again"}]
    body = {"model": LLAMA, "messages": history}

    response = await _post(api, alice, "/v1/chat/completions", body)

    assert response.status_code == 200, response.json()
    assert response.json()["choices"][0]["message"]["content"] == "Echo: and again"
    assert _sent(upstream)["messages"][1] == {
        "role": "assistant",
        "content": "Echo: hello there world",
    }


async def test_it_takes_a_tool_round_trip_kept_as_the_sdks_own_messages(
    api, alice, cloudflare, upstream
):
    call = ChatCompletionMessageToolCall(
        id="call_1", type="function", function={"name": "lookup", "arguments": '{"text": "hi"}'}
    )
    answer = ChatCompletionMessage(role="assistant", content=None, tool_calls=[call])
    history = [
        USER,
        answer.model_dump(),
        {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
    ]
    body = {"model": LLAMA, "messages": history}

    response = await _post(api, alice, "/v1/chat/completions", body)

    assert response.status_code == 200, response.json()
    assert response.json()["choices"][0]["message"]["content"] == "Echo: found it"

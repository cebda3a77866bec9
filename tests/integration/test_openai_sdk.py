"""The official openai SDK, sync and async, against daphne serving the gateway."""

import asyncio
import time

import openai
import pytest

from tests.integration.conftest import LLAMA

pytestmark = pytest.mark.integration


def _user(text):
    return [{"role": "user", "content": text}]


def test_it_lists_models_with_aliases_and_capabilities(client):
    models = {model.id: model for model in client.models.list()}

    assert {LLAMA, "gpt-4o-mini", "echo"} <= set(models)
    assert models[LLAMA].owned_by == "cloudflare"
    capabilities = models[LLAMA].capabilities
    assert {k: capabilities[k] for k in ("chat", "completions", "embeddings")} == {
        "chat": True,
        "completions": True,
        "embeddings": False,
    }
    # Fields OpenAI's model object lacks reach the SDK as extra attributes.
    assert models[LLAMA].deprecation_date is None


def test_it_retrieves_a_model_whose_id_has_slashes(client):
    model = client.models.retrieve(LLAMA)

    assert model.id == LLAMA
    assert model.object == "model"


def test_it_answers_a_chat_with_the_upstreams_usage(client, gateway):
    completion = client.chat.completions.create(
        model=LLAMA, messages=_user("hello gateway"), max_tokens=50
    )

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Echo: hello gateway"
    assert completion.choices[0].finish_reason == "stop"
    # The fake counts words: 2 in the prompt, 3 in the answer.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)
    record = gateway.usage_records()[-1]
    assert (record["model"], record["status"], record["total_tokens"]) == (LLAMA, "ok", 5)


def test_it_streams_role_then_content_then_finish_then_usage(client, gateway):
    stream = client.chat.completions.create(
        model=LLAMA,
        messages=_user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(reason is None for reason in finishes[:-1])
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)
    record = gateway.usage_records()[-1]
    assert record["stream"] and record["completion_tokens"] == 4
    assert record["time_to_first_token_ms"] is not None


def test_it_streams_without_a_usage_chunk_unless_asked(client):
    chunks = list(
        client.chat.completions.create(model="echo", messages=_user("a b c"), stream=True)
    )

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_it_refuses_a_wrong_key(gateway):
    client = openai.OpenAI(base_url=gateway.api_base, api_key="sk-gw-wrong", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()

    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "authentication_error"


def test_it_refuses_chat_to_a_read_key(gateway):
    client = openai.OpenAI(base_url=gateway.api_base, api_key=gateway.printed["bob"], max_retries=0)
    assert client.models.list().data

    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=LLAMA, messages=_user("hi"))


def test_it_answers_an_unknown_model_with_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=_user("hi"))

    assert caught.value.code == "model_not_found"


def test_it_names_the_bad_parameter(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=LLAMA, messages=_user("hi"), temperature=5)

    assert caught.value.param == "temperature"


def test_it_reports_an_upstream_failure_without_its_secrets(client, gateway):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="@cf/test/fail-500", messages=_user("hi"))

    assert caught.value.status_code == 502
    assert "cf-test-token" not in caught.value.message
    assert "acc-test-123" not in caught.value.message
    assert gateway.usage_records()[-1]["status"] == "upstream_error"


async def test_the_async_client_chats_and_streams(async_client):
    completion = await async_client.chat.completions.create(
        model="gpt-4o-mini", messages=_user("via alias")
    )
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Echo: via alias"

    stream = await async_client.chat.completions.create(
        model=LLAMA, messages=_user("async stream"), stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Echo: async stream"


async def test_twenty_concurrent_streams_finish_in_about_the_time_of_one(async_client, gateway):
    async def one_stream():
        stream = await async_client.chat.completions.create(
            model="@cf/test/slow", messages=_user("a b c d e"), stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    started = time.monotonic()
    assert await one_stream() == "Echo: a b c d e"
    one = time.monotonic() - started

    before = len(gateway.usage_records())
    started = time.monotonic()
    answers = await asyncio.gather(*(one_stream() for _ in range(20)))
    twenty = time.monotonic() - started

    assert answers == ["Echo: a b c d e"] * 20
    # Served one after another they would take 20 times as long; the bound leaves room
    # for a loaded machine while still failing if streams were serialised.
    assert twenty < one * 4, (one, twenty)
    assert len(gateway.usage_records()) == before + 20

"""The openai SDK against daphne for every endpoint beyond chat basics, streaming included."""

import json

import openai
import pydantic
import pytest

from tests import fake_upstream
from tests.integration.conftest import LLAMA, NEWER

pytestmark = pytest.mark.integration

BGE = "@cf/baai/bge-small-en-v1.5"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a text up.",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
]


def _user(text):
    return [{"role": "user", "content": text}]


def _vector(text):
    return fake_upstream.embedding_vector(text, fake_upstream.EMBEDDING_DIMENSIONS[BGE])


def test_it_completes_a_prompt(client, gateway):
    completion = client.completions.create(model=LLAMA, prompt="Say this is a test")

    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Echo: Say this is a test"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 11
    record = gateway.usage_records()[-1]
    assert (record["endpoint"], record["total_tokens"]) == ("/v1/completions", 11)


def test_it_completes_a_list_of_prompts(client):
    completion = client.completions.create(model=LLAMA, prompt=["one", "two"], max_tokens=5)

    assert [(c.index, c.text) for c in completion.choices] == [(0, "Echo: one"), (1, "Echo: two")]


async def test_it_streams_a_completion(async_client):
    stream = await async_client.completions.create(
        model=LLAMA, prompt="one two three", stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: one two three"
    assert chunks[-1].usage.completion_tokens == 4


def test_it_embeds_with_the_sdks_default_base64(client, gateway):
    response = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])

    # The SDK asks for base64 unless told otherwise, and decodes it into floats.
    assert [item.index for item in response.data] == [0, 1]
    assert response.data[0].embedding == pytest.approx(_vector("hello"), abs=1e-6)
    assert response.data[1].embedding == pytest.approx(_vector("world"), abs=1e-6)
    assert response.model == "text-embedding-3-small"
    record = gateway.usage_records()[-1]
    assert (record["model"], record["requested_model"]) == (BGE, "text-embedding-3-small")
    assert record["tokens_estimated"] == 1


def test_it_embeds_more_than_a_batch_in_order(client):
    texts = [f"text {n}" for n in range(150)]

    response = client.embeddings.create(model=BGE, input=texts, encoding_format="float")

    assert len(response.data) == 150
    assert response.data[149].embedding == _vector("text 149")


def test_it_calls_a_tool_and_answers_its_result(client):
    first = client.chat.completions.create(
        model=LLAMA, messages=_user("weather in Paris"), tools=TOOLS
    )

    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = message.tool_calls
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"text": "weather in Paris"}

    second = client.chat.completions.create(
        model=LLAMA,
        messages=[
            *_user("weather in Paris"),
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=TOOLS,
    )

    assert second.choices[0].message.content == "Echo: sunny"


@pytest.mark.parametrize("model", [LLAMA, NEWER])
def test_it_streams_a_tool_call(client, model):
    stream = client.chat.completions.create(
        model=model, messages=_user("find me"), tools=TOOLS, stream=True
    )

    pieces = [
        piece
        for chunk in stream
        if chunk.choices
        for piece in chunk.choices[0].delta.tool_calls or []
    ]
    assert pieces[0].id and pieces[0].function.name == "lookup"
    arguments = "".join(piece.function.arguments or "" for piece in pieces)
    assert json.loads(arguments) == {"text": "find me"}


class Echo(pydantic.BaseModel):
    echo: str


def test_it_parses_structured_output(client):
    completion = client.chat.completions.parse(
        model=LLAMA, messages=_user("structured please"), response_format=Echo
    )

    assert completion.choices[0].message.parsed == Echo(echo="structured please")


@pytest.mark.parametrize("model", [LLAMA, NEWER])
def test_it_answers_json_mode_as_a_string(client, model):
    completion = client.chat.completions.create(
        model=model, messages=_user("as json"), response_format={"type": "json_object"}
    )

    assert json.loads(completion.choices[0].message.content) == {"echo": "as json"}


def test_it_streams_a_model_that_answers_in_openais_shape(client, gateway):
    stream = client.chat.completions.create(model=NEWER, messages=_user("newer shape"), stream=True)

    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Echo: newer shape"
    assert gateway.usage_records()[-1]["completion_tokens"] == 3


def test_it_falls_back_when_the_model_fails(client, gateway):
    completion = client.chat.completions.create(
        model="@cf/test/fail-500-then-llama", messages=_user("still there")
    )

    assert completion.choices[0].message.content == "Echo: still there"
    assert completion.model == LLAMA
    record = gateway.usage_records()[-1]
    assert (record["model"], record["requested_model"]) == (LLAMA, "@cf/test/fail-500-then-llama")


def test_it_refuses_a_chat_with_an_embedding_model(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=BGE, messages=_user("hi"))

    assert raised.value.body["param"] == "model"

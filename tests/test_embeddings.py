"""POST /v1/embeddings: Workers AI's {"text": [...]} in batches of 100, and passed through."""

import base64
import struct

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model, ModelAlias
from tests import fake_upstream
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

BGE = "@cf/baai/bge-small-en-v1.5"
BGE_DIMENSIONS = fake_upstream.EMBEDDING_DIMENSIONS[BGE]
GEMMA = "@cf/google/embeddinggemma-300m"


async def _embed(api, persona, **body):
    body.setdefault("model", BGE)
    return await api.post(
        "/v1/embeddings", data=body, content_type="application/json", headers=persona.headers
    )


def _vector(text, dimensions=BGE_DIMENSIONS):
    return fake_upstream.embedding_vector(text, dimensions)


def _run_requests(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_answers_with_an_embedding_per_input_in_order(api, alice, cloudflare, upstream):
    texts = ["first text", "second", "the third one"]

    response = await _embed(api, alice, input=texts)

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == BGE
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert {item["object"] for item in body["data"]} == {"embedding"}
    assert [item["embedding"] for item in body["data"]] == [_vector(t) for t in texts]
    [sent] = _run_requests(upstream)
    assert sent["path"].endswith(f"/ai/run/{BGE}")
    assert sent["json"] == {"text": texts}


async def test_it_takes_a_single_string(api, alice, cloudflare):
    response = await _embed(api, alice, input="just one")

    [item] = response.json()["data"]
    assert item["embedding"] == _vector("just one")
    assert len(item["embedding"]) == BGE_DIMENSIONS


async def test_it_splits_a_long_list_into_batches_of_100_and_keeps_the_order(
    api, alice, cloudflare, upstream
):
    texts = [f"text number {n}" for n in range(250)]

    response = await _embed(api, alice, input=texts)

    assert response.status_code == 200
    sent = _run_requests(upstream)
    assert sorted(len(r["json"]["text"]) for r in sent) == [50, 100, 100]
    assert sorted(t for r in sent for t in r["json"]["text"]) == sorted(texts)
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(250))
    assert [item["embedding"] for item in data] == [_vector(t) for t in texts]
    # One request, one record, however many batches it took.
    assert len(await _records()) == 1


async def test_it_encodes_base64_as_little_endian_float32(api, alice, cloudflare):
    response = await _embed(api, alice, input=["hello"], encoding_format="base64")

    encoded = response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(_vector("hello"), abs=1e-6)


async def test_it_estimates_usage_workers_ai_does_not_report_and_says_so(api, alice, cloudflare):
    # 8 and 21 characters: 2 and 6 tokens at 4 characters a token.
    response = await _embed(api, alice, input=["8 chars!", "twenty-one characters"])

    assert response.json()["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    [record] = await _records()
    assert record.endpoint == "/v1/embeddings"
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (8, 0, 8)
    assert record.tokens_estimated is True
    assert record.stream is False


async def test_it_answers_under_an_alias(api, alice, cloudflare, upstream):
    await ModelAlias.objects.acreate(
        name="text-embedding-3-small", model=await Model.objects.aget(name=BGE)
    )

    response = await _embed(api, alice, model="text-embedding-3-small", input="hi")

    assert response.status_code == 200
    assert response.json()["model"] == "text-embedding-3-small"
    [sent] = _run_requests(upstream)
    assert sent["path"].endswith(f"/ai/run/{BGE}")
    [record] = await _records()
    assert (record.model, record.requested_model) == (BGE, "text-embedding-3-small")


async def test_it_passes_through_to_an_openai_compatible_server_with_its_usage(
    api, alice, openai_upstream, upstream
):
    await Model.objects.acreate(
        name="text-embed-test", provider=openai_upstream, task=Model.TEXT_EMBEDDINGS
    )

    response = await _embed(
        api,
        alice,
        model="text-embed-test",
        input=["one two", "three"],
        encoding_format="base64",
        dimensions=4,
        user="u-1",
    )

    assert response.status_code == 200
    [sent] = [r for r in upstream.requests if r["path"] == "/openai/v1/embeddings"]
    # Floats from the upstream, whatever the client asked for: the gateway encodes.
    assert sent["json"] == {
        "model": "text-embed-test",
        "input": ["one two", "three"],
        "encoding_format": "float",
        "dimensions": 4,
        "user": "u-1",
    }
    raw = base64.b64decode(response.json()["data"][1]["embedding"])
    assert struct.unpack("<4f", raw) == pytest.approx(_vector("three", 4), abs=1e-6)
    assert response.json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    [record] = await _records()
    assert record.tokens_estimated is False


async def test_it_refuses_dimensions_workers_ai_cannot_honour(api, alice, cloudflare, upstream):
    response = await _embed(api, alice, input="hi", dimensions=128)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": [1, "two"]}, "input"),
        ({"input": [[1, 2], 3]}, "input"),
        ({"input": [[1, True]]}, "input"),
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["fine", ""]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": {"text": "hi"}}, "input"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"model": 5}, "model"),
    ],
)
async def test_it_refuses_an_invalid_field_naming_it(
    api, alice, cloudflare, upstream, change, param
):
    response = await _embed(api, alice, **{"input": "hi", **change})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.requests == []


async def test_it_refuses_a_text_generation_model_naming_it(api, alice, cloudflare, upstream):
    response = await _embed(api, alice, model=LLAMA, input="hi")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model"
    assert LLAMA in error["message"] and "embeddings" in error["message"]
    assert upstream.requests == []
    assert await _records() == []


async def test_a_text_embedding_model_cannot_chat(api, alice, cloudflare, upstream):
    response = await api.post(
        "/v1/chat/completions",
        data={"model": BGE, "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert upstream.requests == []


async def test_it_answers_a_failing_upstream_with_502_and_records_it(api, alice, cloudflare):
    await Model.objects.acreate(
        name="@cf/test/embed-fail-500", provider=cloudflare, task=Model.TEXT_EMBEDDINGS
    )

    response = await _embed(api, alice, model="@cf/test/embed-fail-500", input="hi")

    assert response.status_code == 502
    assert fake_upstream.CLOUDFLARE_TOKEN not in response.content.decode()
    [record] = await _records()
    assert record.status == UsageRecord.UPSTREAM_ERROR


async def test_it_requires_a_read_write_key(api, bob, cloudflare, upstream):
    response = await _embed(api, bob, input="hi")

    assert response.status_code == 403
    assert upstream.requests == []


async def test_it_cuts_a_matryoshka_models_vectors_to_the_dimensions_asked_for(
    api, alice, cloudflare, upstream
):
    await Model.objects.acreate(
        name=GEMMA, provider=cloudflare, task=Model.TEXT_EMBEDDINGS, shortens_embeddings=True
    )

    response = await _embed(api, alice, model=GEMMA, input=["one", "two"], dimensions=4)

    assert response.status_code == 200
    full = _vector("one", fake_upstream.DEFAULT_EMBEDDING_DIMENSIONS)
    norm = sum(x * x for x in full[:4]) ** 0.5
    [first, second] = response.json()["data"]
    assert first["embedding"] == pytest.approx([x / norm for x in full[:4]])
    assert len(second["embedding"]) == 4
    # Workers AI takes no `dimensions`: the gateway cuts the vectors itself.
    [sent] = _run_requests(upstream)
    assert sent["json"] == {"text": ["one", "two"]}


async def test_it_refuses_more_dimensions_than_a_matryoshka_model_makes(api, alice, cloudflare):
    await Model.objects.acreate(
        name=GEMMA, provider=cloudflare, task=Model.TEXT_EMBEDDINGS, shortens_embeddings=True
    )

    response = await _embed(api, alice, model=GEMMA, input="one", dimensions=4096)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"
    [record] = await _records()
    assert record.status == UsageRecord.CLIENT_ERROR

"""Embeddings, float and base64, in order and in batches: the same cases for every kind."""

import base64
import struct

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from tests.contract.conftest import post

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_embeds_each_input_in_order(api, alice, kind):
    texts = ["a first text", "second", "and the third"]

    response = await post(api, alice, "embeddings", model=kind.embedding_model, input=texts)

    assert response.status_code == 200
    body = response.json()
    assert (body["object"], body["model"]) == ("list", kind.embedding_model)
    assert [(item["object"], item["index"]) for item in body["data"]] == [
        ("embedding", 0),
        ("embedding", 1),
        ("embedding", 2),
    ]
    assert [item["embedding"] for item in body["data"]] == [kind.vector(t) for t in texts]
    assert {len(item["embedding"]) for item in body["data"]} == {kind.dimensions}


async def test_it_encodes_base64(api, alice, kind):
    response = await post(
        api, alice, "embeddings", model=kind.embedding_model, input="hi", encoding_format="base64"
    )

    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    assert struct.unpack(f"<{kind.dimensions}f", raw) == pytest.approx(kind.vector("hi"), abs=1e-6)


async def test_it_reassembles_more_inputs_than_one_batch(api, alice, kind):
    texts = [f"item {n}" for n in range(230)]

    response = await post(api, alice, "embeddings", model=kind.embedding_model, input=texts)

    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(230))
    assert data[0]["embedding"] == kind.vector("item 0")
    assert data[229]["embedding"] == kind.vector("item 229")


async def test_it_reports_usage_and_records_it(api, alice, kind):
    response = await post(
        api, alice, "embeddings", model=kind.embedding_model, input=["one two", "three"]
    )

    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"]
    [record] = await _records()
    assert record.endpoint == "/v1/embeddings"
    assert (record.model, record.total_tokens) == (kind.embedding_model, usage["total_tokens"])
    assert record.tokens_estimated is not kind.counts_embedding_tokens

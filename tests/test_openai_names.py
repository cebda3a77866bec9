"""The admin action that aliases models by the OpenAI names clients default to."""

import pytest

from apikeys.models import ApiKey
from completions.models import Model, ModelAlias, Provider

pytestmark = pytest.mark.django_db

MODELS = "/admin/completions/model/"


@pytest.fixture
def models():
    provider = Provider.objects.create(name="local", kind=Provider.OPENAI, base_url="http://a/v1")
    chat = Model.objects.create(name="llama", provider=provider)
    embedder = Model.objects.create(name="embedder", provider=provider, task=Model.TEXT_EMBEDDINGS)
    return chat, embedder


def _aliases():
    return {alias.name: alias.model.name for alias in ModelAlias.objects.all()}


def test_it_gives_each_model_the_names_of_its_task(admin_client, client, models):
    chat, embedder = models

    admin_client.post(
        MODELS, {"action": "add_openai_names", "_selected_action": [chat.pk, embedder.pk]}
    )

    assert _aliases() == {
        "gpt-4o-mini": "llama",
        "gpt-4o": "llama",
        "gpt-3.5-turbo": "llama",
        "gpt-4": "llama",
        "text-embedding-3-small": "embedder",
        "text-embedding-3-large": "embedder",
        "text-embedding-ada-002": "embedder",
    }
    _, secret = ApiKey.objects.create_key(name="ci")
    listed = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).json()
    assert {"gpt-3.5-turbo", "text-embedding-3-small"} <= {entry["id"] for entry in listed["data"]}


def test_it_leaves_names_already_taken_as_they_are(admin_client, models):
    chat, _ = models
    other = Model.objects.create(name="other", provider=chat.provider)
    ModelAlias.objects.create(name="gpt-4o-mini", model=other)

    response = admin_client.post(
        MODELS, {"action": "add_openai_names", "_selected_action": [chat.pk]}, follow=True
    )

    assert _aliases()["gpt-4o-mini"] == "other"
    assert _aliases()["gpt-3.5-turbo"] == "llama"
    assert "Already taken, left as they are: gpt-4o-mini -&gt; other" in response.content.decode()


def test_the_model_page_edits_whether_it_takes_images(admin_client, models):
    chat, _ = models

    page = admin_client.get(f"{MODELS}{chat.pk}/change/").content.decode()

    assert 'name="accepts_images"' in page

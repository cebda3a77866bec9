"""manage.py sync_models, against the fake upstream's catalogues.

The fake Cloudflare catalogue holds 25 models: 20 Text Generation, 3 Text Embeddings and
2 Text-to-Image. The `cloudflare` fixture already made 10 rows: llama and bge-small (both in
the catalogue, with no description) and 8 fault models that the catalogue does not list.
"""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from completions.models import Model, ModelAlias, Provider
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

MISTRAL = "@hf/mistral/mistral-7b-instruct-v0.2"
BGE_BASE = "@cf/baai/bge-base-en-v1.5"
FLUX = "@cf/black-forest-labs/flux-1-schnell"
FAULT_MODELS = [
    "@cf/test/bad-json",
    "@cf/test/bad-request",
    "@cf/test/cut-stream",
    "@cf/test/drip",
    "@cf/test/fail-500",
    "@cf/test/hang",
    "@cf/test/rate-limited",
    "@cf/test/slow",
]


def sync_models(*args):
    """Run the command and return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("sync_models", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def catalogue_requests(upstream):
    return [r for r in upstream.requests if r["path"].endswith("/ai/models/search")]


def test_it_creates_every_new_catalogue_model_with_its_task(cloudflare):
    sync_models("--provider", "cloudflare")

    models = Model.objects.filter(provider=cloudflare)
    assert models.count() == 25 + len(FAULT_MODELS)
    assert models.filter(task=Model.TEXT_GENERATION).count() == 20 + len(FAULT_MODELS)
    assert models.filter(task=Model.TEXT_EMBEDDINGS).count() == 3
    assert models.filter(task="Text-to-Image").count() == 2
    mistral = Model.objects.get(name=MISTRAL)
    assert mistral.description == f"Test model {MISTRAL}."
    assert mistral.enabled


def test_only_text_generation_models_offer_chat_and_only_embedding_models_embed(cloudflare):
    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=MISTRAL).capabilities == {
        "chat": True,
        "completions": True,
        "embeddings": False,
    }
    assert Model.objects.get(name=BGE_BASE).capabilities == {
        "chat": False,
        "completions": False,
        "embeddings": True,
    }
    assert not any(Model.objects.get(name=FLUX).capabilities.values())


def test_it_keeps_slashes_in_model_ids(cloudflare):
    sync_models("--provider", "cloudflare")

    assert Model.objects.filter(name="@cf/meta/llama-3.2-1b-instruct").exists()
    assert not Model.objects.filter(name__contains="%2F").exists()


def test_it_imports_models_from_every_page_of_the_catalogue(cloudflare, upstream, monkeypatch):
    # Pages as small as the fake's default, so the catalogue of 25 takes two requests.
    monkeypatch.setattr("completions.providers.cloudflare.CATALOGUE_PAGE_SIZE", 20)

    sync_models("--provider", "cloudflare")

    assert [r["query"]["page"] for r in catalogue_requests(upstream)] == ["1", "2"]
    assert Model.objects.filter(name="@cf/test/model-20", provider=cloudflare).exists()


def test_it_updates_task_and_description_of_known_models(cloudflare):
    Model.objects.filter(name=BGE_BASE).delete()
    Model.objects.create(name=BGE_BASE, provider=cloudflare, description="old words")

    out, _ = sync_models("--provider", "cloudflare")

    bge_base = Model.objects.get(name=BGE_BASE)
    assert bge_base.task == Model.TEXT_EMBEDDINGS
    assert bge_base.description == f"Test model {BGE_BASE}."
    assert Model.objects.get(name=LLAMA).description == f"Test model {LLAMA}."
    # llama, bge-small and bge-base were known; the other 22 are new.
    assert "cloudflare: 22 created, 3 updated, 0 unchanged, 8 missing, 0 skipped" in out


def test_it_leaves_a_model_hidden_in_the_admin_hidden(cloudflare):
    Model.objects.filter(name=LLAMA).update(enabled=False)

    sync_models("--provider", "cloudflare")

    assert not Model.objects.get(name=LLAMA).enabled


def test_a_second_sync_changes_nothing(cloudflare):
    sync_models("--provider", "cloudflare")
    fields = ["name", "provider", "task", "description", "enabled", "input_price", "output_price"]
    before = list(Model.objects.values_list(*fields))

    out, _ = sync_models("--provider", "cloudflare")

    assert "cloudflare: 0 created, 0 updated, 25 unchanged, 8 missing, 0 skipped" in out
    assert list(Model.objects.values_list(*fields)) == before


def test_models_gone_from_the_catalogue_are_kept_and_listed(cloudflare, upstream):
    upstream.catalogue = [m for m in upstream.catalogue if m["name"] != MISTRAL]
    sync_models("--provider", "cloudflare")
    upstream.reset()
    upstream.catalogue = [m for m in upstream.catalogue if m["name"] != LLAMA]

    out, _ = sync_models("--provider", "cloudflare")

    assert "cloudflare: 1 created, 0 updated, 23 unchanged, 9 missing, 0 skipped" in out
    missing = out.split("missing from the catalogue", 1)[1].split()
    assert LLAMA in missing
    assert all(name in missing for name in FAULT_MODELS)
    assert Model.objects.get(name=LLAMA).aliases.filter(name="gpt-4o-mini").exists()


def test_an_empty_description_in_the_catalogue_keeps_the_stored_one(cloudflare, upstream):
    Model.objects.filter(name=LLAMA).update(description="Written in the admin.")
    for entry in upstream.catalogue:
        if entry["name"] == LLAMA:
            entry["description"] = ""

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=LLAMA).description == "Written in the admin."


def test_an_empty_task_in_the_catalogue_keeps_the_stored_one(cloudflare, upstream):
    for entry in upstream.catalogue:
        if entry["name"] in (BGE_BASE, "@cf/baai/bge-small-en-v1.5", MISTRAL):
            entry["task"] = {}

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name="@cf/baai/bge-small-en-v1.5").task == Model.TEXT_EMBEDDINGS
    # A new model whose task is not known is taken for a text generation model.
    assert Model.objects.get(name=MISTRAL).task == Model.TEXT_GENERATION
    assert Model.objects.get(name=BGE_BASE).task == Model.TEXT_GENERATION


def test_it_imports_prices_per_million_tokens_where_the_catalogue_gives_them(cloudflare):
    sync_models("--provider", "cloudflare")

    llama = Model.objects.get(name=LLAMA)
    assert (llama.input_price, llama.output_price) == (Decimal("0.28"), Decimal("0.83"))
    small = Model.objects.get(name="@cf/meta/llama-3.2-1b-instruct")
    assert (small.input_price, small.output_price) == (Decimal("0.027"), Decimal("0.201"))
    assert Model.objects.get(name=MISTRAL).input_price is None


def test_a_catalogue_price_replaces_the_stored_one(cloudflare):
    sync_models("--provider", "cloudflare")
    Model.objects.filter(name=LLAMA).update(output_price=Decimal("9"))

    out, _ = sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=LLAMA).output_price == Decimal("0.83")
    assert "cloudflare: 0 created, 1 updated, 24 unchanged" in out


def test_a_catalogue_without_prices_keeps_those_set_in_the_admin(cloudflare, upstream):
    Model.objects.filter(name=LLAMA).update(input_price=Decimal("1.5"), output_price=Decimal("2"))
    for entry in upstream.catalogue:
        entry["properties"] = [p for p in entry["properties"] if p["property_id"] != "price"]

    sync_models("--provider", "cloudflare")

    llama = Model.objects.get(name=LLAMA)
    assert (llama.input_price, llama.output_price) == (Decimal("1.5"), Decimal("2"))


def test_prices_in_other_units_or_currencies_are_left_out(cloudflare, upstream):
    for entry in upstream.catalogue:
        if entry["name"] == MISTRAL:
            entry["properties"].append(
                {
                    "property_id": "price",
                    "value": [
                        {"unit": "per M input tokens", "price": 0.5, "currency": "EUR"},
                        {"unit": "per 512x512 tile", "price": 0.01, "currency": "USD"},
                        {"unit": "per M output tokens", "price": "free", "currency": "USD"},
                    ],
                }
            )

    sync_models("--provider", "cloudflare")

    mistral = Model.objects.get(name=MISTRAL)
    assert (mistral.input_price, mistral.output_price) == (None, None)


def test_a_free_model_is_imported_with_a_price_of_zero(cloudflare, upstream):
    for entry in upstream.catalogue:
        if entry["name"] == MISTRAL:
            entry["properties"].append(
                {
                    "property_id": "price",
                    "value": [
                        {"unit": "per M input tokens", "price": 0, "currency": "USD"},
                        {"unit": "per M output tokens", "price": 0, "currency": "USD"},
                    ],
                }
            )

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=MISTRAL).input_price == Decimal("0")


def test_a_name_owned_by_another_provider_is_skipped_with_a_warning(cloudflare, openai_upstream):
    Model.objects.create(name=MISTRAL, provider=openai_upstream, description="Served locally.")

    out, err = sync_models("--provider", "cloudflare")

    mistral = Model.objects.get(name=MISTRAL)
    assert mistral.provider == openai_upstream
    assert mistral.description == "Served locally."
    assert f"skipped '{MISTRAL}': it already belongs to provider 'openai-fake'" in err
    assert "cloudflare: 22 created, 2 updated, 0 unchanged, 8 missing, 1 skipped" in out


def test_a_name_that_is_an_alias_is_skipped_with_a_warning(cloudflare, upstream):
    ModelAlias.objects.create(name=MISTRAL, model=Model.objects.get(name=LLAMA))

    _, err = sync_models("--provider", "cloudflare")

    assert not Model.objects.filter(name=MISTRAL).exists()
    assert f"skipped '{MISTRAL}': it is already an alias" in err


def test_it_imports_an_openai_compatible_catalogue(openai_upstream):
    out, _ = sync_models("--provider", "openai-fake")

    assert Model.objects.get(name="text-embed-test").provider == openai_upstream
    assert "openai-fake: 1 created, 0 updated, 1 unchanged, 2 missing, 0 skipped" in out


def test_without_provider_it_syncs_every_active_provider(cloudflare, openai_upstream, upstream):
    Provider.objects.exclude(pk__in=[cloudflare.pk, openai_upstream.pk]).update(is_active=False)

    out, _ = sync_models()

    assert "cloudflare: 23 created" in out
    assert "openai-fake: 1 created" in out


def test_without_provider_it_leaves_inactive_providers_alone(cloudflare, openai_upstream, upstream):
    Provider.objects.exclude(pk=openai_upstream.pk).update(is_active=False)

    out, _ = sync_models()

    assert catalogue_requests(upstream) == []
    assert "cloudflare" not in out
    assert Model.objects.filter(name="text-embed-test").exists()


def test_a_named_provider_is_synced_even_when_inactive(cloudflare):
    Provider.objects.filter(pk=cloudflare.pk).update(is_active=False)

    sync_models("--provider", "cloudflare")

    assert Model.objects.filter(name=MISTRAL).exists()


def test_an_unknown_provider_name_is_refused(cloudflare):
    with pytest.raises(CommandError, match="--provider: no provider is named 'nope'"):
        sync_models("--provider", "nope")


def test_refused_credentials_fail_the_command(cloudflare, monkeypatch):
    monkeypatch.setenv("TEST_CF_TOKEN", "wrong-token")

    with pytest.raises(CommandError, match="refused the gateway's credentials"):
        sync_models("--provider", "cloudflare")

    assert not Model.objects.filter(name=MISTRAL).exists()


def test_an_upstream_error_is_reported_without_the_providers_secrets(cloudflare, upstream):
    # A base URL with an extra segment: the fake answers 404 naming the path, account id and all.
    Provider.objects.filter(pk=cloudflare.pk).update(
        base_url=f"{upstream.cloudflare_base_url}/wrong"
    )

    with pytest.raises(CommandError) as error:
        sync_models("--provider", "cloudflare")

    message = str(error.value)
    assert message.startswith("Could not sync cloudflare: ")
    assert "/wrong/accounts/[redacted]/ai/models/search" in message
    assert "acc-test-123" not in message


def test_one_failing_provider_does_not_stop_the_others(cloudflare, openai_upstream, monkeypatch):
    Provider.objects.exclude(pk__in=[cloudflare.pk, openai_upstream.pk]).update(is_active=False)
    monkeypatch.setenv("TEST_CF_TOKEN", "wrong-token")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="Could not sync cloudflare: "):
        call_command("sync_models", stdout=out, stderr=err)

    assert "openai-fake: 1 created" in out.getvalue()
    assert "cloudflare: could not fetch the catalogue" in err.getvalue()
    assert Model.objects.filter(name="text-embed-test").exists()

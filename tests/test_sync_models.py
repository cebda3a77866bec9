"""manage.py sync_models, against the fake upstream's catalogues.

The fake Cloudflare catalogue holds Cloudflare's own entries of the 25 models in
tests/fixtures/workers_ai_models (14 Text Generation, 3 Text Embeddings, 8 of other tasks)
and 2 synthetic Text Generation models: one past its deprecation date (listed only with
include_deprecated), one with a date to come. The `cloudflare` fixture already made 10
rows: llama (in the catalogue, with no description), bge-small and 8 fault models (not in
it).
"""

import datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from completions.models import Model, ModelAlias, Provider
from completions.providers.cloudflare import CloudflareProvider
from tests import fake_upstream, workers_ai_models
from tests.conftest import LLAMA
from tests.fake_upstream import RETIRED_DAYS_AGO, RETIRED_MODEL, RETIRING_MODEL

pytestmark = pytest.mark.django_db

CATALOGUE_SIZE = len(workers_ai_models.names()) + 2
TEXT_GENERATION_SIZE = 16
HERMES = "@hf/nousresearch/hermes-2-pro-mistral-7b"
GPT_OSS = "@cf/openai/gpt-oss-120b"
KIMI = "@cf/moonshotai/kimi-k2.6"
VISION_LLAMA = "@cf/meta/llama-3.2-11b-vision-instruct"
BGE_BASE = "@cf/baai/bge-base-en-v1.5"
BGE_SMALL = "@cf/baai/bge-small-en-v1.5"
FLUX = "@cf/black-forest-labs/flux-1-schnell"
M2M100 = "@cf/meta/m2m100-1.2b"
WHISPER = "@cf/openai/whisper"
WHISPER_TURBO = "@cf/openai/whisper-large-v3-turbo"
MELOTTS = "@cf/myshell-ai/melotts"
AURA = "@cf/deepgram/aura-1"
LLAMA_GUARD = "@cf/meta/llama-guard-3-8b"
RERANKER = "@cf/baai/bge-reranker-base"
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


def schema_requests(upstream):
    return [r for r in upstream.requests if r["path"].endswith("/ai/models/schema")]


def entry_of(upstream, name):
    return next(entry for entry in upstream.catalogue if entry["name"] == name)


def today():
    return timezone.now().date()


def test_it_creates_every_new_catalogue_model_with_its_task(cloudflare):
    sync_models("--provider", "cloudflare")

    models = Model.objects.filter(provider=cloudflare)
    assert models.count() == CATALOGUE_SIZE + len(FAULT_MODELS) + 1
    generators = models.filter(task=Model.TEXT_GENERATION)
    assert generators.count() == TEXT_GENERATION_SIZE + len(FAULT_MODELS)
    assert models.filter(task=Model.TEXT_EMBEDDINGS).count() == 3 + 1
    assert models.filter(task="Text-to-Image").count() == 2
    hermes = Model.objects.get(name=HERMES)
    assert hermes.description == workers_ai_models.entry(HERMES)["description"]
    assert hermes.enabled


def test_only_text_generation_models_offer_chat_and_only_embedding_models_embed(cloudflare):
    sync_models("--provider", "cloudflare")

    hermes = Model.objects.get(name=HERMES).capabilities
    assert {name for name, on in hermes.items() if on} == {"chat", "completions"}
    bge = Model.objects.get(name=BGE_BASE).capabilities
    assert {name for name, on in bge.items() if on} == {"embeddings"}
    flux = Model.objects.get(name=FLUX).capabilities
    assert {name for name, on in flux.items() if on} == {"images"}
    assert not any(Model.objects.get(name=M2M100).capabilities.values())


def test_each_media_task_gets_the_capability_of_its_endpoint(cloudflare):
    sync_models("--provider", "cloudflare")

    def capabilities(name):
        return {cap for cap, on in Model.objects.get(name=name).capabilities.items() if on}

    assert capabilities(WHISPER) == {"transcriptions"}
    # whisper-large-v3-turbo's schema takes task "translate".
    assert capabilities(WHISPER_TURBO) == {"transcriptions", "translations"}
    assert capabilities(MELOTTS) == {"speech"}
    assert capabilities(LLAMA_GUARD) == {"chat", "completions", "moderations"}
    assert capabilities(RERANKER) == {"rerank"}


def test_it_prices_speech_recognition_per_second_from_the_price_per_audio_minute(cloudflare):
    sync_models("--provider", "cloudflare")

    # whisper-large-v3-turbo's catalogue price: $0.00051 per audio minute.
    assert Model.objects.get(name=WHISPER_TURBO).unit_price == Decimal("0.0000085")
    # aura-1 is priced per audio minute too, but its requests are counted in characters.
    assert Model.objects.get(name=AURA).unit_price is None


def test_it_keeps_slashes_in_model_ids(cloudflare):
    sync_models("--provider", "cloudflare")

    assert Model.objects.filter(name=VISION_LLAMA).exists()
    assert not Model.objects.filter(name__contains="%2F").exists()


def test_it_reads_pages_until_one_comes_back_empty(cloudflare, upstream, monkeypatch):
    # Pages of 10, so the catalogue of 27 takes three full or part pages, then an empty one:
    # a part page is no sign of the end, as the number of models per page is not promised.
    monkeypatch.setattr(CloudflareProvider, "catalogue_page_size", 10)

    sync_models("--provider", "cloudflare")

    assert [r["query"]["page"] for r in catalogue_requests(upstream)] == ["1", "2", "3", "4"]
    assert {r["query"]["per_page"] for r in catalogue_requests(upstream)} == {"10"}
    imported = set(Model.objects.filter(provider=cloudflare).values_list("name", flat=True))
    assert {entry["name"] for entry in upstream.catalogue} <= imported


def test_a_catalogue_that_never_ends_fails_the_sync_at_the_page_limit(
    cloudflare, upstream, monkeypatch
):
    monkeypatch.setattr(CloudflareProvider, "catalogue_page_size", 10)
    monkeypatch.setattr(CloudflareProvider, "catalogue_max_pages", 2)

    with pytest.raises(CommandError, match="did not end within 2 pages"):
        sync_models("--provider", "cloudflare")

    assert len(catalogue_requests(upstream)) == 2
    assert not Model.objects.filter(name=HERMES).exists()


def test_it_updates_task_and_description_of_known_models(cloudflare):
    Model.objects.filter(name=BGE_BASE).delete()
    Model.objects.create(name=BGE_BASE, provider=cloudflare, description="old words")

    out, _ = sync_models("--provider", "cloudflare")

    bge_base = Model.objects.get(name=BGE_BASE)
    assert bge_base.task == Model.TEXT_EMBEDDINGS
    assert bge_base.description == workers_ai_models.entry(BGE_BASE)["description"]
    assert (
        Model.objects.get(name=LLAMA).description == workers_ai_models.entry(LLAMA)["description"]
    )
    # llama and bge-base were known; the other 25 are new; bge-small and the faults missing.
    assert "cloudflare: 25 created, 2 updated, 0 unchanged, 9 missing, 0 skipped" in out


def test_it_leaves_a_model_hidden_in_the_admin_hidden(cloudflare):
    Model.objects.filter(name=LLAMA).update(enabled=False)

    sync_models("--provider", "cloudflare")

    assert not Model.objects.get(name=LLAMA).enabled


def test_a_second_sync_changes_nothing(cloudflare):
    sync_models("--provider", "cloudflare")
    fields = [
        "name",
        "provider",
        "task",
        "description",
        "enabled",
        "accepts_images",
        "input_price",
        "output_price",
        "cached_input_price",
        "context_window",
        "deprecation_date",
        "properties",
        "input_schema",
        "output_schema",
    ]
    before = list(Model.objects.values_list(*fields))

    out, _ = sync_models("--provider", "cloudflare")

    assert "cloudflare: 0 created, 0 updated, 27 unchanged, 9 missing, 0 skipped" in out
    assert list(Model.objects.values_list(*fields)) == before


def test_models_gone_from_the_catalogue_are_kept_and_listed(cloudflare, upstream):
    upstream.catalogue = [m for m in upstream.catalogue if m["name"] != HERMES]
    sync_models("--provider", "cloudflare")
    upstream.reset()
    upstream.catalogue = [m for m in upstream.catalogue if m["name"] != LLAMA]

    out, _ = sync_models("--provider", "cloudflare")

    assert "cloudflare: 1 created, 0 updated, 25 unchanged, 10 missing, 0 skipped" in out
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
    Model.objects.create(name="@cf/baai/bge-m3", provider=cloudflare, task=Model.TEXT_EMBEDDINGS)
    for entry in upstream.catalogue:
        if entry["name"] in (BGE_BASE, "@cf/baai/bge-m3", HERMES):
            entry["task"] = {}

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name="@cf/baai/bge-m3").task == Model.TEXT_EMBEDDINGS
    # A new model whose task is not known is taken for a text generation model.
    assert Model.objects.get(name=HERMES).task == Model.TEXT_GENERATION
    assert Model.objects.get(name=BGE_BASE).task == Model.TEXT_GENERATION


def test_it_imports_prices_per_million_tokens_where_the_catalogue_gives_them(cloudflare):
    sync_models("--provider", "cloudflare")

    gpt_oss = Model.objects.get(name=GPT_OSS)
    assert (gpt_oss.input_price, gpt_oss.output_price) == (Decimal("0.35"), Decimal("0.75"))
    vision = Model.objects.get(name=VISION_LLAMA)
    assert (vision.input_price, vision.output_price) == (Decimal("0.049"), Decimal("0.68"))
    assert Model.objects.get(name=HERMES).input_price is None


def test_a_catalogue_price_replaces_the_stored_one(cloudflare):
    sync_models("--provider", "cloudflare")
    Model.objects.filter(name=GPT_OSS).update(output_price=Decimal("9"))

    out, _ = sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=GPT_OSS).output_price == Decimal("0.75")
    assert "cloudflare: 0 created, 1 updated, 26 unchanged" in out


def test_a_catalogue_without_prices_keeps_those_set_in_the_admin(cloudflare, upstream):
    sync_models("--provider", "cloudflare")
    Model.objects.filter(name=GPT_OSS).update(input_price=Decimal("1.5"), output_price=Decimal("2"))
    for entry in upstream.catalogue:
        entry["properties"] = [p for p in entry["properties"] if p["property_id"] != "price"]

    sync_models("--provider", "cloudflare")

    gpt_oss = Model.objects.get(name=GPT_OSS)
    assert (gpt_oss.input_price, gpt_oss.output_price) == (Decimal("1.5"), Decimal("2"))


def test_prices_in_other_units_or_currencies_are_left_out(cloudflare, upstream):
    for entry in upstream.catalogue:
        if entry["name"] == HERMES:
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

    hermes = Model.objects.get(name=HERMES)
    assert (hermes.input_price, hermes.output_price) == (None, None)


def test_a_free_model_is_imported_with_a_price_of_zero(cloudflare, upstream):
    for entry in upstream.catalogue:
        if entry["name"] == HERMES:
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

    assert Model.objects.get(name=HERMES).input_price == Decimal("0")


def test_a_name_owned_by_another_provider_is_skipped_with_a_warning(cloudflare, openai_upstream):
    Model.objects.create(name=HERMES, provider=openai_upstream, description="Served locally.")

    out, err = sync_models("--provider", "cloudflare")

    hermes = Model.objects.get(name=HERMES)
    assert hermes.provider == openai_upstream
    assert hermes.description == "Served locally."
    assert f"skipped '{HERMES}': it already belongs to provider 'openai-fake'" in err
    assert "cloudflare: 25 created, 1 updated, 0 unchanged, 9 missing, 1 skipped" in out


def test_a_name_that_is_an_alias_is_skipped_with_a_warning(cloudflare, upstream):
    ModelAlias.objects.create(name=HERMES, model=Model.objects.get(name=LLAMA))

    _, err = sync_models("--provider", "cloudflare")

    assert not Model.objects.filter(name=HERMES).exists()
    assert f"skipped '{HERMES}': it is already an alias" in err


def test_it_imports_an_openai_compatible_catalogue(openai_upstream):
    out, _ = sync_models("--provider", "openai-fake")

    assert Model.objects.get(name="text-embed-test").provider == openai_upstream
    assert "openai-fake: 1 created, 0 updated, 1 unchanged, 2 missing, 0 skipped" in out


def test_it_reads_a_vllm_models_max_model_len_as_its_context_window(openai_upstream, monkeypatch):
    # vLLM's /v1/models lists each model with the window it serves (ModelCard.max_model_len).
    served = [{**entry, "max_model_len": 8192} for entry in fake_upstream.OPENAI_MODELS]
    served.append({"id": "no-window", "object": "model", "max_model_len": "8192"})
    served.append({"id": "absurd-window", "object": "model", "max_model_len": 10**30})
    monkeypatch.setattr(fake_upstream, "OPENAI_MODELS", served)

    sync_models("--provider", "openai-fake")

    assert Model.objects.get(name="gpt-test-mini").context_window == 8192
    assert Model.objects.get(name="text-embed-test").context_window == 8192
    assert Model.objects.get(name="no-window").context_window is None
    assert Model.objects.get(name="absurd-window").context_window is None


def test_without_provider_it_syncs_every_active_provider(cloudflare, openai_upstream, upstream):
    Provider.objects.exclude(pk__in=[cloudflare.pk, openai_upstream.pk]).update(is_active=False)

    out, _ = sync_models()

    assert "cloudflare: 26 created" in out
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

    assert Model.objects.filter(name=HERMES).exists()


def test_an_unknown_provider_name_is_refused(cloudflare):
    with pytest.raises(CommandError, match="--provider: no provider is named 'nope'"):
        sync_models("--provider", "nope")


def test_refused_credentials_fail_the_command(cloudflare, monkeypatch):
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_CF_TOKEN", "wrong-token")

    with pytest.raises(CommandError, match="refused the gateway's credentials"):
        sync_models("--provider", "cloudflare")

    assert not Model.objects.filter(name=HERMES).exists()


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
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_CF_TOKEN", "wrong-token")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="Could not sync cloudflare: "):
        call_command("sync_models", stdout=out, stderr=err)

    assert "openai-fake: 1 created" in out.getvalue()
    assert "cloudflare: could not fetch the catalogue" in err.getvalue()
    assert Model.objects.filter(name="text-embed-test").exists()


# Deprecation


def test_a_model_past_its_deprecation_date_is_imported_disabled_and_reported(cloudflare, upstream):
    out, _ = sync_models("--provider", "cloudflare")

    assert all(r["query"]["include_deprecated"] == "true" for r in catalogue_requests(upstream))
    retired = Model.objects.get(name=RETIRED_MODEL)
    assert not retired.enabled
    assert retired.deprecation_date == today() - datetime.timedelta(days=RETIRED_DAYS_AGO)
    assert retired.is_retired()
    report = out.split("past their deprecation date, disabled:", 1)[1]
    assert f"{RETIRED_MODEL} (since {retired.deprecation_date})" in report


def test_an_enabled_model_whose_date_has_passed_is_disabled_and_reported(cloudflare, upstream):
    yesterday = today() - datetime.timedelta(days=1)
    entry_of(upstream, LLAMA)["properties"].append(
        {"property_id": "planned_deprecation_date", "value": yesterday.isoformat()}
    )

    out, _ = sync_models("--provider", "cloudflare")

    llama = Model.objects.get(name=LLAMA)
    assert not llama.enabled
    assert llama.deprecation_date == yesterday
    assert f"{LLAMA} (since {yesterday})" in out.split("past their deprecation date", 1)[1]


def test_a_model_with_a_date_to_come_stays_enabled_and_shows_its_date(cloudflare, upstream):
    out, _ = sync_models("--provider", "cloudflare")

    retiring = Model.objects.get(name=RETIRING_MODEL)
    assert retiring.enabled
    assert retiring.deprecation_date > today()
    assert not retiring.is_retired()
    assert f"{RETIRING_MODEL} (on {retiring.deprecation_date})" in out


def test_a_date_withdrawn_from_the_catalogue_is_cleared(cloudflare, upstream):
    sync_models("--provider", "cloudflare")
    entry = entry_of(upstream, RETIRING_MODEL)
    entry["properties"] = [
        p for p in entry["properties"] if p["property_id"] != "planned_deprecation_date"
    ]

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=RETIRING_MODEL).deprecation_date is None


def test_a_date_set_in_the_admin_is_kept_when_the_catalogue_gives_none(cloudflare):
    Model.objects.filter(name=LLAMA).update(deprecation_date=datetime.date(2099, 1, 1))

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=LLAMA).deprecation_date == datetime.date(2099, 1, 1)


# Properties


def test_it_stores_the_catalogue_properties_context_window_and_cached_price(cloudflare):
    sync_models("--provider", "cloudflare")

    kimi = Model.objects.get(name=KIMI)
    assert kimi.properties == workers_ai_models.properties(KIMI)
    assert kimi.context_window == 262144
    assert (kimi.input_price, kimi.output_price) == (Decimal("0.95"), Decimal("4"))
    assert kimi.cached_input_price == Decimal("0.16")
    assert kimi.calls_functions is True
    assert kimi.reasons is True
    hermes = Model.objects.get(name=HERMES)
    assert (hermes.calls_functions, hermes.reasons) == (True, False)
    assert hermes.context_window == 24000


def test_a_model_the_catalogue_says_takes_images_is_imported_taking_them(cloudflare):
    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=KIMI).accepts_images
    assert not Model.objects.get(name=GPT_OSS).accepts_images


def test_the_operators_choice_of_images_survives_a_sync(cloudflare):
    sync_models("--provider", "cloudflare")
    # Turned off for a model the catalogue says takes images, on for one it says nothing of.
    Model.objects.filter(name=KIMI).update(accepts_images=False)
    Model.objects.filter(name=VISION_LLAMA).update(accepts_images=True)

    sync_models("--provider", "cloudflare")

    assert not Model.objects.get(name=KIMI).accepts_images
    assert Model.objects.get(name=VISION_LLAMA).accepts_images


def test_a_known_model_the_catalogue_newly_says_takes_images_is_set_to_take_them(
    cloudflare, upstream
):
    sync_models("--provider", "cloudflare")
    entry_of(upstream, GPT_OSS)["properties"].append({"property_id": "vision", "value": "true"})

    sync_models("--provider", "cloudflare")

    assert Model.objects.get(name=GPT_OSS).accepts_images


# Schemas


def test_it_stores_the_schemas_of_text_generation_and_embedding_models(cloudflare, upstream):
    sync_models("--provider", "cloudflare")

    gpt_oss = Model.objects.get(name=GPT_OSS)
    assert gpt_oss.input_schema == workers_ai_models.schema(GPT_OSS)["input"]
    assert gpt_oss.output_schema == workers_ai_models.schema(GPT_OSS)["output"]
    assert (
        Model.objects.get(name=BGE_BASE).input_schema == workers_ai_models.schema(BGE_BASE)["input"]
    )
    # The media endpoints read their models' schemas too (sizes, audio forms, voices).
    assert Model.objects.get(name=FLUX).input_schema == workers_ai_models.schema(FLUX)["input"]
    # Models of other tasks are not served, so their schemas are not asked for.
    assert Model.objects.get(name=M2M100).input_schema is None
    asked = {r["query"]["model"] for r in schema_requests(upstream)}
    assert M2M100 not in asked
    # 3 embedding models, 2 image models, 2 speech recognition, 2 text-to-speech, 1 reranker.
    assert len(asked) == TEXT_GENERATION_SIZE + 3 + 7


def test_a_failing_schema_fetch_is_reported_and_keeps_the_stored_schema(cloudflare, upstream):
    stored = {"type": "object", "properties": {"prompt": {"type": "string"}}}
    Model.objects.filter(name="@cf/test/fail-500").update(input_schema=stored)
    failing = {**entry_of(upstream, LLAMA), "name": "@cf/test/fail-500", "description": "x"}
    upstream.catalogue.append(failing)

    out, err = sync_models("--provider", "cloudflare")

    assert "could not fetch the schema of '@cf/test/fail-500'" in err
    fail_500 = Model.objects.get(name="@cf/test/fail-500")
    assert fail_500.input_schema == stored
    assert fail_500.description == "x"
    assert (
        Model.objects.get(name=GPT_OSS).input_schema == workers_ai_models.schema(GPT_OSS)["input"]
    )
    assert "cloudflare: 26 created" in out


def test_no_schemas_skips_the_schema_requests(cloudflare, upstream):
    sync_models("--provider", "cloudflare", "--no-schemas")

    assert schema_requests(upstream) == []
    assert Model.objects.get(name=GPT_OSS).input_schema is None
    assert Model.objects.get(name=GPT_OSS).input_price == Decimal("0.35")

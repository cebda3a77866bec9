"""POST /v1/moderations through Llama Guard 3: its S1-S14 verdict in OpenAI's categories.

The fake's Llama Guard finds S1 (violent crimes) in a text with "kill" and S10 (hate) in
one with "hate"; named with "no-usage", it answers without token counts.
"""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.media_views import LLAMA_GUARD_CATEGORIES, OPENAI_CATEGORIES
from completions.models import Model
from tests import media_models, workers_ai_models
from tests.conftest import LLAMA
from tests.media_models import LLAMA_GUARD

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def guard(cloudflare):
    return media_models.add(cloudflare, LLAMA_GUARD)


async def _moderate(api, persona, **body):
    body.setdefault("model", LLAMA_GUARD)
    return await api.post(
        "/v1/moderations", data=body, content_type="application/json", headers=persona.headers
    )


def _runs(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


async def test_it_passes_a_safe_text(api, alice, guard, upstream):
    response = await _moderate(api, alice, input="What a lovely garden.")

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == LLAMA_GUARD
    [result] = body["results"]
    assert result["flagged"] is False
    assert set(result["categories"]) == set(OPENAI_CATEGORIES)
    assert not any(result["categories"].values())
    assert set(result["category_scores"].values()) == {0.0}
    [sent] = _runs(upstream)
    assert sent["json"] == {
        "messages": [{"role": "user", "content": "What a lovely garden."}],
        "response_format": {"type": "json_object"},
    }


async def test_it_flags_a_text_in_the_openai_categories_of_its_hazards(api, alice, guard):
    response = await _moderate(api, alice, input="I will kill them all")

    [result] = response.json()["results"]
    assert result["flagged"] is True
    flagged = {name for name, on in result["categories"].items() if on}
    assert flagged == {"violence", "illicit/violent"}
    assert result["category_scores"]["violence"] == 1.0
    assert result["category_scores"]["hate"] == 0.0
    assert result["category_applied_input_types"]["violence"] == ["text"]


async def test_it_answers_each_text_of_a_list_in_order(api, alice, guard, upstream):
    response = await _moderate(api, alice, input=["fine words", "words of hate", "kill"])

    results = response.json()["results"]
    assert [r["flagged"] for r in results] == [False, True, True]
    assert results[1]["categories"]["hate"] is True
    assert len(_runs(upstream)) == 3


def test_every_llama_guard_category_maps_to_openai_categories_or_none():
    assert set(LLAMA_GUARD_CATEGORIES) == {f"S{n}" for n in range(1, 15)}
    for names in LLAMA_GUARD_CATEGORIES.values():
        assert set(names) <= set(OPENAI_CATEGORIES)


async def test_it_refuses_a_chat_model_that_is_no_classifier(api, alice, guard):
    response = await _moderate(api, alice, model=LLAMA, input="hello")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_model"


async def test_it_refuses_a_read_only_key(api, bob, guard, upstream):
    response = await _moderate(api, bob, input="hello")

    assert response.status_code == 403
    assert _runs(upstream) == []


async def test_it_records_the_classifiers_tokens_at_its_token_prices(api, alice, guard):
    await sync_to_async(Model.objects.filter(name=LLAMA_GUARD).update)(
        input_price=Decimal("0.48"), output_price=Decimal("0.03")
    )

    await _moderate(api, alice, input=["one two three", "four five"])

    [record] = await sync_to_async(list)(UsageRecord.objects.all())
    assert record.endpoint == "/v1/moderations"
    assert record.unit == UsageRecord.TOKENS
    # The fake counts a word a token, and answers in 2.
    assert (record.prompt_tokens, record.completion_tokens) == (5, 4)
    assert record.units == 9
    assert record.cost == Decimal("0.00000252")


def _guard_without_usage(provider):
    """Create a Llama Guard whose answers carry no token counts (the fake's no-usage)."""
    entry = workers_ai_models.entry(LLAMA_GUARD)
    return Model.objects.create(
        name="@cf/test/llama-guard-3-8b-no-usage",
        provider=provider,
        task=entry["task"]["name"],
        input_schema=entry["schema"]["input"],
        output_schema=entry["schema"]["output"],
        input_price=Decimal("0.48"),
        output_price=Decimal("0.03"),
    )


async def test_it_charges_the_gateways_count_when_the_classifier_reports_no_usage(
    api, alice, cloudflare
):
    model = await sync_to_async(_guard_without_usage)(cloudflare)
    texts = ["one two three", "four five"]

    response = await _moderate(api, alice, model=model.name, input=texts)

    assert response.status_code == 200
    assert [r["flagged"] for r in response.json()["results"]] == [False, False]
    [record] = await sync_to_async(list)(UsageRecord.objects.all())
    # "one two three" (13 characters) and "four five" (9) at 4 ASCII characters a token.
    counted = 4 + 3
    assert (record.prompt_tokens, record.completion_tokens) == (counted, 0)
    assert record.tokens_estimated
    # The input price is per million tokens.
    assert record.cost == counted * Decimal("0.48") / 1_000_000

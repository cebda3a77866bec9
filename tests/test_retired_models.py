"""Models past their deprecation date: not listed, not served, not used as fallbacks.

A model the provider has retired answers Workers AI's own "no such model" error at best, so
the gateway refuses it itself, naming the date, even while it is enabled (between the date
and the next sync_models, which disables it). A date still to come changes nothing but the
date shown in /v1/models.
"""

import datetime

import pytest
from django.utils import timezone

from completions.models import Model, ModelFallback
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there"}]
YESTERDAY = timezone.now().date() - datetime.timedelta(days=1)
NEXT_YEAR = timezone.now().date() + datetime.timedelta(days=365)


async def _chat(api, persona, model):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES},
        content_type="application/json",
        headers=persona.headers,
    )


async def _listed(api, persona):
    response = await api.get("/v1/models", headers=persona.headers)
    return {entry["id"]: entry for entry in response.json()["data"]}


async def test_the_model_list_shows_a_deprecation_date_to_come(api, alice, cloudflare):
    await Model.objects.filter(name=LLAMA).aupdate(deprecation_date=NEXT_YEAR)

    listed = await _listed(api, alice)

    assert listed[LLAMA]["deprecation_date"] == NEXT_YEAR.isoformat()
    assert listed["gpt-4o-mini"]["deprecation_date"] == NEXT_YEAR.isoformat()
    assert listed["@cf/test/slow"]["deprecation_date"] is None
    detail = await api.get(f"/v1/models/{LLAMA}", headers=alice.headers)
    assert detail.json()["deprecation_date"] == NEXT_YEAR.isoformat()


async def test_a_model_with_a_date_to_come_is_served(api, alice, cloudflare):
    await Model.objects.filter(name=LLAMA).aupdate(deprecation_date=NEXT_YEAR)

    response = await _chat(api, alice, LLAMA)

    assert response.status_code == 200


async def test_a_model_past_its_date_is_not_listed_though_enabled(api, alice, cloudflare):
    await Model.objects.filter(name=LLAMA).aupdate(deprecation_date=YESTERDAY)

    listed = await _listed(api, alice)

    assert LLAMA not in listed
    assert "gpt-4o-mini" not in listed
    assert "@cf/test/slow" in listed


async def test_a_model_past_its_date_is_refused_naming_the_date(api, alice, cloudflare, upstream):
    await Model.objects.filter(name=LLAMA).aupdate(deprecation_date=YESTERDAY)
    upstream.reset()

    for name in (LLAMA, "gpt-4o-mini"):
        response = await _chat(api, alice, name)

        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "model_not_found"
        assert error["param"] == "model"
        assert f"retired by its provider on {YESTERDAY}" in error["message"]
    assert upstream.requests == []


async def test_a_fallback_past_its_date_is_skipped(api, alice, cloudflare, settings):
    settings.UPSTREAM_RETRIES = 0
    failing = await Model.objects.aget(name="@cf/test/fail-500")
    await ModelFallback.objects.acreate(
        model=failing, fallback=await Model.objects.aget(name=LLAMA), position=0
    )
    await Model.objects.filter(name=LLAMA).aupdate(deprecation_date=YESTERDAY)

    response = await _chat(api, alice, "@cf/test/fail-500")

    assert response.status_code == 502

"""Checks that the fake upstream's Workers AI catalogue and schemas follow Cloudflare's API."""

from collections.abc import Iterator

import httpx
import pytest

from tests import workers_ai_models
from tests.fake_upstream import (
    CLOUDFLARE_ACCOUNT,
    CLOUDFLARE_TOKEN,
    RETIRED_MODEL,
    RETIRING_MODEL,
    FakeUpstream,
)

HEADERS = {"Authorization": f"Bearer {CLOUDFLARE_TOKEN}"}
LLAMA = "@cf/meta/llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def running_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream().start() as upstream:
        yield upstream


@pytest.fixture
def upstream(running_upstream: FakeUpstream) -> FakeUpstream:
    running_upstream.reset()
    return running_upstream


def search(upstream: FakeUpstream, **params: object) -> httpx.Response:
    url = f"{upstream.cloudflare_base_url}/accounts/{CLOUDFLARE_ACCOUNT}/ai/models/search"
    return httpx.get(url, params=params, headers=HEADERS)


def every_name(upstream: FakeUpstream, **params: object) -> list[str]:
    names, page = [], 1
    while batch := search(upstream, page=page, per_page=10, **params).json()["result"]:
        names += [entry["name"] for entry in batch]
        page += 1
    return names


def schema(upstream: FakeUpstream, model: str) -> httpx.Response:
    url = f"{upstream.cloudflare_base_url}/accounts/{CLOUDFLARE_ACCOUNT}/ai/models/schema"
    return httpx.get(url, params={"model": model}, headers=HEADERS)


def test_the_catalogue_lists_cloudflares_own_entries_without_their_schemas(upstream):
    body = search(upstream, page=1, per_page=100).json()

    assert body["success"] is True
    listed = {entry["name"]: entry for entry in body["result"]}
    assert listed[LLAMA] == workers_ai_models.catalogue_entry(LLAMA)
    assert set(workers_ai_models.names()) <= set(listed)
    assert not any("schema" in entry for entry in listed.values())


def test_pages_end_with_an_empty_one(upstream):
    names = every_name(upstream, include_deprecated="true")

    assert len(names) == len(set(names)) == len(workers_ai_models.names()) + 2
    assert search(upstream, page=99, per_page=10).json()["result"] == []


def test_models_past_their_deprecation_date_are_listed_only_when_asked_for(upstream):
    hidden = every_name(upstream)
    shown = every_name(upstream, include_deprecated="true")

    assert RETIRED_MODEL not in hidden
    assert RETIRED_MODEL in shown
    # A date still to come hides nothing.
    assert RETIRING_MODEL in hidden


def test_models_past_the_grace_window_are_not_listed_at_all(upstream):
    for entry in upstream.catalogue:
        if entry["name"] == RETIRED_MODEL:
            entry["properties"][-1]["value"] = "2020-01-01"

    assert RETIRED_MODEL not in every_name(upstream, include_deprecated="true")


def test_the_schema_of_a_model_is_its_fixture_schema(upstream):
    response = schema(upstream, LLAMA)

    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["result"] == workers_ai_models.schema(LLAMA)


def test_the_schema_of_an_unknown_model_is_a_404_in_cloudflares_envelope(upstream):
    response = schema(upstream, "@cf/nobody/nothing")

    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["errors"][0]["code"] == 3042

"""CORS: the API answers browsers from any origin (or those CORS_ALLOWED_ORIGINS lists),
with the headers the openai SDKs send; the admin answers no other origin."""

import pytest

from tests.client import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "https://chat.example.org"
SDK_HEADERS = (
    "authorization, content-type, openai-organization, openai-project, openai-beta, "
    "x-stainless-lang, x-stainless-os, x-stainless-arch, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-package-version, x-stainless-retry-count, "
    "x-stainless-timeout"
)


async def _preflight(path, requested=SDK_HEADERS, origin=ORIGIN, method="POST"):
    return await AsyncClient().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": requested,
        },
    )


def _listed(response, header):
    return {name.strip().lower() for name in response.get(header, "").split(",") if name.strip()}


async def test_a_preflight_from_any_origin_is_allowed_without_a_key():
    response = await _preflight("/v1/chat/completions")

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert {"GET", "POST"} <= {
        m.strip() for m in response["Access-Control-Allow-Methods"].split(",")
    }
    assert int(response["Access-Control-Max-Age"]) > 0


async def test_a_preflight_allows_every_header_the_browser_sdk_sends():
    response = await _preflight("/v1/chat/completions")

    assert _listed(response, "Access-Control-Allow-Headers") >= _listed({"h": SDK_HEADERS}, "h")


async def test_a_preflight_allows_an_x_stainless_header_it_has_not_heard_of():
    response = await _preflight(
        "/v1/chat/completions", requested="authorization, x-stainless-poll-helper"
    )

    assert "x-stainless-poll-helper" in _listed(response, "Access-Control-Allow-Headers")


async def test_a_preflight_does_not_allow_any_other_header():
    response = await _preflight("/v1/chat/completions", requested="x-internal-override")

    assert "x-internal-override" not in _listed(response, "Access-Control-Allow-Headers")


async def test_a_browser_can_read_the_request_id_and_rate_limit_headers(alice):
    response = await AsyncClient().get("/v1/models", headers={**alice.headers, "Origin": ORIGIN})

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    exposed = _listed(response, "Access-Control-Expose-Headers")
    assert {
        "x-request-id",
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    } <= exposed


async def test_a_browser_can_read_an_error():
    # Without CORS headers on the 401, the SDK would see only a network error.
    response = await AsyncClient().get("/v1/models", headers={"Origin": ORIGIN})

    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == "*"


async def test_credentials_are_never_allowed(alice):
    # Keys authenticate the API, not cookies: a page must not ride on the admin's session.
    response = await AsyncClient().get("/v1/models", headers={**alice.headers, "Origin": ORIGIN})

    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.parametrize("path", ["/admin/", "/admin/login/"])
async def test_the_admin_answers_no_other_origin(path):
    preflight = await _preflight(path, method="POST")
    page = await AsyncClient().get(path, headers={"Origin": ORIGIN})

    assert "Access-Control-Allow-Origin" not in preflight
    assert "Access-Control-Allow-Origin" not in page


async def test_listed_origins_replace_any_origin(alice, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    settings.CORS_ALLOW_ALL_ORIGINS = False

    listed = await AsyncClient().get(
        "/v1/models", headers={**alice.headers, "Origin": "https://app.example.com"}
    )
    other = await AsyncClient().get("/v1/models", headers={**alice.headers, "Origin": ORIGIN})

    assert listed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Origin" not in other


async def test_a_browser_may_delete_a_stored_response():
    response = await _preflight("/v1/responses/resp_123", method="DELETE")

    assert response.status_code == 200
    assert "DELETE" in {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}

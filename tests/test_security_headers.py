"""Security headers on every response: the API's strict policy, the admin's own, and HSTS
in production behind a proxy that terminates TLS."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.client import AsyncClient, Client
from tests.conftest import LLAMA

ROOT = Path(__file__).resolve().parent.parent
API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
# A production SECRET_KEY: 50 characters, more than 5 of them different.
PRODUCTION_SECRET_KEY = "production-only-" + "k7Qx" * 9
HEADERS_OF = """
import json, django
django.setup()
from tests.client import Client
client = Client(HTTP_HOST="api.example.com")
answers = {}
for name, path, headers in [
    ("plain", "/v1/models", {}),
    ("proxied", "/v1/models", {"X-Forwarded-Proto": "https"}),
    ("health", "/healthz", {}),
]:
    response = client.get(path, headers=headers)
    answers[name] = {"status": response.status_code, **dict(response.headers)}
print(json.dumps(answers))
"""


def _directives(policy):
    return {part.split()[0]: set(part.split()[1:]) for part in policy.split(";") if part.strip()}


def _assert_common_headers(response):
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-XSS-Protection"] == "0"
    policy = response["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in policy


async def _requests(api, alice):
    """Yield (name, response) for a sample of the API's answers, good and bad."""
    headers = alice.headers
    body = {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}]}
    yield "models", await api.get("/v1/models", headers=headers)
    yield "no key", await api.get("/v1/models")
    yield "unknown path", await api.get("/v1/nothing", headers=headers)
    yield "wrong method", await api.delete("/v1/models", headers=headers)
    yield "openapi", await api.get("/v1/openapi.json")
    yield "health", await api.get("/healthz")
    yield (
        "chat",
        await api.post(
            "/v1/chat/completions", data=body, content_type="application/json", headers=headers
        ),
    )
    stream = await api.post(
        "/v1/chat/completions",
        data={**body, "stream": True},
        content_type="application/json",
        headers=headers,
    )
    [chunk async for chunk in stream.streaming_content]
    yield "stream", stream


@pytest.mark.django_db(transaction=True)
async def test_every_api_response_carries_the_security_headers(api, alice, cloudflare):
    seen = []
    async for name, response in _requests(api, alice):
        seen.append(name)
        _assert_common_headers(response)
        assert _directives(response["Content-Security-Policy"]) == _directives(API_CSP), name

    assert len(seen) == 8


def test_the_admin_gets_a_policy_that_allows_its_own_files_and_nothing_inline(db):
    response = Client().get("/admin/login/")

    assert response.status_code == 200
    _assert_common_headers(response)
    policy = _directives(response["Content-Security-Policy"])
    assert policy["default-src"] == {"'none'"}
    assert policy["script-src"] == {"'self'"}
    assert policy["style-src"] == {"'self'"}
    assert policy["form-action"] == {"'self'"}
    assert policy["frame-ancestors"] == {"'none'"}
    assert not any("unsafe" in value for values in policy.values() for value in values)


def test_an_admin_page_with_inline_code_runs_it_by_nonce(db):
    User.objects.create_superuser("root", "root@example.com", "a-long-admin-password")
    client = Client()
    client.login(username="root", password="a-long-admin-password")

    response = client.post(
        "/admin/apikeys/apikey/add/",
        {"name": "ci", "permissions": "read-write", "rate_limit": "100/h"},
    )

    assert response.status_code == 200
    policy = _directives(response["Content-Security-Policy"])
    nonces = [v for v in policy["script-src"] if v.startswith("'nonce-")]
    assert len(nonces) == 1
    nonce = nonces[0][len("'nonce-") : -1]
    assert f"'nonce-{nonce}'" in policy["style-src"]
    page = response.content.decode()
    # The key's page copies its secret with a script, and styles it, both inline.
    assert re.search(rf'<script nonce="{re.escape(nonce)}">', page)
    assert re.search(rf'<style nonce="{re.escape(nonce)}">', page)
    assert "style=" not in page.split('id="content-main"')[1]


@pytest.mark.django_db(transaction=True)
async def test_hsts_is_sent_over_https_only(api, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True

    secure = await AsyncClient().get("/healthz", secure=True)
    plain = await AsyncClient().get("/healthz")

    assert secure["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
    assert "Strict-Transport-Security" not in plain


def _production_headers(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "TRUST_"))}
    process = subprocess.run(
        [sys.executable, "-c", HEADERS_OF],
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "gateway.settings",
            "ENVIRONMENT": "production",
            "SECRET_KEY": PRODUCTION_SECRET_KEY,
            "ALLOWED_HOSTS": "api.example.com",
            "METRICS_TOKEN": "scrape-" + "m3Tz" * 6,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_production_behind_a_tls_proxy_sends_hsts_for_a_year():
    answers = _production_headers(TRUST_X_FORWARDED_PROTO="true")

    proxied = answers["proxied"]
    assert proxied["status"] == 401
    assert proxied["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")


def test_production_redirects_plain_http_to_https_but_not_the_health_check():
    answers = _production_headers(TRUST_X_FORWARDED_PROTO="true")

    assert answers["plain"]["status"] == 301
    assert answers["plain"]["Location"] == "https://api.example.com/v1/models"
    assert answers["health"]["status"] == 200


def test_production_without_a_trusted_proxy_takes_no_forwarded_scheme():
    # Anyone could send X-Forwarded-Proto; only a proxy the operator names is believed.
    answers = _production_headers()

    assert answers["proxied"]["status"] == 301
    assert "Strict-Transport-Security" not in answers["proxied"]

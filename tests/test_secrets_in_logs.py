"""Secrets stay secret: API keys and upstream credentials never appear in logs, error pages
or the admin once a key is made, and upstream errors reach clients without the gateway's
credentials, account id or internal URLs."""

import logging
import socket

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from apikeys.models import ApiKey, UsageRecord
from completions.models import Model, Provider
from completions.providers.base import BaseProvider
from tests import fake_upstream
from tests.client import AsyncClient, Client
from tests.conftest import LLAMA

MESSAGES = [{"role": "user", "content": "hello"}]


class Recorder(logging.Handler):
    """Every log record of every logger, formatted with its traceback and extra fields."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record) + " " + repr(record.__dict__))

    @property
    def text(self):
        return "\n".join(self.lines)


@pytest.fixture
def logs():
    recorder = Recorder()
    root = logging.getLogger()
    level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    yield recorder
    root.removeHandler(recorder)
    root.setLevel(level)


def _closed_port():
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _secrets(persona, upstream):
    return [
        persona.secret,
        fake_upstream.CLOUDFLARE_TOKEN,
        fake_upstream.CLOUDFLARE_ACCOUNT,
        upstream.url.removeprefix("http://"),
    ]


def _assert_nothing_of(text, secrets):
    for secret in secrets:
        assert secret not in text


async def _chat(api, headers, model=LLAMA, **extra):
    response = await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES, **extra},
        content_type="application/json",
        headers=headers,
    )
    if response.streaming:
        response.body = b"".join([chunk async for chunk in response.streaming_content])
    return response


@pytest.mark.django_db(transaction=True)
async def test_no_key_or_credential_reaches_the_logs(api, alice, cloudflare, upstream, logs):
    # A provider whose upstream cannot be reached: the transport's error names host and port.
    down = await Provider.objects.acreate(
        name="down",
        kind=Provider.CLOUDFLARE,
        base_url=f"http://127.0.0.1:{_closed_port()}/client/v4",
        account_id=fake_upstream.CLOUDFLARE_ACCOUNT,
        api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
    )
    await Model.objects.acreate(name="@cf/test/unreachable", provider=down)
    revoked_key, revoked = await sync_to_async(ApiKey.objects.create_key)(name="old")
    await sync_to_async(revoked_key.revoke)()
    almost = alice.secret[:-1] + ("A" if alice.secret[-1] != "A" else "B")

    await _chat(api, alice.headers)
    await _chat(api, alice.headers, stream=True)
    await _chat(api, {"Authorization": f"Bearer {almost}"})
    await _chat(api, {"Authorization": f"Bearer {revoked}"})
    await _chat(api, alice.headers, model="@cf/test/fail-500")
    await _chat(api, alice.headers, model="@cf/test/cut-stream", stream=True)
    await _chat(api, alice.headers, model="@cf/test/unreachable")

    # Something was logged: the refusals and the failures.
    assert "Unauthorized" in logs.text
    assert "unreachable" in logs.text
    _assert_nothing_of(logs.text, [*_secrets(alice, upstream), almost, revoked])


@pytest.mark.django_db(transaction=True)
async def test_the_debug_error_page_hides_the_key_a_failing_frame_holds(
    alice, cloudflare, settings, monkeypatch
):
    # The database fails while the key is being looked up: `secret` is a local there.
    async def fail(secret):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(ApiKey.objects, "afor_secret", fail)
    settings.DEBUG = True

    response = await AsyncClient(raise_request_exception=False).get(
        "/v1/models", headers={**alice.headers, "Accept": "text/html"}
    )

    assert response.status_code == 500
    page = response.content.decode()
    assert "database is gone" in page
    assert alice.secret not in page


@pytest.mark.django_db(transaction=True)
async def test_the_debug_error_page_hides_the_upstream_credential(
    alice, cloudflare, upstream, settings, monkeypatch
):
    # Fails with the request to the upstream in hand: its headers carry the token.
    async def fail(self, method, url, headers, body=None, total=None):
        raise RuntimeError("the transport broke")

    monkeypatch.setattr(BaseProvider, "send", fail)
    settings.DEBUG = True

    response = await AsyncClient(raise_request_exception=False).post(
        "/v1/chat/completions",
        data={"model": LLAMA, "messages": MESSAGES},
        content_type="application/json",
        headers={**alice.headers, "Accept": "text/html"},
    )

    page = response.content.decode()
    assert "the transport broke" in page
    _assert_nothing_of(page, [alice.secret, fake_upstream.CLOUDFLARE_TOKEN])


@pytest.mark.django_db(transaction=True)
async def test_the_production_error_is_json_without_details(alice, cloudflare, monkeypatch):
    async def fail(secret):
        raise RuntimeError(f"database is gone while looking up {secret}")

    monkeypatch.setattr(ApiKey.objects, "afor_secret", fail)

    response = await AsyncClient(raise_request_exception=False).get(
        "/v1/models", headers=alice.headers
    )

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert alice.secret not in response.content.decode()


@pytest.mark.django_db
def test_the_admin_never_shows_a_key_again_once_made():
    User.objects.create_superuser("root", "root@example.com", "a-long-admin-password")
    admin = Client()
    admin.login(username="root", password="a-long-admin-password")
    created = admin.post(
        "/admin/apikeys/apikey/add/",
        {"name": "ci", "permissions": "read-write", "rate_limit": "100/h"},
    )
    key = ApiKey.objects.get(name="ci")
    secret = next(
        word.split('"')[1]
        for word in created.content.decode().split("value=")
        if word.startswith('"sk-')
    )
    assert secret.startswith(key.prefix)
    UsageRecord.objects.create(
        api_key=key,
        key_name=key.name,
        model=LLAMA,
        endpoint="/v1/chat/completions",
        request_id="req_1",
    )

    pages = [
        "/admin/",
        "/admin/apikeys/apikey/",
        f"/admin/apikeys/apikey/{key.pk}/change/",
        f"/admin/apikeys/apikey/{key.pk}/history/",
        f"/admin/apikeys/apikey/?q={key.prefix}",
        "/admin/apikeys/usagerecord/",
        "/admin/admin/logentry/",
    ]
    for page in pages:
        response = admin.get(page)
        assert response.status_code in (200, 403, 404), page
        assert secret not in response.content.decode(), page


def _upstream_failing_with(monkeypatch, status, message):
    def answer(request):
        body = {"result": None, "success": False, "errors": [{"code": 1, "message": message}]}
        return httpx.Response(status, json=body)

    monkeypatch.setattr(
        "completions.providers.base.get_client",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("status", [400, 429, 500])
async def test_an_upstream_error_reaches_the_client_without_internal_urls(
    api, alice, cloudflare, upstream, monkeypatch, settings, status
):
    settings.UPSTREAM_RETRIES = 0
    message = (
        "Model overloaded at http://10.1.2.3:8080/v1/run, retried https://gpu-7.internal/run "
        "and http://localhost:9000/x for account " + fake_upstream.CLOUDFLARE_ACCOUNT + "; see "
        "https://developers.cloudflare.com/workers-ai/ for help"
    )
    _upstream_failing_with(monkeypatch, status, message)

    response = await _chat(api, alice.headers)

    text = response.json()["error"]["message"]
    assert "Model overloaded at" in text
    _assert_nothing_of(
        text,
        ["10.1.2.3", "gpu-7.internal", "localhost:9000", fake_upstream.CLOUDFLARE_ACCOUNT],
    )
    # A public link, to the provider's documentation, tells the client where to read on.
    assert "https://developers.cloudflare.com/workers-ai/" in text


@pytest.mark.django_db(transaction=True)
async def test_an_upstream_error_reaches_the_client_without_bare_internal_addresses(
    api, alice, cloudflare, upstream, monkeypatch, settings
):
    settings.UPSTREAM_RETRIES = 0
    message = (
        "No replica: 10.1.2.3:8080 refused, host.internal:8080 timed out, [fd00::1]:443 reset, "
        "fd00::2 and 192.168.7.9 down, metadata at 169.254.169.254, gpu-3.svc.cluster.local "
        "and localhost:11434 busy; public mirror 8.8.8.8:53 fine, llama-3.1-8b at 10:30:00."
    )
    _upstream_failing_with(monkeypatch, 500, message)

    response = await _chat(api, alice.headers)

    text = response.json()["error"]["message"]
    assert "No replica: [internal address] refused" in text
    _assert_nothing_of(
        text,
        [
            "10.1.2.3",
            "host.internal",
            "fd00::1",
            "fd00::2",
            "192.168.7.9",
            "169.254.169.254",
            "gpu-3",
            "localhost",
        ],
    )
    # A public address, a version and a time of day tell nothing about the gateway's network.
    assert "8.8.8.8:53" in text
    assert "llama-3.1-8b at 10:30:00." in text


@pytest.mark.django_db(transaction=True)
async def test_an_upstream_error_reaches_the_client_without_the_credentials(
    api, alice, cloudflare, upstream
):
    # The fake's 500 names the account id, its own URL and the token.
    response = await _chat(api, alice.headers, model="@cf/test/fail-500")

    assert response.status_code == 502
    assert "Internal error on account" in response.json()["error"]["message"]
    _assert_nothing_of(response.content.decode(), _secrets(alice, upstream))

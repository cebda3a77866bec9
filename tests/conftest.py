"""Shared fixtures: the fake upstream, its providers and models, and the personas.

Personas:
    alice   a read-write key that may use every model
    bob     a read key (lists models, cannot run them)
    carol   a read-write key limited to @cf/meta/llama-3.1-8b-instruct
"""

import uuid

import pytest
from django.test import override_settings

from alerts.budgets import budget_alerts
from apikeys.authentication import failures
from apikeys.models import ApiKey, keys_by_digest
from apikeys.writer import writer
from completions.models import Model, ModelAlias, Provider
from completions.providers.client import close_client
from completions.registry import catalogue
from gateway import db
from gateway.db import aclose_connections
from tests import fake_upstream
from tests.client import AsyncClient, Client
from tests.clock import freeze
from tests.fake_upstream import FakeUpstream

LLAMA = "@cf/meta/llama-3.1-8b-instruct"


@pytest.fixture(scope="session")
def upstream():
    with FakeUpstream().start() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_upstream(request):
    """Clear what the fake upstream recorded, only for tests that use it."""
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture(autouse=True)
def _usage_writer(request):
    """Use other threads' database connections, as in production (the usage writer's, the
    pool's), when the test's database can be seen from them (transactional tests); the
    request's own connection when the test holds everything in one transaction."""
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        threaded = bool(marker.kwargs.get("transaction") or (marker.args and marker.args[0]))
    else:
        threaded = "db" not in request.fixturenames
    writer.threaded = db.separate_threads = threaded
    yield
    writer.threaded = db.separate_threads = True


@pytest.fixture(autouse=True)
async def _close_http_client():
    """Close what a test's async code left open: the upstream client and the connections
    of the ORM's worker thread (PostgreSQL will not drop a test database still in use).
    Budget alerts still being checked or sent finish first, in the test they belong to."""
    yield
    await budget_alerts.settled()
    await close_client()
    await aclose_connections()
    writer.close_connections()
    catalogue.clear()
    keys_by_digest.clear()


@pytest.fixture(autouse=True)
def _own_authentication_failures(monkeypatch):
    """Count each test's failed authentications apart: every test client comes from
    127.0.0.1, and a suite's 401s would otherwise add up to the per-address limit."""
    monkeypatch.setattr(failures, "prefix", f"apikeys:auth-failures:{uuid.uuid4().hex}:")


@pytest.fixture
def cloudflare(upstream, monkeypatch, settings):
    """A Cloudflare provider on the fake upstream, with a few of its models."""
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_CF_TOKEN", fake_upstream.CLOUDFLARE_TOKEN)
    settings.UPSTREAM_TIMEOUT = 5
    provider = Provider.objects.create(
        name="cloudflare",
        kind=Provider.CLOUDFLARE,
        base_url=upstream.cloudflare_base_url,
        account_id=fake_upstream.CLOUDFLARE_ACCOUNT,
        api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
    )
    llama = Model.objects.create(name=LLAMA, provider=provider)
    ModelAlias.objects.create(name="gpt-4o-mini", model=llama)
    for name in [
        "@cf/test/fail-500",
        "@cf/test/rate-limited",
        "@cf/test/bad-request",
        "@cf/test/cut-stream",
        "@cf/test/bad-json",
        "@cf/test/slow",
        "@cf/test/drip",
        "@cf/test/hang",
    ]:
        Model.objects.create(name=name, provider=provider)
    Model.objects.create(
        name="@cf/baai/bge-small-en-v1.5", provider=provider, task=Model.TEXT_EMBEDDINGS
    )
    return provider


@pytest.fixture
def openai_upstream(upstream, monkeypatch):
    """An OpenAI-compatible provider on the fake upstream, serving gpt-test-mini."""
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_OPENAI_KEY", fake_upstream.OPENAI_KEY)
    provider = Provider.objects.create(
        name="openai-fake",
        kind=Provider.OPENAI,
        base_url=upstream.openai_base_url,
        api_key_env="GATEWAY_PROVIDER_TEST_OPENAI_KEY",
    )
    Model.objects.create(name="gpt-test-mini", provider=provider)
    for name in ["gpt-test-fail-500", "gpt-test-cut-stream"]:
        Model.objects.create(name=name, provider=provider)
    return provider


class Persona:
    def __init__(self, key, secret):
        self.key = key
        self.secret = secret
        self.headers = {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def alice(db):
    return Persona(*ApiKey.objects.create_key(name="alice"))


@pytest.fixture
def bob(db):
    return Persona(*ApiKey.objects.create_key(name="bob", permissions=ApiKey.READ))


@pytest.fixture
def carol(db):
    return Persona(*ApiKey.objects.create_key(name="carol", allowed_models=[LLAMA]))


@pytest.fixture
def api():
    """Django's async test client, posting JSON like the OpenAI SDK does, routed as in
    production (tests/client.py)."""
    return AsyncClient()


@pytest.fixture
def client():
    """pytest-django's `client`, routed as in production (tests/client.py)."""
    return Client()


@pytest.fixture
def async_client():
    """pytest-django's `async_client`, routed as in production (tests/client.py)."""
    return AsyncClient()


@pytest.fixture
def no_echo_delay():
    with override_settings(ECHO_STREAM_DELAY=0):
        yield


@pytest.fixture
def clock(monkeypatch):
    """The limits' clock, stopped; tests move it with `clock.advance(seconds)`."""
    return freeze(monkeypatch)

"""A key revoked or switched off anywhere is refused by every gateway process.

Two daphne processes share PostgreSQL and Redis, as behind a load balancer; each has the key
in its own memory when it is revoked, and keeps what it read for a minute
(REGISTRY_CACHE_SECONDS), so only the change published through the shared cache can make
them refuse it.
"""

import httpx
import pytest

from tests.integration.test_multiprocess import monkeypatch_module, production_stack
from tests.live_server import LiveGateway, manage

__all__ = ["monkeypatch_module", "production_stack"]

pytestmark = pytest.mark.integration

SETUP = """
from apikeys.models import ApiKey
for name in ["carol", "dave"]:
    key, secret = ApiKey.objects.create_key(name=name, rate_limit="1000/m")
    print(name, secret)
"""
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def two_gateways(production_stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("revocation")
    with LiveGateway(
        folder, SETUP, on_run_stack=True, processes=2, REGISTRY_CACHE_SECONDS="60"
    ) as live:
        yield live.base_urls, live.printed, live.env


def _statuses(servers, secret):
    return [
        httpx.post(
            f"{server}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        ).status_code
        for server in servers
    ]


def test_a_key_revoked_through_the_cli_is_refused_by_every_process_once_it_says_so(
    two_gateways,
):
    servers, secrets, env = two_gateways
    assert _statuses(servers, secrets["carol"]) == [200, 200]

    said = manage(env, "apikey", "revoke", "carol")

    assert "now refused" in said
    assert _statuses(servers, secrets["carol"]) == [401, 401]
    # Other keys are still served.
    assert _statuses(servers, secrets["dave"]) == [200, 200]

"""The API's own path under daphne: its paths answer in OpenAI's format whatever the method,
HEAD like GET without a body, and no request changes how a later one is answered."""

import re
from pathlib import Path

import httpx
import pytest

from tests.live_server import Database, LiveGateway, daphne, gateway_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SETUP = """
from apikeys.models import ApiKey
key, secret = ApiKey.objects.create_key(name="alice", rate_limit="1000/s")
print("secret", secret)
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("api-path"), SETUP) as gateway:
        yield gateway


def _directives(policy):
    return {part.split()[0]: set(part.split()[1:]) for part in policy.split(";") if part.strip()}


def test_a_root_path_header_from_a_client_does_not_change_the_admins_policy(tmp_path):
    # The first requests the process serves name a root path of the client's choosing:
    # daphne's own, which reads the header (deploy/nginx.conf drops it, tested below).
    database = Database(tmp_path, follow_run=False, migrated=True)
    env = gateway_env(database, DEBUG="false")
    probe = {"Daphne-Root-Path": "/zzz"}
    with daphne(env, tmp_path / "daphne.log", module="daphne", probe_headers=probe) as base_url:
        page = httpx.get(f"{base_url}/admin/login/")

    assert page.status_code == 200
    policy = _directives(page.headers["Content-Security-Policy"])
    assert policy["form-action"] == {"'self'"}
    assert "'self'" in policy["script-src"]


def test_the_deploy_config_drops_a_root_path_header_sent_by_a_client():
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    locations = re.findall(r"location [^{]*\{[^}]*\}", config)
    proxied = [block for block in locations if "proxy_pass" in block]

    assert proxied
    for block in proxied:
        assert re.search(r'proxy_set_header\s+Daphne-Root-Path\s+""\s*;', block), block


@pytest.mark.parametrize(("method", "path"), [("PUT", "/healthz"), ("POST", "/metrics")])
def test_a_wrong_method_on_a_health_path_is_a_json_405(live, method, path):
    response = httpx.request(method, f"{live.base_url}{path}")

    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/v1/models", "/v1/openapi.json"])
def test_head_is_answered_as_get_without_the_body(live, path):
    headers = {"Authorization": f"Bearer {live.printed['secret']}"}

    head = httpx.head(f"{live.base_url}{path}", headers=headers)
    get = httpx.get(f"{live.base_url}{path}", headers=headers)

    assert get.status_code == 200
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["x-request-id"].startswith("req_")


def test_the_admin_and_the_api_are_answered_by_the_same_process(live):
    admin = httpx.get(f"{live.base_url}/admin/login/")
    api = httpx.get(f"{live.base_url}/v1/models")

    # The admin's page sets Django's CSRF cookie; the API sets no cookie and answers JSON.
    assert "csrftoken" in admin.cookies
    assert api.status_code == 401
    assert api.json()["error"]["type"] == "authentication_error"
    assert "set-cookie" not in api.headers
    assert _directives(api.headers["Content-Security-Policy"])["default-src"] == {"'none'"}

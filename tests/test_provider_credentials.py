"""Provider credentials: a provider reads its key only from an allowed variable, and only a
user with the endpoint permission may say where a provider's calls go and with which key.

A staff user with the provider permissions alone could otherwise point a provider at a
listener of their own and its key variable at SECRET_KEY or DATABASE_URL: the next API call
would send either as a Bearer token.
"""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core.checks import run_checks
from django.core.exceptions import ValidationError

from completions.models import Provider
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

PROVIDERS = "/admin/completions/provider/"
MESSAGES = [{"role": "user", "content": "hello"}]
# The gateway's own settings: none of them is a provider's credential.
FORBIDDEN = ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "METRICS_TOKEN", "HOME"]


def _provider(**fields):
    return Provider(
        **{"name": "local", "kind": Provider.OPENAI, "base_url": "http://a.example/v1", **fields}
    )


def _change_form(provider, **fields):
    """Return the POST data of a provider's change page, with these fields changed."""
    data = {
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "account_id": provider.account_id,
        "api_key_env": provider.api_key_env,
        "is_active": "on" if provider.is_active else "",
        **fields,
    }
    return {name: value for name, value in data.items() if value != ""}


def _staff(*codenames):
    user = User.objects.create_user("dave", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


# The allow-list


def test_a_provider_may_read_a_variable_with_the_gateway_prefix():
    _provider(api_key_env="GATEWAY_PROVIDER_LOCAL_KEY").full_clean()


def test_a_provider_may_read_the_cloudflare_token_variable():
    _provider(kind=Provider.CLOUDFLARE, api_key_env="CLOUDFLARE_API_TOKEN").full_clean()


@pytest.mark.parametrize("name", FORBIDDEN)
def test_a_provider_may_not_read_any_other_variable(name):
    with pytest.raises(ValidationError) as raised:
        _provider(api_key_env=name).full_clean()

    [message] = raised.value.message_dict["api_key_env"]
    assert "GATEWAY_PROVIDER_" in message
    assert "PROVIDER_KEY_VARIABLES" in message


def test_a_provider_may_read_a_variable_the_operator_listed(settings):
    settings.PROVIDER_KEY_VARIABLES = ["OPENAI_API_KEY"]

    _provider(api_key_env="OPENAI_API_KEY").full_clean()


def test_the_admin_refuses_a_key_variable_outside_the_allow_list(admin_client):
    response = admin_client.post(
        f"{PROVIDERS}add/",
        _change_form(_provider(api_key_env="SECRET_KEY")),
    )

    assert response.status_code == 200
    assert "PROVIDER_KEY_VARIABLES" in response.content.decode()
    assert not Provider.objects.filter(name="local").exists()


def test_the_admin_does_not_tell_whether_a_variable_outside_the_allow_list_exists(
    admin_client, monkeypatch
):
    monkeypatch.setenv("SOME_OTHER_SECRET", "value")
    monkeypatch.delenv("NO_SUCH_VARIABLE", raising=False)
    # Saved before the allow-list existed, or by a migration: no validation ran.
    Provider.objects.create(
        name="exists", kind=Provider.OPENAI, base_url="http://a/v1", api_key_env="SOME_OTHER_SECRET"
    )
    Provider.objects.create(
        name="missing", kind=Provider.OPENAI, base_url="http://b/v1", api_key_env="NO_SUCH_VARIABLE"
    )

    html = admin_client.get(PROVIDERS).content.decode()

    said = {
        name: re.search(rf">{name}</a>.*?<td class=\"field-credential\">(.*?)</td>", html, re.S)[1]
        for name in ("exists", "missing")
    }
    assert said["exists"] == said["missing"]
    assert "not allowed" in said["exists"]


@pytest.mark.django_db(transaction=True)
async def test_a_provider_with_a_variable_outside_the_allow_list_is_not_called(
    api, alice, cloudflare, upstream, monkeypatch
):
    monkeypatch.setenv("SECRET_KEY", "the-gateway-signing-key-value")
    await Provider.objects.filter(pk=cloudflare.pk).aupdate(api_key_env="SECRET_KEY")

    response = await api.post(
        "/v1/chat/completions",
        data={"model": LLAMA, "messages": MESSAGES},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    assert "PROVIDER_KEY_VARIABLES" in response.json()["error"]["message"]
    assert "SECRET_KEY" not in response.json()["error"]["message"]
    assert upstream.requests == []


def test_a_system_check_warns_of_a_provider_with_a_variable_outside_the_allow_list():
    Provider.objects.create(
        name="old", kind=Provider.OPENAI, base_url="http://a/v1", api_key_env="DATABASE_URL"
    )
    Provider.objects.create(
        name="new",
        kind=Provider.OPENAI,
        base_url="http://b/v1",
        api_key_env="GATEWAY_PROVIDER_NEW",
    )

    warnings = [m for m in run_checks(databases=["default"]) if m.id == "completions.W001"]

    assert [w.obj for w in warnings] == [Provider.objects.get(name="old")]
    assert "PROVIDER_KEY_VARIABLES" in warnings[0].hint


# The endpoint permission


def test_staff_with_only_the_provider_permissions_cannot_change_where_calls_go(client):
    provider = Provider.objects.create(
        name="local", kind=Provider.OPENAI, base_url="http://gpu.example/v1"
    )
    client.force_login(_staff("view_provider", "change_provider"))

    page = client.get(f"{PROVIDERS}{provider.pk}/change/").content.decode()
    response = client.post(
        f"{PROVIDERS}{provider.pk}/change/",
        _change_form(
            provider,
            name="renamed",
            kind=Provider.CLOUDFLARE,
            base_url="http://listener.example/v1",
            api_key_env="GATEWAY_PROVIDER_OTHER",
        ),
    )

    assert 'name="base_url"' not in page
    assert 'name="api_key_env"' not in page
    assert response.status_code == 302
    provider.refresh_from_db()
    # What the permission does not cover is saved; where the calls go, and with which key, not.
    assert provider.name == "renamed"
    assert provider.kind == Provider.OPENAI
    assert provider.base_url == "http://gpu.example/v1"
    assert provider.api_key_env == ""


def test_staff_with_only_the_provider_permissions_may_switch_off_a_provider_they_cannot_fix(
    client,
):
    # Saved before the allow-list: only someone with the endpoint permission can fix it.
    provider = Provider.objects.create(
        name="old", kind=Provider.OPENAI, base_url="http://a/v1", api_key_env="DATABASE_URL"
    )
    client.force_login(_staff("view_provider", "change_provider"))

    response = client.post(
        f"{PROVIDERS}{provider.pk}/change/", _change_form(provider, is_active="")
    )

    assert response.status_code == 302
    provider.refresh_from_db()
    assert not provider.is_active


def test_staff_with_only_the_provider_permissions_cannot_add_a_provider(client):
    client.force_login(_staff("view_provider", "add_provider", "change_provider"))

    response = client.post(
        f"{PROVIDERS}add/",
        _change_form(_provider(kind=Provider.CLOUDFLARE, base_url="http://listener.example")),
    )

    assert response.status_code == 403
    assert not Provider.objects.filter(name="local").exists()


def test_staff_with_the_endpoint_permission_may_change_where_calls_go(client):
    provider = Provider.objects.create(
        name="local", kind=Provider.OPENAI, base_url="http://gpu.example/v1"
    )
    client.force_login(_staff("view_provider", "change_provider", "change_provider_endpoint"))

    response = client.post(
        f"{PROVIDERS}{provider.pk}/change/",
        _change_form(
            provider,
            base_url="http://gpu-2.example/v1",
            api_key_env="GATEWAY_PROVIDER_GPU",
        ),
    )

    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.base_url == "http://gpu-2.example/v1"
    assert provider.api_key_env == "GATEWAY_PROVIDER_GPU"

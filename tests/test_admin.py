"""The admin: keys shown once and revoked, usage records read-only, providers and models."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from apikeys.models import SECRET_PREFIX, ApiKey, UsageRecord, digest
from apikeys.writer import DatabaseStore
from completions.models import Model, ModelAlias, Provider

pytestmark = pytest.mark.django_db

KEYS = "/admin/apikeys/apikey/"
USAGE = "/admin/apikeys/usagerecord/"
PROVIDERS = "/admin/completions/provider/"
MODELS = "/admin/completions/model/"


def add_key(client, **fields):
    """Post the add form and return the response."""
    data = {
        "name": "ci",
        "permissions": ApiKey.READ_WRITE,
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "",
        "rate_limit": "100/h",
        **fields,
    }
    return client.post(f"{KEYS}add/", data)


def shown_secret(response):
    """Return the secret from the copy field of the page shown after adding a key."""
    html = response.content.decode()
    secret = re.search(r'id="api-key-secret"[^>]*value="([^"]+)"', html, re.DOTALL).group(1)
    assert secret.startswith(SECRET_PREFIX)
    assert html.count(secret) == 1
    return secret


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def usage(key=None, **fields):
    defaults = {
        "api_key": key,
        "key_name": key.name if key else "deleted",
        "model": "echo",
        "endpoint": "chat/completions",
        "request_id": "req-0",
    }
    # Through the usage writer's store, which adds the hourly rollups the reports read.
    return DatabaseStore().add_one({**defaults, **fields})


def cells(response, column):
    """Return the text of every cell of one changelist column."""
    html = response.content.decode()
    return re.findall(
        rf'<t[dh] class="field-{column}[^"]*">(?:<a [^>]*>)?(.*?)(?:</a>)?</t[dh]>', html
    )


# API keys


def test_adding_a_key_shows_its_secret_once_and_the_secret_authenticates(admin_client, client):
    response = add_key(admin_client)

    assert response.status_code == 200
    assert "will not be shown again" in response.content.decode()
    secret = shown_secret(response)
    key = ApiKey.objects.get(name="ci")
    assert key.digest == digest(secret)
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 200

    for page in [KEYS, f"{KEYS}{key.pk}/change/", f"{KEYS}{key.pk}/history/"]:
        assert secret not in admin_client.get(page).content.decode()


def test_the_new_key_row_holds_only_a_digest_of_the_secret(admin_client):
    secret = shown_secret(add_key(admin_client))

    row = ApiKey.objects.filter(name="ci").values().get()
    assert all(secret not in str(value) for value in row.values())
    assert row["digest"] == digest(secret)
    assert secret.startswith(row["prefix"])
    assert len(row["prefix"]) < len(secret) // 2


def test_the_secret_is_kept_out_of_cookies_and_the_admin_history(admin_client):
    response = add_key(admin_client)
    secret = shown_secret(response)

    assert secret not in str(response.cookies)
    assert secret not in str(admin_client.cookies)
    assert all(secret not in entry.change_message for entry in LogEntry.objects.all())
    assert LogEntry.objects.get().object_repr == "ci"


def test_the_secret_page_is_not_cached_by_the_browser(admin_client):
    response = add_key(admin_client)

    assert "no-store" in response["Cache-Control"]


def test_the_change_page_shows_the_prefix_but_neither_secret_nor_digest(admin_client):
    key, secret = ApiKey.objects.create_key(name="ci")

    html = admin_client.get(f"{KEYS}{key.pk}/change/").content.decode()

    assert key.prefix in html
    assert secret not in html
    assert key.digest not in html
    assert 'name="prefix"' not in html


def test_saving_the_change_page_keeps_the_key_working(admin_client, client):
    key, secret = ApiKey.objects.create_key(name="ci")

    response = admin_client.post(
        f"{KEYS}{key.pk}/change/",
        {
            "name": "ci-renamed",
            "permissions": ApiKey.READ,
            "is_active": "on",
            "expires_at_0": "",
            "expires_at_1": "",
            "allowed_models": "echo",
            "rate_limit": "10/m",
        },
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.permissions, key.rate_limit) == ("ci-renamed", ApiKey.READ, "10/m")
    assert key.digest == digest(secret)
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 200


def test_allowed_models_are_written_one_per_line_or_comma_separated(admin_client):
    add_key(
        admin_client, allowed_models="echo, gpt-4o-mini\n @cf/meta/llama-3.1-8b-instruct\n\necho"
    )

    key = ApiKey.objects.get(name="ci")
    assert key.allowed_models == ["echo", "gpt-4o-mini", "@cf/meta/llama-3.1-8b-instruct"]
    html = admin_client.get(f"{KEYS}{key.pk}/change/").content.decode()
    assert "echo\ngpt-4o-mini\n@cf/meta/llama-3.1-8b-instruct</textarea>" in html


def test_an_unknown_model_name_is_saved_with_a_warning(admin_client):
    response = add_key(admin_client, allowed_models="echo, no-such-model")

    assert ApiKey.objects.get(name="ci").allowed_models == ["echo", "no-such-model"]
    warnings = [str(message) for message in response.context["messages"]]
    assert any("no-such-model" in message for message in warnings)
    assert not any("echo" in message for message in warnings)


def test_a_key_cannot_be_created_already_expired(admin_client):
    response = add_key(admin_client, expires_at_0="2001-01-01", expires_at_1="00:00:00")

    assert response.status_code == 200
    assert "already past" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_key_name_already_taken_is_refused(admin_client):
    ApiKey.objects.create_key(name="ci")

    response = add_key(admin_client)

    assert "already exists" in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_the_revoke_action_deactivates_the_selected_keys(admin_client, client):
    revoked, secret = ApiKey.objects.create_key(name="leaked")
    kept, kept_secret = ApiKey.objects.create_key(name="kept")

    response = admin_client.post(
        KEYS, {"action": "revoke_keys", "_selected_action": [revoked.pk]}, follow=True
    )

    assert "Revoked 1 key" in response.content.decode()
    revoked.refresh_from_db()
    assert not revoked.is_active
    assert revoked.revoked_at is not None
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 401
    assert client.get("/v1/models", headers=bearer(kept_secret)).status_code == 200


def test_revoked_keys_are_marked_in_the_list_and_cannot_be_switched_back_on(admin_client):
    key, _ = ApiKey.objects.create_key(name="leaked")
    ApiKey.objects.create_key(name="fine")
    key.revoke()

    states = cells(admin_client.get(KEYS), "state")
    change_page = admin_client.get(f"{KEYS}{key.pk}/change/").content.decode()

    assert states == ["active", f"<strong>revoked</strong> {timezone.now().date()}"]
    assert 'name="is_active"' not in change_page


def test_the_key_list_filters_expired_keys(admin_client):
    ApiKey.objects.create_key(name="old", expires_at=timezone.now() - timedelta(days=1))
    ApiKey.objects.create_key(name="later", expires_at=timezone.now() + timedelta(days=1))
    ApiKey.objects.create_key(name="forever")

    assert cells(admin_client.get(f"{KEYS}?expiry=expired"), "name") == ["old"]
    assert cells(admin_client.get(f"{KEYS}?expiry=current"), "name") == ["forever", "later"]
    assert cells(admin_client.get(f"{KEYS}?expiry=never"), "name") == ["forever"]
    assert cells(admin_client.get(KEYS), "state") == [
        "active",
        "active",
        "<strong>expired</strong>",
    ]


def test_the_key_list_filters_by_permissions_and_active(admin_client):
    ApiKey.objects.create_key(name="reader", permissions=ApiKey.READ)
    ApiKey.objects.create_key(name="off", is_active=False)

    assert cells(admin_client.get(f"{KEYS}?permissions__exact=read"), "name") == ["reader"]
    assert cells(admin_client.get(f"{KEYS}?is_active__exact=0"), "name") == ["off"]


def test_the_key_list_searches_by_name_and_prefix(admin_client):
    key, _ = ApiKey.objects.create_key(name="reporting")
    ApiKey.objects.create_key(name="ci")

    assert cells(admin_client.get(f"{KEYS}?q=report"), "name") == ["reporting"]
    assert cells(admin_client.get(f"{KEYS}?q={key.prefix}"), "name") == ["reporting"]


def test_filtering_on_the_digest_is_refused(admin_client):
    key, _ = ApiKey.objects.create_key(name="ci")
    usage(key)

    assert admin_client.get(f"{KEYS}?digest__startswith={key.digest[0]}").status_code == 400
    assert admin_client.get(f"{KEYS}?digest={key.digest}").status_code == 400
    assert admin_client.get(f"{USAGE}?api_key__digest={key.digest}").status_code == 400


def test_the_key_list_does_not_search_the_digest(admin_client):
    key, _ = ApiKey.objects.create_key(name="ci")

    assert cells(admin_client.get(f"{KEYS}?q={key.digest[:8]}"), "name") == []


# Usage records


def test_the_usage_list_shows_the_columns_an_operator_reads(admin_client):
    key, _ = ApiKey.objects.create_key(name="ci")
    usage(
        key,
        model="@cf/meta/llama-3.1-8b-instruct",
        stream=True,
        status=UsageRecord.UPSTREAM_ERROR,
        http_status=502,
        total_tokens=42,
        latency_ms=1234,
        time_to_first_token_ms=321,
        request_id="req-abc",
    )

    response = admin_client.get(USAGE)

    assert response.status_code == 200
    row = {
        column: cells(response, column)[0]
        for column in [
            "key_name",
            "model",
            "endpoint",
            "status",
            "http_status",
            "tokens",
            "latency",
            "time_to_first_token",
            "request_id",
        ]
    }
    assert row == {
        "key_name": "ci",
        "model": "@cf/meta/llama-3.1-8b-instruct",
        "endpoint": "chat/completions",
        "status": "provider failed",
        "http_status": "502",
        "tokens": "42",
        "latency": "1234",
        "time_to_first_token": "321",
        "request_id": "req-abc",
    }


def test_the_usage_list_shows_one_day_at_a_time(admin_client):
    usage(request_id="req-first", created_at=datetime(2025, 3, 1, 23, 30, tzinfo=UTC))
    usage(request_id="req-second", created_at=datetime(2025, 3, 2, 0, 30, tzinfo=UTC))

    response = admin_client.get(
        f"{USAGE}?created_at__year=2025&created_at__month=3&created_at__day=1"
    )

    assert response.status_code == 200
    assert cells(response, "request_id") == ["req-first"]
    # The date hierarchy offers the other day as a link from the month's page.
    month = admin_client.get(f"{USAGE}?created_at__year=2025&created_at__month=3").content.decode()
    assert "created_at__day=2" in month


def test_the_usage_list_filters_to_today(admin_client):
    usage(request_id="req-today")
    usage(request_id="req-last-week", created_at=timezone.now() - timedelta(days=7))
    page = admin_client.get(USAGE).content.decode()
    today = re.search(r'<a href="(\?created_at__gte=[^"]+)"[^>]*>Today</a>', page)

    response = admin_client.get(USAGE + today.group(1).replace("&amp;", "&"))

    assert cells(response, "request_id") == ["req-today"]


def test_the_usage_list_filters_by_key_model_status_and_stream(admin_client):
    ci, _ = ApiKey.objects.create_key(name="ci")
    other, _ = ApiKey.objects.create_key(name="other")
    usage(ci, request_id="req-ci")
    usage(other, request_id="req-other-stream", stream=True)
    usage(other, request_id="req-other-failed", model="gpt", status=UsageRecord.UPSTREAM_ERROR)

    def listed(query):
        return sorted(cells(admin_client.get(f"{USAGE}?{query}"), "request_id"))

    assert listed(f"api_key__id__exact={ci.pk}") == ["req-ci"]
    assert listed("model=gpt") == ["req-other-failed"]
    assert listed("status__exact=upstream_error") == ["req-other-failed"]
    assert listed("stream__exact=1") == ["req-other-stream"]


def test_the_usage_list_searches_by_request_id_key_name_and_model(admin_client):
    ci, _ = ApiKey.objects.create_key(name="ci")
    usage(ci, request_id="req-123", model="echo")
    usage(request_id="req-456", key_name="nightly", model="@cf/meta/llama-3.1-8b-instruct")

    def found(term):
        return cells(admin_client.get(f"{USAGE}?q={term}"), "request_id")

    assert found("req-123") == ["req-123"]
    assert found("nightly") == ["req-456"]
    assert found("llama") == ["req-456"]


def test_usage_records_cannot_be_added_changed_or_deleted(admin_client):
    record = usage(request_id="req-1", total_tokens=10)

    assert admin_client.get(f"{USAGE}add/").status_code == 403
    change_page = admin_client.get(f"{USAGE}{record.pk}/change/")
    assert change_page.status_code == 200
    assert 'name="_save"' not in change_page.content.decode()
    assert admin_client.post(f"{USAGE}{record.pk}/change/", {"total_tokens": 0}).status_code == 403
    assert admin_client.post(f"{USAGE}{record.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_client.post(USAGE, {"action": "delete_selected", "_selected_action": [record.pk]})
    record.refresh_from_db()
    assert record.total_tokens == 10


# Providers and models


def test_the_provider_list_says_whether_the_key_variable_is_set_without_its_value(
    admin_client, monkeypatch
):
    monkeypatch.setenv("GATEWAY_PROVIDER_ADMIN_TEST_TOKEN", "tok-very-secret-value")
    monkeypatch.delenv("GATEWAY_PROVIDER_ADMIN_TEST_MISSING", raising=False)
    Provider.objects.create(
        name="has-token",
        kind=Provider.OPENAI,
        base_url="http://a/v1",
        api_key_env="GATEWAY_PROVIDER_ADMIN_TEST_TOKEN",
    )
    Provider.objects.create(
        name="lacks-token",
        kind=Provider.OPENAI,
        base_url="http://b/v1",
        api_key_env="GATEWAY_PROVIDER_ADMIN_TEST_MISSING",
    )

    response = admin_client.get(PROVIDERS)

    names = cells(response, "name")
    rows = dict(zip(names, cells(response, "credential"), strict=True))
    assert rows == {"echo": "not needed", "has-token": "set", "lacks-token": "not set"}
    assert "GATEWAY_PROVIDER_ADMIN_TEST_TOKEN" in response.content.decode()
    assert "tok-very-secret-value" not in response.content.decode()


def test_the_provider_page_says_whether_the_key_variable_is_set_without_its_value(
    admin_client, monkeypatch
):
    monkeypatch.setenv("GATEWAY_PROVIDER_ADMIN_TEST_TOKEN", "tok-very-secret-value")
    provider = Provider.objects.create(
        name="has-token",
        kind=Provider.OPENAI,
        base_url="http://a/v1",
        api_key_env="GATEWAY_PROVIDER_ADMIN_TEST_TOKEN",
    )

    html = admin_client.get(f"{PROVIDERS}{provider.pk}/change/").content.decode()
    monkeypatch.delenv("GATEWAY_PROVIDER_ADMIN_TEST_TOKEN")
    html_after_unset = admin_client.get(f"{PROVIDERS}{provider.pk}/change/").content.decode()

    assert re.search(r'<div class="readonly">set</div>', html)
    assert re.search(r'<div class="readonly">not set</div>', html_after_unset)
    assert "tok-very-secret-value" not in html


def test_the_provider_list_counts_models_and_links_to_them(admin_client):
    provider = Provider.objects.create(name="local", kind=Provider.OPENAI, base_url="http://a/v1")
    Model.objects.create(name="one", provider=provider)
    Model.objects.create(name="two", provider=provider)

    response = admin_client.get(PROVIDERS)
    rows = dict(zip(cells(response, "name"), cells(response, "model_count"), strict=True))

    assert rows == {"echo": "1", "local": "2"}
    models = admin_client.get(f"{MODELS}?provider__id__exact={provider.pk}")
    assert cells(models, "name") == ["one", "two"]


def test_the_model_list_shows_provider_task_and_aliases(admin_client):
    provider = Provider.objects.create(name="local", kind=Provider.OPENAI, base_url="http://a/v1")
    model = Model.objects.create(name="llama", provider=provider)
    ModelAlias.objects.create(name="gpt-4o-mini", model=model)
    ModelAlias.objects.create(name="fast", model=model)
    Model.objects.create(name="embedder", provider=provider, task=Model.TEXT_EMBEDDINGS)

    response = admin_client.get(f"{MODELS}?provider__id__exact={provider.pk}")

    assert cells(response, "name") == ["embedder", "llama"]
    assert cells(response, "alias_names") == ["-", "fast, gpt-4o-mini"]
    assert cells(response, "task") == ["Text Embeddings", "Text Generation"]
    embeddings = admin_client.get(f"{MODELS}?task=Text+Embeddings")
    assert cells(embeddings, "name") == ["embedder"]
    assert cells(admin_client.get(f"{MODELS}?q=gpt-4o"), "name") == ["llama"]


def test_an_alias_added_inline_is_saved(admin_client, client):
    provider = Provider.objects.get(name="echo")
    model = Model.objects.get(name="echo")
    key, secret = ApiKey.objects.create_key(name="ci")

    response = admin_client.post(
        f"{MODELS}{model.pk}/change/",
        {
            "name": "echo",
            "provider": provider.pk,
            "task": Model.TEXT_GENERATION,
            "description": model.description,
            "enabled": "on",
            "aliases-TOTAL_FORMS": "1",
            "aliases-INITIAL_FORMS": "0",
            "aliases-MIN_NUM_FORMS": "0",
            "aliases-MAX_NUM_FORMS": "1000",
            "aliases-0-id": "",
            "aliases-0-model": model.pk,
            "aliases-0-name": "parrot",
            "fallback_links-TOTAL_FORMS": "0",
            "fallback_links-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    assert ModelAlias.objects.get(name="parrot").model == model
    assert client.get("/v1/models/parrot", headers=bearer(secret)).status_code == 200


def test_an_alias_named_like_a_model_is_refused(admin_client):
    provider = Provider.objects.get(name="echo")
    model = Model.objects.create(name="other", provider=provider)

    response = admin_client.post(
        f"{MODELS}{model.pk}/change/",
        {
            "name": "other",
            "provider": provider.pk,
            "task": Model.TEXT_GENERATION,
            "description": "",
            "enabled": "on",
            "aliases-TOTAL_FORMS": "1",
            "aliases-INITIAL_FORMS": "0",
            "aliases-MIN_NUM_FORMS": "0",
            "aliases-MAX_NUM_FORMS": "1000",
            "aliases-0-id": "",
            "aliases-0-model": model.pk,
            "aliases-0-name": "echo",
        },
    )

    assert response.status_code == 200
    assert "A model already has this name." in response.content.decode()
    assert not ModelAlias.objects.exists()


def test_the_disable_and_enable_actions_hide_and_show_models(admin_client, client):
    model = Model.objects.get(name="echo")
    _, secret = ApiKey.objects.create_key(name="ci")

    def listed():
        response = client.get("/v1/models", headers=bearer(secret))
        return [entry["id"] for entry in response.json()["data"]]

    admin_client.post(MODELS, {"action": "disable_models", "_selected_action": [model.pk]})
    assert "echo" not in listed()
    assert cells(admin_client.get(f"{MODELS}?enabled__exact=0"), "name") == ["echo"]

    admin_client.post(MODELS, {"action": "enable_models", "_selected_action": [model.pk]})
    assert "echo" in listed()


# Models: the catalogue's word on them


def model_form(model, **fields):
    """The change form's data for a model as it is, with `fields` changed."""
    data = {
        "name": model.name,
        "provider": model.provider_id,
        "task": model.task,
        "description": model.description,
        "enabled": "on" if model.enabled else "",
        "input_price": "",
        "output_price": "",
        "cached_input_price": "",
        "context_window": model.context_window or "",
        "deprecation_date": model.deprecation_date or "",
        "aliases-TOTAL_FORMS": "0",
        "aliases-INITIAL_FORMS": "0",
        "fallback_links-TOTAL_FORMS": "0",
        "fallback_links-INITIAL_FORMS": "0",
        **fields,
    }
    return {key: value for key, value in data.items() if value != ""}


def test_the_model_list_shows_and_filters_deprecation_dates(admin_client):
    provider = Provider.objects.create(name="local", kind=Provider.OPENAI, base_url="http://a/v1")
    today = timezone.now().date()
    Model.objects.create(
        name="old", provider=provider, enabled=False, deprecation_date=today - timedelta(days=1)
    )
    Model.objects.create(
        name="ageing", provider=provider, deprecation_date=today + timedelta(days=30)
    )
    Model.objects.create(name="new", provider=provider)

    response = admin_client.get(f"{MODELS}?provider__id__exact={provider.pk}")

    assert cells(response, "name") == ["ageing", "new", "old"]
    assert cells(response, "deprecation") == [
        str(today + timedelta(days=30)),
        "-",
        f"{today - timedelta(days=1)} (passed)",
    ]
    assert "By deprecated" in response.content.decode()
    for choice, names in [("passed", ["old"]), ("planned", ["ageing"]), ("none", ["new"])]:
        filtered = admin_client.get(
            f"{MODELS}?provider__id__exact={provider.pk}&deprecated={choice}"
        )
        assert cells(filtered, "name") == names


def test_the_model_page_shows_properties_and_schemas_read_only(admin_client):
    provider = Provider.objects.create(name="local", kind=Provider.OPENAI, base_url="http://a/v1")
    schema = {"type": "object", "properties": {"prompt": {"type": "string", "minLength": 1}}}
    model = Model.objects.create(
        name="described",
        provider=provider,
        properties={"context_window": "8192", "function_calling": "true"},
        input_schema=schema,
        output_schema={"type": "object"},
        context_window=8192,
        cached_input_price="0.1",
    )

    page = admin_client.get(f"{MODELS}{model.pk}/change/").content.decode()

    assert "&quot;function_calling&quot;: &quot;true&quot;" in page
    assert "&quot;minLength&quot;: 1" in page
    assert 'name="context_window"' in page
    assert 'name="cached_input_price"' in page
    assert 'name="deprecation_date"' in page
    assert 'name="input_schema"' not in page
    assert 'name="properties"' not in page
    response = admin_client.post(
        f"{MODELS}{model.pk}/change/", model_form(model, input_schema="{}", properties="{}")
    )
    assert response.status_code == 302
    model.refresh_from_db()
    assert model.input_schema == schema
    assert model.properties["function_calling"] == "true"


def test_a_model_past_its_deprecation_date_cannot_be_enabled(admin_client):
    provider = Provider.objects.create(name="local", kind=Provider.OPENAI, base_url="http://a/v1")
    yesterday = timezone.now().date() - timedelta(days=1)
    model = Model.objects.create(
        name="old", provider=provider, enabled=False, deprecation_date=yesterday
    )

    response = admin_client.post(f"{MODELS}{model.pk}/change/", model_form(model, enabled="on"))

    assert response.status_code == 200
    assert f"The provider retired this model on {yesterday}" in response.content.decode()
    model.refresh_from_db()
    assert not model.enabled

    action = admin_client.post(
        MODELS, {"action": "enable_models", "_selected_action": [model.pk]}, follow=True
    )
    model.refresh_from_db()
    assert not model.enabled
    assert "Left disabled, past their deprecation date: old." in action.content.decode()

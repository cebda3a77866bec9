"""The audit log: changes from the admin and the CLI, their values, where from; its admin page.

Entries are Django's admin LogEntry rows (apikeys/audit.py); the admin reads them at
/admin/admin/logentry/, read-only, with a CSV export.
"""

import csv
import getpass
import io
import json
from io import StringIO

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command

from apikeys.audit import CLI_USERNAME, entry_parts
from apikeys.models import ApiKey, digest
from completions.models import Provider
from tests.client import Client

pytestmark = pytest.mark.django_db

KEYS = "/admin/apikeys/apikey/"
PROVIDERS = "/admin/completions/provider/"
AUDIT = "/admin/admin/logentry/"
ADDRESS = "203.0.113.7"


def apikey(*args):
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue()


def change_key(admin_client, key, **fields):
    data = {
        "name": key.name,
        "permissions": key.permissions,
        "is_active": "on",
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "",
        "rate_limit": key.rate_limit,
        **fields,
    }
    return admin_client.post(f"{KEYS}{key.pk}/change/", data, REMOTE_ADDR=ADDRESS)


def entries(**filters):
    return list(LogEntry.objects.filter(**filters).order_by("action_time", "pk"))


def values_of(entry):
    return {change["field"]: (change["old"], change["new"]) for change in entry_parts(entry)[0]}


def staff(django_user_model, name, *permissions):
    user = django_user_model.objects.create_user(name, password="x", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    browser = Client()
    browser.force_login(user)
    return browser


# What is recorded


def test_a_change_in_the_admin_is_logged_with_old_and_new_values_and_the_address(
    admin_client, admin_user, alice
):
    response = change_key(admin_client, alice.key, rate_limit="10/m", tokens_per_day="5000")

    assert response.status_code == 302
    [entry] = entries(action_flag=CHANGE)
    assert entry.user == admin_user
    assert entry.object_repr == "alice"
    assert values_of(entry) == {"rate_limit": ("100/h", "10/m"), "tokens_per_day": (None, 5000)}
    assert entry_parts(entry)[1] == {"via": "admin", "address": ADDRESS}
    # Django's own history page still reads the entry.
    assert entry.get_change_message() == "Changed Rate limit and Tokens per day."


def test_a_change_by_the_cli_is_logged_with_old_and_new_values_and_the_os_user(alice):
    apikey("revoke", "alice")

    [entry] = entries(action_flag=CHANGE)
    assert entry.user.username == CLI_USERNAME
    assert not entry.user.is_active
    assert not entry.user.has_usable_password()
    assert entry.object_repr == "alice"
    changes = values_of(entry)
    assert changes["is_active"] == (True, False)
    assert changes["revoked_at"][0] is None and changes["revoked_at"][1]
    assert entry_parts(entry)[1] == {"via": "cli", "os_user": getpass.getuser()}


def test_a_key_created_by_the_cli_is_logged_with_its_values():
    apikey("create", "--name", "ci", "--rate-limit", "5/m", "--monthly-budget", "25")

    [entry] = entries(action_flag=ADDITION)
    assert entry.user.username == CLI_USERNAME
    assert entry.object_id == str(ApiKey.objects.get(name="ci").pk)
    changes = values_of(entry)
    assert changes["rate_limit"] == (None, "5/m")
    assert changes["monthly_budget"] == (None, "25.00")


def test_no_secret_or_digest_is_ever_logged(admin_client, alice, clock):
    key_before = ApiKey.objects.get(pk=alice.key.pk)
    rotated = apikey("rotate", "--name", "alice").splitlines()[-1]
    response = admin_client.post(f"{KEYS}{alice.key.pk}/rotate/", {"grace": "1h"})
    added = admin_client.post(
        f"{KEYS}add/",
        {
            "name": "ci",
            "permissions": ApiKey.READ_WRITE,
            "expires_at_0": "",
            "expires_at_1": "",
            "allowed_models": "",
            "rate_limit": "100/h",
        },
    )
    assert response.status_code == added.status_code == 200
    apikey("create", "--name", "ci-2")
    apikey("revoke", "ci")

    keys = list(ApiKey.objects.all())
    digests = {key_before.digest, digest(rotated)}
    for key in keys:
        digests |= {key.digest, key.previous_digest or key.digest, key.counter_id}
    log = "\n".join(entry.change_message for entry in LogEntry.objects.all())
    assert LogEntry.objects.count() == 5
    for secret in [alice.secret, rotated]:
        assert secret not in log
        # Not even the part after the prefix that the list shows.
        assert secret[len(alice.key.prefix) :] not in log
    for value in digests:
        assert value[:16] not in log
    assert "digest" not in log and "counter_id" not in log


def test_a_rotation_is_logged_as_a_change_of_prefix_and_grace(alice, clock):
    apikey("rotate", "--name", "alice", "--grace", "2h")

    [entry] = entries(action_flag=CHANGE)
    changes = values_of(entry)
    assert set(changes) == {"prefix", "rotated_at", "previous_valid_until"}
    assert changes["prefix"][0] == alice.key.prefix


def test_an_admin_action_is_logged_for_each_key_it_changed(admin_client, alice, bob):
    response = admin_client.post(
        KEYS,
        {"action": "revoke_keys", "_selected_action": [alice.key.pk, bob.key.pk]},
        REMOTE_ADDR=ADDRESS,
    )

    assert response.status_code == 302
    logged = entries(action_flag=CHANGE)
    assert sorted(entry.object_repr for entry in logged) == ["alice", "bob"]
    for entry in logged:
        assert values_of(entry)["is_active"] == (True, False)
        assert entry_parts(entry)[1]["address"] == ADDRESS


def test_a_provider_change_names_the_key_variable_but_never_its_value(admin_client, monkeypatch):
    monkeypatch.setenv("GATEWAY_PROVIDER_NEW_TOKEN", "provider-credential-value")
    provider = Provider.objects.create(
        name="local", kind=Provider.OPENAI, base_url="http://127.0.0.1:9/v1"
    )

    response = admin_client.post(
        f"{PROVIDERS}{provider.pk}/change/",
        {
            "name": "local",
            "kind": Provider.OPENAI,
            "base_url": "http://127.0.0.1:9/v1",
            "account_id": "",
            "api_key_env": "GATEWAY_PROVIDER_NEW_TOKEN",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    [entry] = entries(action_flag=CHANGE)
    assert values_of(entry) == {"api_key_env": ("", "GATEWAY_PROVIDER_NEW_TOKEN")}
    assert "provider-credential-value" not in entry.change_message


def test_a_deletion_in_the_admin_keeps_the_values_deleted(admin_client):
    provider = Provider.objects.create(name="spare", kind=Provider.ECHO)

    response = admin_client.post(
        f"{PROVIDERS}{provider.pk}/delete/", {"post": "yes"}, REMOTE_ADDR=ADDRESS
    )

    assert response.status_code == 302
    [entry] = entries(action_flag=DELETION)
    assert entry.object_repr == "spare"
    assert values_of(entry)["kind"] == (Provider.ECHO, None)
    assert entry_parts(entry)[1]["address"] == ADDRESS


def test_sync_models_logs_the_models_it_adds_and_changes(cloudflare, upstream):
    call_command("sync_models", stdout=StringIO(), stderr=StringIO())

    added = entries(action_flag=ADDITION, content_type__model="model")
    changed = entries(action_flag=CHANGE, content_type__model="model")
    assert added and all(entry.user.username == CLI_USERNAME for entry in added)
    llama = next(entry for entry in changed if entry.object_repr.endswith("llama-3.1-8b-instruct"))
    assert values_of(llama)["description"][0] == ""
    assert values_of(llama)["description"][1]


# The audit log page


@pytest.fixture
def history(admin_client, admin_user, alice, bob):
    """Three entries: alice changed by the admin, bob revoked and ci created by the CLI."""
    change_key(admin_client, alice.key, rate_limit="10/m")
    apikey("revoke", "bob")
    apikey("create", "--name", "ci")


def rows(response):
    html = response.content.decode()
    return html.count('<tr><td class="field-action_time')


def test_the_audit_log_lists_every_change_with_its_values_and_source(admin_client, history):
    html = admin_client.get(AUDIT).content.decode()

    assert rows(admin_client.get(AUDIT)) == 3
    assert "rate_limit: &quot;100/h&quot; → &quot;10/m&quot;" in html
    assert f"admin ({ADDRESS})" in html
    assert f"cli ({getpass.getuser()})" in html


@pytest.mark.parametrize(
    "query, expected",
    [
        ("action=added", 1),
        ("action=changed", 2),
        ("action=deleted", 0),
    ],
)
def test_the_audit_log_filters_by_action(admin_client, history, query, expected):
    assert rows(admin_client.get(f"{AUDIT}?{query}")) == expected


def test_the_audit_log_filters_by_user_model_and_date(admin_client, admin_user, history):
    cli = LogEntry.objects.filter(user__username=CLI_USERNAME).first().user
    key_type = LogEntry.objects.first().content_type
    today = LogEntry.objects.first().action_time

    assert rows(admin_client.get(f"{AUDIT}?user__id__exact={admin_user.pk}")) == 1
    assert rows(admin_client.get(f"{AUDIT}?user__id__exact={cli.pk}")) == 2
    assert rows(admin_client.get(f"{AUDIT}?content_type__id__exact={key_type.pk}")) == 3
    day = f"action_time__year={today.year}&action_time__month={today.month}"
    assert rows(admin_client.get(f"{AUDIT}?{day}&action_time__day={today.day}")) == 3
    assert rows(admin_client.get(f"{AUDIT}?action_time__year={today.year + 1}")) == 0


def test_the_csv_export_has_one_row_per_changed_field_with_the_lists_filters(admin_client, history):
    response = admin_client.get(f"{AUDIT}csv/?action=changed")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    by_object = {}
    for row in table:
        by_object.setdefault(row["object"], []).append(row)
    assert set(by_object) == {"alice", "bob"}
    [row] = by_object["alice"]
    assert (row["field"], row["old"], row["new"]) == ("rate_limit", "100/h", "10/m")
    assert (row["action"], row["via"], row["from"]) == ("changed", "admin", ADDRESS)
    assert row["model"] == "apikey"
    bob_fields = {row["field"]: (row["old"], row["new"]) for row in by_object["bob"]}
    assert bob_fields["is_active"] == ("true", "false")
    assert {row["user"] for row in by_object["bob"]} == {CLI_USERNAME}
    assert {row["from"] for row in by_object["bob"]} == {getpass.getuser()}


def test_the_list_links_to_the_csv_of_the_same_filters(admin_client, history):
    html = admin_client.get(f"{AUDIT}?action=changed").content.decode()

    assert f'href="{AUDIT}csv/?action=changed"' in html


def test_staff_without_the_permission_are_refused_the_log_and_its_csv(django_user_model, history):
    browser = staff(django_user_model, "dora", "view_apikey", "change_apikey")

    assert browser.get(AUDIT).status_code == 403
    assert browser.get(f"{AUDIT}csv/").status_code == 403


def test_staff_with_view_logentry_read_the_log_and_its_csv(django_user_model, history):
    browser = staff(django_user_model, "erin", "view_logentry")

    assert rows(browser.get(AUDIT)) == 3
    assert browser.get(f"{AUDIT}csv/").status_code == 200


def test_no_entry_is_added_changed_or_deleted_from_the_admin(admin_client, history):
    entry = LogEntry.objects.first()

    assert admin_client.get(f"{AUDIT}add/").status_code == 403
    assert admin_client.post(f"{AUDIT}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_client.post(f"{AUDIT}{entry.pk}/change/", {"object_repr": "forged"})
    entry.refresh_from_db()
    assert entry.object_repr != "forged"
    assert LogEntry.objects.count() == 3
    assert json.loads(entry.change_message)


def test_a_team_made_by_the_cli_and_changed_in_the_admin_is_in_the_log(admin_client, admin_user):
    from apikeys.models import Team

    call_command("team", "create", "--name", "red", "--monthly-budget", "50", stdout=StringIO())
    team = Team.objects.get(name="red")
    response = admin_client.post(
        f"/admin/apikeys/team/{team.pk}/change/",
        {"name": "red", "monthly_budget": "80", "alert_thresholds": "50,80,95,100"},
        REMOTE_ADDR=ADDRESS,
    )
    assert response.status_code == 302, response.content.decode()[:3000]

    logged = entries(object_id=str(team.pk))
    assert [entry.user.username for entry in logged] == [CLI_USERNAME, admin_user.username]
    assert values_of(logged[1])["monthly_budget"] == ("50.00", "80.00")

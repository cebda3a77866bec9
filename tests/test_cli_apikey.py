"""manage.py apikey create | list | revoke."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from apikeys.models import SECRET_PREFIX, ApiKey, digest

pytestmark = pytest.mark.django_db


def apikey(*args):
    """Run the command and return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_prints_the_secret_alone_on_the_last_line():
    out, _ = apikey("create", "--name", "ci")

    secret = out.splitlines()[-1]
    assert secret.startswith(SECRET_PREFIX)
    assert secret == secret.strip()
    key = ApiKey.objects.get(name="ci")
    assert key.digest == digest(secret)
    assert key.permissions == ApiKey.READ_WRITE
    assert key.rate_limit == "100/h"
    assert key.allowed_models == []
    assert key.expires_at is None


def test_create_describes_the_key_before_the_secret():
    out, _ = apikey("create", "--name", "ci", "--permissions", "read", "--models", "echo")

    *description, secret = out.splitlines()
    description = "\n".join(description)
    assert "'ci'" in description
    assert "read," in description
    assert "echo" in description
    assert secret not in description


def test_create_sets_every_option():
    apikey(
        "create",
        "--name",
        "reporting",
        "--permissions",
        "read",
        "--rate-limit",
        "10/m",
        "--models",
        "echo, @cf/meta/llama-3.1-8b-instruct",
        "--expires",
        "2999-01-01",
    )

    key = ApiKey.objects.get(name="reporting")
    assert key.permissions == ApiKey.READ
    assert key.rate_limit == "10/m"
    assert key.allowed_models == ["echo", "@cf/meta/llama-3.1-8b-instruct"]
    assert key.expires_at == datetime(2999, 1, 1, tzinfo=UTC)


def test_create_sets_token_limits_and_a_monthly_budget():
    out, _ = apikey(
        "create",
        "--name",
        "ci",
        "--rate-limit",
        "5/m",
        "--tokens-per-minute",
        "2000",
        "--tokens-per-day",
        "100000",
        "--monthly-budget",
        "25",
    )

    key = ApiKey.objects.get(name="ci")
    assert (key.rate_limit, key.tokens_per_minute, key.tokens_per_day) == ("5/m", 2000, 100000)
    assert key.monthly_budget == Decimal("25")
    assert "5/m, 2,000 tokens/min, 100,000 tokens/day, 25.00 USD/month" in out


def test_create_sets_a_budget_for_each_period():
    out, _ = apikey(
        "create",
        *("--name", "prepaid", "--daily-budget", "2", "--weekly-budget", "10"),
        *("--lifetime-budget", "100"),
    )

    key = ApiKey.objects.get(name="prepaid")
    assert key.budgets() == {"day": Decimal(2), "week": Decimal(10), "lifetime": Decimal(100)}
    assert "2.00 USD/day, 10.00 USD/week, 100.00 USD" in out


def test_a_key_has_no_token_limit_or_budget_unless_asked():
    apikey("create", "--name", "ci")

    key = ApiKey.objects.get(name="ci")
    assert (key.tokens_per_minute, key.tokens_per_day, key.monthly_budget) == (None, None, None)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--tokens-per-minute", "0"),
        ("--tokens-per-minute", "many"),
        ("--tokens-per-day", "-5"),
        ("--monthly-budget", "-1"),
        ("--monthly-budget", "lots"),
        ("--monthly-budget", "NaN"),
    ],
)
def test_create_refuses_a_limit_that_makes_no_sense(option, value):
    with pytest.raises(CommandError, match=option):
        apikey("create", "--name", "ci", option, value)

    assert not ApiKey.objects.exists()


def test_create_refuses_a_budget_with_more_than_cents():
    with pytest.raises(CommandError, match="--monthly-budget"):
        apikey("create", "--name", "ci", "--monthly-budget", "0.001")


def test_create_takes_an_iso_datetime_with_its_offset():
    apikey("create", "--name", "ci", "--expires", "2999-06-01T12:30:00+02:00")

    assert ApiKey.objects.get(name="ci").expires_at == datetime(2999, 6, 1, 10, 30, tzinfo=UTC)


def test_create_reads_a_datetime_without_offset_as_utc():
    apikey("create", "--name", "ci", "--expires", "2999-06-01T12:30")

    assert ApiKey.objects.get(name="ci").expires_at == datetime(2999, 6, 1, 12, 30, tzinfo=UTC)


def test_create_warns_on_stderr_about_models_that_do_not_exist_yet():
    out, err = apikey("create", "--name", "ci", "--models", "echo,not-synced-yet")

    assert "not-synced-yet" in err
    assert "'echo'" not in err
    assert out.splitlines()[-1].startswith(SECRET_PREFIX)
    assert ApiKey.objects.get(name="ci").allowed_models == ["echo", "not-synced-yet"]


def test_create_refuses_a_duplicate_name(alice):
    with pytest.raises(CommandError, match="--name: a key named 'alice' already exists"):
        apikey("create", "--name", "alice")


@pytest.mark.parametrize("rate", ["100", "100/week", "0/h", "many/h"])
def test_create_refuses_a_bad_rate_limit(rate):
    with pytest.raises(CommandError, match="--rate-limit"):
        apikey("create", "--name", "ci", "--rate-limit", rate)

    assert not ApiKey.objects.filter(name="ci").exists()


@pytest.mark.parametrize("when", ["next year", "2027-13-01", "01/01/2027"])
def test_create_refuses_a_bad_expiry(when):
    with pytest.raises(CommandError, match="--expires"):
        apikey("create", "--name", "ci", "--expires", when)


def test_create_refuses_an_expiry_already_past():
    with pytest.raises(CommandError, match="--expires: .* is already past"):
        apikey("create", "--name", "ci", "--expires", "2001-01-01")


def test_create_refuses_an_unknown_permission():
    with pytest.raises(CommandError, match="--permissions"):
        apikey("create", "--name", "ci", "--permissions", "admin")


def test_create_refuses_an_empty_model_list():
    with pytest.raises(CommandError, match="--models"):
        apikey("create", "--name", "ci", "--models", " , ")


def test_create_refuses_a_name_too_long_naming_the_option():
    with pytest.raises(CommandError, match="--name: "):
        apikey("create", "--name", "k" * 101)


def test_create_needs_a_name():
    with pytest.raises(CommandError, match="--name"):
        apikey("create")


def test_it_needs_an_action():
    with pytest.raises(CommandError, match="ACTION"):
        apikey()


def test_list_shows_each_key_with_its_state_and_never_a_secret(alice, bob, carol):
    ApiKey.objects.filter(name="bob").update(expires_at=timezone.now() - timedelta(days=1))
    carol.key.revoke()
    _, dave_secret = ApiKey.objects.create_key(
        name="dave", rate_limit="5/s", expires_at=datetime(2999, 1, 1, tzinfo=UTC)
    )
    ApiKey.objects.filter(name="alice").update(last_used_at=datetime(2026, 3, 4, 5, 6, tzinfo=UTC))
    ApiKey.objects.create_key(
        name="erin", rate_limit="1/m", tokens_per_minute=10, monthly_budget=Decimal("2.5")
    )

    out, _ = apikey("list")

    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "PREFIX",
        "PERMISSIONS",
        "STATE",
        "LIMITS",
        "MODELS",
        "EXPIRES",
        "LAST",
        "USED",
        "TEAM",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["alice"].split()[:6] == [
        "alice",
        alice.key.prefix,
        "read-write",
        "active",
        "100/h",
        "all",
    ]
    assert "2026-03-04 05:06 UTC" in rows["alice"]
    assert rows["bob"].split()[2:4] == ["read", "expired"]
    assert rows["carol"].split()[3] == "revoked"
    assert "@cf/meta/llama-3.1-8b-instruct" in rows["carol"]
    assert "5/s" in rows["dave"]
    assert rows["erin"].split()[4] == "1/m,10tok/min,2.50USD/month"
    assert "2999-01-01 00:00 UTC" in rows["dave"]
    assert rows["dave"].split()[-2:] == ["never", "-"]
    for secret in [alice.secret, bob.secret, carol.secret, dave_secret]:
        assert secret not in out


def test_list_aligns_its_columns(alice):
    ApiKey.objects.create_key(name="a-much-longer-key-name")

    out, _ = apikey("list")

    lines = out.splitlines()
    column = lines[0].index("PREFIX")
    assert all(line[column : column + len(SECRET_PREFIX)] == SECRET_PREFIX for line in lines[1:])


def test_list_says_when_there_are_no_keys():
    out, _ = apikey("list")

    assert out.strip() == "No API keys."


def test_revoke_revokes_the_key(alice):
    out, _ = apikey("revoke", "alice")

    alice.key.refresh_from_db()
    assert not alice.key.is_active
    assert alice.key.revoked_at is not None
    assert "Revoked key 'alice'" in out


def test_revoke_of_a_revoked_key_keeps_the_first_revocation_time(alice):
    alice.key.revoke()
    first = ApiKey.objects.get(name="alice").revoked_at

    out, _ = apikey("revoke", "alice")

    assert "already revoked" in out
    assert ApiKey.objects.get(name="alice").revoked_at == first


def test_revoke_refuses_an_unknown_name(alice):
    with pytest.raises(CommandError, match="No key is named 'mallory'"):
        apikey("revoke", "mallory")

    alice.key.refresh_from_db()
    assert alice.key.is_active

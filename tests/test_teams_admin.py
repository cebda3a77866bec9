"""Teams in the admin: operators see each team's spend against its budgets; a team member
who is not a superuser manages their teams' keys and reads their usage, and nothing of
other teams is visible or reachable, whatever URL they guess.

Personas (users, not keys):
    dana    staff, member of team red, no model permissions
    omar    an operator (superuser)
Team red owns the key red-ci; team blue owns blue-ci, which dana must never see.
"""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.utils import timezone

from apikeys import spend
from apikeys.models import ApiKey, Team, UsageRecord
from apikeys.writer import DatabaseStore

pytestmark = pytest.mark.django_db

KEYS = "/admin/apikeys/apikey/"
TEAMS = "/admin/apikeys/team/"
USAGE = "/admin/apikeys/usagerecord/"
REPORT = "/admin/apikeys/usagereport/"


@pytest.fixture
def red():
    return Team.objects.create(
        name="red", tokens_per_minute=1000, tokens_per_day=50_000, monthly_budget=Decimal(100)
    )


@pytest.fixture
def blue():
    return Team.objects.create(name="blue", monthly_budget=Decimal(500))


@pytest.fixture
def red_key(red):
    key, _ = ApiKey.objects.create_key(
        name="red-ci", team=red, tokens_per_minute=500, monthly_budget=Decimal(10)
    )
    return key


@pytest.fixture
def blue_key(blue):
    key, _ = ApiKey.objects.create_key(name="blue-ci", team=blue)
    return key


@pytest.fixture
def dana(red, client):
    """A member of team red, logged in; staff so that she may log in, and nothing more."""
    user = User.objects.create_user("dana", password="pw", is_staff=True)
    red.members.add(user)
    client.force_login(user)
    return client


@pytest.fixture
def omar(client):
    user = User.objects.create_superuser("omar", password="pw")
    client.force_login(user)
    return client


def record(key, *, cost="0", tokens=10, hours_ago=1, model="echo", team=None, at=None):
    # Through the usage writer's store, which keeps the hourly rollups reports read.
    return DatabaseStore().add_one(
        dict(
            api_key=key,
            key_name=key.name,
            team=team or key.team,
            model=model,
            endpoint="/v1/chat/completions",
            prompt_tokens=tokens,
            total_tokens=tokens,
            cost=Decimal(cost),
            request_id=f"req-{UsageRecord.objects.count()}",
            created_at=at or timezone.now() - timedelta(hours=hours_ago),
        )
    )


@pytest.fixture
def usage(red_key, blue_key):
    record(red_key, cost="1.5", tokens=100, model="red-model")
    record(blue_key, cost="7", tokens=7000, model="blue-model")


def add_key(client, **fields):
    data = {
        "name": "new-ci",
        "permissions": ApiKey.READ_WRITE,
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "",
        "rate_limit": "100/h",
        **fields,
    }
    return client.post(f"{KEYS}add/", data)


def within_red(red, **fields):
    """The add form's fields for a key in team red with the team's own limits."""
    return {
        "team": red.pk,
        "tokens_per_minute": "1000",
        "tokens_per_day": "50000",
        "monthly_budget": "100",
        **fields,
    }


def errors_of(response, field):
    """Return the error messages the form shows for one field."""
    form = response.context["adminform"].form
    return form.errors.get(field, [])


def is_not_found(response, client):
    """Tell whether the admin answered as it does for an id that exists nowhere."""
    if response.status_code == 404:
        return True
    if response.status_code != 302 or response["Location"] != "/admin/":
        return False
    return "doesn’t exist" in client.get("/admin/").content.decode()


# A member's keys


def test_a_member_sees_only_their_teams_keys_in_the_list(dana, red_key, blue_key):
    html = dana.get(KEYS).content.decode()

    assert "red-ci" in html
    assert "blue-ci" not in html
    assert blue_key.prefix not in html


def test_a_member_who_guesses_another_teams_key_id_is_told_it_does_not_exist(
    dana, red_key, blue_key
):
    for page in ["change/", "history/", "delete/"]:
        response = dana.get(f"{KEYS}{blue_key.pk}/{page}")
        assert response.status_code in (302, 403, 404), page
        assert "blue-ci" not in response.content.decode()
    assert is_not_found(dana.get(f"{KEYS}{blue_key.pk}/change/"), dana)
    # The same answer as for an id no key has, so a guess tells nothing.
    assert is_not_found(dana.get(f"{KEYS}999999/change/"), dana)


def test_a_member_cannot_change_another_teams_key_by_posting_to_it(dana, red, blue_key):
    response = dana.post(
        f"{KEYS}{blue_key.pk}/change/",
        {**within_red(red), "name": "stolen", "permissions": ApiKey.READ, "rate_limit": "1/m"},
    )

    assert is_not_found(response, dana)
    blue_key.refresh_from_db()
    assert (blue_key.name, blue_key.team.name) == ("blue-ci", "blue")


def test_a_member_cannot_revoke_another_teams_key_through_the_action(dana, red_key, blue_key):
    dana.post(KEYS, {"action": "revoke_keys", "_selected_action": [blue_key.pk]})

    blue_key.refresh_from_db()
    assert blue_key.revoked_at is None


def test_a_member_revokes_a_key_of_their_team(dana, red_key):
    response = dana.post(KEYS, {"action": "revoke_keys", "_selected_action": [red_key.pk]})

    assert response.status_code == 302
    red_key.refresh_from_db()
    assert red_key.state == "revoked"


def test_a_member_creates_a_key_in_their_team_and_sees_its_secret(dana, red):
    response = add_key(dana, **within_red(red))

    assert response.status_code == 200
    assert "will not be shown again" in response.content.decode()
    key = ApiKey.objects.get(name="new-ci")
    assert key.team == red
    assert key.monthly_budget == Decimal(100)


def test_a_member_must_put_a_new_key_in_one_of_their_teams(dana, red, blue):
    no_team = add_key(dana, **within_red(red, team=""))
    other_team = add_key(dana, **within_red(red, team=blue.pk))

    assert errors_of(no_team, "team")
    assert errors_of(other_team, "team")
    assert not ApiKey.objects.filter(name="new-ci").exists()


def test_the_add_form_offers_a_member_only_their_teams(dana, red, blue):
    html = dana.get(f"{KEYS}add/").content.decode()

    select = re.search(r'<select name="team".*?</select>', html, re.DOTALL).group(0)
    assert ">red<" in select
    assert "blue" not in select


@pytest.mark.parametrize(
    "field, value",
    [
        ("tokens_per_minute", "1001"),
        ("tokens_per_day", "50001"),
        ("monthly_budget", "100.01"),
    ],
)
def test_a_member_cannot_set_a_limit_above_their_teams(dana, red, field, value):
    response = add_key(dana, **within_red(red, **{field: value}))

    assert response.status_code == 200
    [message] = errors_of(response, field)
    assert "red" in message
    assert not ApiKey.objects.filter(name="new-ci").exists()


def test_a_member_cannot_leave_a_limit_empty_when_their_team_has_it(dana, red):
    response = add_key(dana, **within_red(red, monthly_budget=""))

    [message] = errors_of(response, "monthly_budget")
    assert "no limit" in message
    assert not ApiKey.objects.filter(name="new-ci").exists()


def test_a_member_may_set_a_budget_their_team_does_not_limit(dana, red):
    response = add_key(dana, **within_red(red, daily_budget="5"))

    assert response.status_code == 200
    assert ApiKey.objects.get(name="new-ci").daily_budget == Decimal(5)


def test_a_member_cannot_raise_a_limit_of_an_existing_key_above_their_teams(dana, red, red_key):
    response = dana.post(
        f"{KEYS}{red_key.pk}/change/",
        {
            **within_red(red, tokens_per_minute="5000"),
            "name": "red-ci",
            "permissions": ApiKey.READ_WRITE,
            "is_active": "on",
            "expires_at_0": "",
            "expires_at_1": "",
            "allowed_models": "",
            "rate_limit": "100/h",
        },
    )

    assert errors_of(response, "tokens_per_minute")
    red_key.refresh_from_db()
    assert red_key.tokens_per_minute == 500


def test_a_member_cannot_raise_the_rate_limit_above_the_default(dana, red):
    faster = add_key(dana, **within_red(red, rate_limit="2/m"))
    slower = add_key(dana, **within_red(red, name="slow-ci", rate_limit="10/h"))

    assert errors_of(faster, "rate_limit")
    assert slower.status_code == 200
    assert ApiKey.objects.get(name="slow-ci").rate_limit == "10/h"


def test_an_operator_may_set_any_limit_and_leave_the_team_empty(omar, red):
    response = add_key(omar, **within_red(red, tokens_per_minute="999999", rate_limit="50/s"))
    no_team = add_key(omar, name="loose")

    assert response.status_code == 200
    assert no_team.status_code == 200
    assert ApiKey.objects.get(name="loose").team is None


# A member's usage


def test_a_member_reads_only_their_teams_usage_records(dana, usage):
    html = dana.get(USAGE).content.decode()

    assert "red-ci" in html
    assert "blue-ci" not in html
    assert "blue-model" not in html


def test_a_member_guessing_a_usage_record_filter_of_another_team_gets_nothing(
    dana, usage, blue, blue_key
):
    for query in [{"api_key__id__exact": blue_key.pk}, {"team__id__exact": blue.pk}]:
        html = dana.get(USAGE, query).content.decode()
        assert "blue-model" not in html


def test_the_report_shows_a_member_only_their_teams_usage(dana, usage):
    html = dana.get(REPORT, {"period": "24h"}).content.decode()

    assert "red-model" in html
    assert "blue-model" not in html
    assert "blue-ci" not in html
    assert re.search(r'id="total-requests".*?<div class="value">1</div>', html, re.DOTALL)


@pytest.mark.parametrize("filter_name", ["key", "team"])
def test_the_report_filtered_by_another_teams_id_shows_nothing_of_it(
    dana, usage, blue, blue_key, filter_name
):
    other = {"key": blue_key.pk, "team": blue.pk}[filter_name]

    html = dana.get(REPORT, {"period": "24h", filter_name: other}).content.decode()

    assert "blue-model" not in html
    assert "blue-ci" not in html
    assert "7,000" not in html


def test_the_csv_export_holds_only_a_members_rows(dana, usage, blue_key):
    response = dana.get(f"{REPORT}csv/", {"period": "24h"})
    guessed = dana.get(f"{REPORT}csv/", {"period": "24h", "key": blue_key.pk})

    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["key"], r["team"], r["model"]) for r in rows] == [("red-ci", "red", "red-model")]
    assert guessed.status_code == 400
    assert "blue" not in guessed.content.decode()


# A member's teams


def test_a_member_sees_only_their_teams_and_cannot_change_them(dana, red, blue):
    listing = dana.get(TEAMS).content.decode()
    own = dana.get(f"{TEAMS}{red.pk}/change/")
    other = dana.get(f"{TEAMS}{blue.pk}/change/")
    edit = dana.post(f"{TEAMS}{red.pk}/change/", {"name": "red", "monthly_budget": "1000000"})

    assert ">red<" in listing
    assert "blue" not in listing
    assert own.status_code == 200
    assert 'name="monthly_budget"' not in own.content.decode()
    assert is_not_found(other, dana)
    assert edit.status_code == 403
    red.refresh_from_db()
    assert red.monthly_budget == Decimal(100)


def test_a_member_cannot_add_a_team(dana):
    assert dana.get(f"{TEAMS}add/").status_code == 403


def test_a_staff_user_in_no_team_sees_no_keys_or_usage(client, red_key, usage):
    user = User.objects.create_user("ned", password="pw", is_staff=True)
    client.force_login(user)

    assert client.get(KEYS).status_code == 403
    assert client.get(REPORT).status_code == 403
    assert "red-ci" not in client.get("/admin/").content.decode()


def test_the_admin_index_offers_a_member_keys_usage_and_teams_only(dana):
    html = dana.get("/admin/").content.decode()

    assert KEYS in html
    assert REPORT in html
    assert TEAMS in html
    assert "/admin/completions/" not in html
    assert "/admin/auth/" not in html


# Operators


def test_the_key_list_shows_and_filters_by_team(omar, red_key, blue_key, red):
    html = omar.get(KEYS, {"team__id__exact": red.pk}).content.decode()

    assert "red-ci" in html
    assert "blue-ci" not in html
    assert re.search(r'class="field-team[^"]*">red<', html)


def test_the_team_page_shows_spend_against_each_budget_and_its_reset(omar, red_key, settings):
    red = red_key.team
    red.daily_budget = Decimal(4)
    red.lifetime_budget = Decimal(1000)
    red.save()
    record(red_key, cost="3", hours_ago=0)
    # Another team's spend and a key's spend outside the team count for nothing here.
    loose, _ = ApiKey.objects.create_key(name="loose")
    record(loose, cost="50", hours_ago=0)

    html = omar.get(f"{TEAMS}{red.pk}/change/").content.decode()

    day = re.search(r'<tr class="budget-day">.*?</tr>', html, re.DOTALL).group(0)
    assert "3.00" in day and "4.00" in day
    meter = re.search(r"<meter[^>]*>", day).group(0)
    assert re.search(r'value="3(\.0+)?"', meter) and re.search(r'max="4(\.0+)?"', meter)
    tomorrow = (timezone.now().astimezone(UTC) + timedelta(days=1)).date()
    assert f"{tomorrow:%Y-%m-%d} 00:00" in day
    assert "budget-month" in html
    assert "budget-lifetime" in html
    assert "never" in re.search(r'<tr class="budget-lifetime">.*?</tr>', html, re.DOTALL).group(0)
    assert "budget-week" not in html


def test_the_team_list_shows_each_teams_spend_against_its_budgets(omar, red_key, blue_key):
    record(red_key, cost="25", hours_ago=0)

    html = omar.get(TEAMS).content.decode()

    assert re.search(r"25\.00.*?100\.00", html, re.DOTALL)
    assert html.count("<meter") == 2


def test_the_report_groups_and_filters_by_team(omar, usage, red):
    everything = omar.get(REPORT, {"period": "24h"}).content.decode()
    red_only = omar.get(REPORT, {"period": "24h", "team": red.pk}).content.decode()

    by_team = re.search(r'id="by-team">(.*?)</table>', everything, re.DOTALL).group(1)
    assert "red" in by_team and "blue" in by_team
    by_model = re.search(r'id="by-model">(.*?)</table>', red_only, re.DOTALL).group(1)
    assert "blue-model" not in by_model
    assert "red-model" in by_model


def test_an_operator_reads_every_teams_usage_in_the_csv(omar, usage):
    response = omar.get(f"{REPORT}csv/", {"period": "24h"})

    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sorted(r["team"] for r in rows) == ["blue", "red"]


# What is spent


def test_spent_sums_a_teams_records_since_the_start_of_the_period(red_key, red):
    now = datetime(2026, 11, 18, 12, tzinfo=UTC)
    for cost, when in [
        ("1", now),
        ("2", datetime(2026, 11, 16, 0, tzinfo=UTC)),
        ("4", datetime(2026, 11, 1, 0, tzinfo=UTC)),
        ("8", datetime(2026, 10, 31, 23, 59, tzinfo=UTC)),
    ]:
        record(red_key, cost=cost, at=when)

    assert spend.spent(red, "day", now) == Decimal(1)
    assert spend.spent(red, "week", now) == Decimal(3)
    assert spend.spent(red, "month", now) == Decimal(7)
    assert spend.spent(red, "lifetime", now) == Decimal(15)
    assert spend.spent(red_key, "month", now) == Decimal(7)


def test_spent_counts_a_teams_past_records_after_its_key_moved_away(red_key, red, blue):
    record(red_key, cost="2", hours_ago=0)
    red_key.team = blue
    red_key.save()

    assert spend.spent(red, "day") == Decimal(2)
    assert spend.spent(blue, "day") == Decimal(0)


def test_a_member_of_one_team_starts_a_new_key_from_its_team_and_limits(dana, red):
    html = dana.get(f"{KEYS}add/").content.decode()

    assert re.search(rf'<option value="{red.pk}" selected>red</option>', html)
    assert re.search(r'name="monthly_budget" value="100(\.00)?"', html)
    assert re.search(r'name="tokens_per_minute" value="1000"', html)


def test_an_operator_creates_a_team_with_members_and_a_budget(omar):
    alice = User.objects.create_user("alice")

    response = omar.post(
        f"{TEAMS}add/", {"name": "green", "members": [alice.pk], "weekly_budget": "70"}
    )

    assert response.status_code == 302
    green = Team.objects.get(name="green")
    assert green.weekly_budget == Decimal(70)
    assert list(green.members.all()) == [alice]


def test_a_team_with_no_budget_says_its_spend_is_not_limited(omar, blue):
    blue.monthly_budget = None
    blue.save()

    html = omar.get(f"{TEAMS}{blue.pk}/change/").content.decode()

    assert "No budget: the team's spend is not limited." in html
    assert "<meter" not in html


def test_views_acting_on_one_key_reach_only_a_members_keys(rf, red, red_key, blue_key):
    user = User.objects.create_user("dana", is_staff=True)
    red.members.add(user)
    request = rf.post("/")
    request.user = user
    keys = admin.site._registry[ApiKey]

    assert keys.managed_key(request, str(red_key.pk)) == red_key
    assert keys.managed_key(request, str(blue_key.pk)) is None


def test_a_member_may_keep_a_faster_rate_an_operator_gave_their_key(dana, red, red_key):
    ApiKey.objects.filter(pk=red_key.pk).update(rate_limit="10/s")

    response = dana.post(
        f"{KEYS}{red_key.pk}/change/",
        {
            **within_red(red),
            "name": "red-ci-renamed",
            "permissions": ApiKey.READ_WRITE,
            "is_active": "on",
            "expires_at_0": "",
            "expires_at_1": "",
            "allowed_models": "",
            "rate_limit": "10/s",
        },
    )

    assert response.status_code == 302
    red_key.refresh_from_db()
    assert (red_key.name, red_key.rate_limit) == ("red-ci-renamed", "10/s")

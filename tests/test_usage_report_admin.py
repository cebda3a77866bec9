"""The admin's usage report, a key's usage on its change page, and limits and prices edited
in the admin."""

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from apikeys.charts import nice_ceiling
from apikeys.models import ApiKey, UsageRecord
from apikeys.templatetags.usage_format import usd
from apikeys.writer import DatabaseStore
from completions.models import Model
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

REPORT = "/admin/apikeys/usagereport/"
KEYS = "/admin/apikeys/apikey/"


def record(
    key, model, *, prompt, completion, cost="0", hours_ago=1, status=UsageRecord.OK, **extra
):
    return DatabaseStore().add_one(
        dict(
            api_key=key,
            key_name=key.name,
            model=model,
            endpoint="/v1/chat/completions",
            status=status,
            http_status=200 if status == UsageRecord.OK else 502,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost=Decimal(cost),
            latency_ms=100,
            request_id=f"req-{UsageRecord.objects.count()}",
            created_at=timezone.now() - timedelta(hours=hours_ago),
        )
        | extra
    )


@pytest.fixture
def usage(alice, bob):
    """In the last day: Alice 3 llama requests (one failed), Bob 1 echo. Older: Alice 2."""
    record(alice.key, LLAMA, prompt=10, completion=20, cost="0.5", hours_ago=1)
    record(alice.key, LLAMA, prompt=5, completion=5, cost="0.25", hours_ago=2)
    record(alice.key, LLAMA, prompt=3, completion=0, hours_ago=2, status=UsageRecord.UPSTREAM_ERROR)
    record(bob.key, "echo", prompt=1000, completion=234, hours_ago=5)
    record(alice.key, "echo", prompt=7, completion=7, cost="1", hours_ago=3 * 24)
    record(alice.key, "echo", prompt=9, completion=9, cost="2", hours_ago=40 * 24)


def total(html, name):
    """Return the big figure of one total (requests, tokens, cost, errors)."""
    match = re.search(rf'id="total-{name}".*?<div class="value">(.*?)</div>', html, re.DOTALL)
    return match.group(1).strip()


def table_rows(html, table_id):
    """Return {first cell: [other cells]} of one of the report's tables."""
    section = re.search(rf'id="{table_id}">(.*?)</table>', html, re.DOTALL).group(1)
    rows = {}
    for row in re.findall(r"<tr class=.*?</tr>", section, re.DOTALL):
        cells = [
            re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.DOTALL)
        ]
        rows[cells[0]] = cells[1:]
    return rows


def bars(html):
    return re.findall(r'<rect class="bar (\w+)"[^>]*><title>([^<]*)</title>', html)


def test_the_admin_index_links_to_the_report(admin_client):
    html = admin_client.get("/admin/").content.decode()

    assert f'href="{REPORT}"' in html
    assert "Usage report" in html


def test_the_report_shows_totals_of_the_last_24_hours_by_default(admin_client, usage):
    html = admin_client.get(REPORT).content.decode()

    assert "Last 24 hours" in html
    assert total(html, "requests") == "4"
    assert total(html, "tokens") == "1,277"
    assert total(html, "cost") == "0.7500"
    assert total(html, "errors") == "1"
    assert "25.0% of requests" in html


@pytest.mark.parametrize(("period", "requests"), [("24h", "4"), ("7d", "5"), ("30d", "5")])
def test_the_period_chooses_the_records(admin_client, usage, period, requests):
    html = admin_client.get(REPORT, {"period": period}).content.decode()

    assert total(html, "requests") == requests


def test_a_custom_period_counts_whole_utc_days(admin_client, usage):
    today = timezone.now().date()
    start = today - timedelta(days=45)

    html = admin_client.get(
        REPORT, {"period": "custom", "start": start, "end": today}
    ).content.decode()

    assert total(html, "requests") == "6"
    assert f"{start:%Y-%m-%d} to {today:%Y-%m-%d} (UTC)" in html


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("", "", "needs its first and last day"),
        ("2026-03-10", "2026-03-01", "comes after the last one"),
        ("2024-01-01", "2026-01-01", "at most 366 days"),
    ],
)
def test_a_custom_period_must_make_sense(admin_client, start, end, message):
    html = admin_client.get(
        REPORT, {"period": "custom", "start": start, "end": end}
    ).content.decode()

    assert message in html
    assert 'id="total-requests"' not in html


def test_it_filters_by_key(admin_client, usage, bob):
    html = admin_client.get(REPORT, {"key": bob.key.pk}).content.decode()

    assert total(html, "requests") == "1"
    assert list(table_rows(html, "by-key")) == ["bob"]


def test_it_filters_by_a_model_of_the_catalogue(admin_client, usage, cloudflare):
    html = admin_client.get(REPORT, {"model": LLAMA, "period": "30d"}).content.decode()

    assert total(html, "requests") == "3"
    assert list(table_rows(html, "by-model")) == [LLAMA]


def test_the_tables_sum_per_key_and_per_model(admin_client, usage):
    html = admin_client.get(REPORT, {"period": "7d"}).content.decode()

    by_key = table_rows(html, "by-key")
    assert by_key["alice"] == ["4", "25", "32", "57", "1.75", "1 (25.0%)", "100"]
    assert by_key["bob"] == ["1", "1,000", "234", "1,234", "0.00", "0", "100"]
    by_model = table_rows(html, "by-model")
    assert by_model[LLAMA][:5] == ["3", "18", "25", "43", "0.7500"]
    assert by_model["echo"][:5] == ["2", "1,007", "241", "1,248", "1.00"]


def test_the_tables_mark_rows_with_errors(admin_client, usage):
    html = admin_client.get(REPORT).content.decode()

    assert re.search(r'<tr class="row\d failing">\s*<th scope="row">alice', html)


def test_the_chart_draws_a_bar_per_hour_with_failures_apart(admin_client, usage):
    html = admin_client.get(REPORT).content.decode()

    assert "Requests per hour" in html
    drawn = bars(html)
    requests = [title for css, title in drawn if css in ("ok", "failed")]
    # Three hours had requests: 1 h ago (1 ok), 2 h ago (1 ok, 1 failed), 5 h ago (1 ok).
    assert len([css for css, _ in drawn if css == "ok"]) == 3
    assert len([css for css, _ in drawn if css == "failed"]) == 1
    assert any(title.endswith(": 1 failed") for title in requests)
    assert any(title.endswith(": 1,000 prompt tokens") for _, title in drawn)


def test_the_chart_of_a_month_has_a_bar_per_day(admin_client, usage):
    html = admin_client.get(REPORT, {"period": "30d"}).content.decode()

    assert "Requests per day" in html
    assert "Tokens per day" in html


def test_the_report_of_a_quiet_period_says_so(admin_client):
    html = admin_client.get(REPORT).content.decode()

    assert total(html, "requests") == "0"
    assert "No usage in this period." in html


def test_the_csv_export_has_a_row_per_key_and_model(admin_client, usage):
    response = admin_client.get(f"{REPORT}csv/", {"period": "7d"})

    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    # Workers AI's names start with @, which a spreadsheet would read as a formula.
    assert [(r["key"], r["model"], r["requests"], r["total_tokens"]) for r in rows] == [
        ("alice", f"'{LLAMA}", "3", "43"),
        ("alice", "echo", "1", "14"),
        ("bob", "echo", "1", "1234"),
    ]
    assert Decimal(rows[0]["cost"]) == Decimal("0.75")
    assert rows[0]["errors"] == "1"


def test_the_report_links_to_its_csv_with_the_same_filters(admin_client, usage, bob):
    html = admin_client.get(REPORT, {"period": "7d", "key": bob.key.pk}).content.decode()

    link = re.search(r'href="([^"]+)" class="report-csv"', html).group(1).replace("&amp;", "&")
    rows = list(csv.DictReader(io.StringIO(admin_client.get(link).content.decode())))
    assert [r["key"] for r in rows] == ["bob"]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_the_csv_export_keeps_names_from_being_read_as_formulas(admin_client, start):
    key, _ = ApiKey.objects.create_key(name=f'{start}HYPERLINK("https://evil.example")')
    record(key, f"{start}cmd|' /C calc'!A0", prompt=1, completion=1)

    response = admin_client.get(f"{REPORT}csv/", {"period": "24h"})

    [row] = csv.DictReader(io.StringIO(response.content.decode(), newline=""))
    # OWASP's advice: a leading quote makes a spreadsheet show the cell as text.
    assert row["key"] == f"'{key.name}"
    assert row["model"] == f"'{start}cmd|' /C calc'!A0"


def test_the_csv_export_leaves_negative_numbers_as_numbers(admin_client, alice):
    # A refund recorded as a negative cost is a number for the spreadsheet to add up.
    record(alice.key, "-model", prompt=1, completion=1, cost="-0.5")

    response = admin_client.get(f"{REPORT}csv/", {"period": "24h"})

    [row] = csv.DictReader(io.StringIO(response.content.decode()))
    assert row["model"] == "'-model"
    assert Decimal(row["cost"]) == Decimal("-0.5")


def test_a_csv_of_an_impossible_period_is_refused(admin_client):
    response = admin_client.get(f"{REPORT}csv/", {"period": "custom"})

    assert response.status_code == 400


def test_staff_without_permission_to_view_usage_cannot_open_the_report(client):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)

    assert client.get(REPORT).status_code == 403
    assert client.get(f"{REPORT}csv/").status_code == 403


def test_staff_who_may_view_usage_records_may_open_the_report(client, usage):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    client.force_login(user)

    assert client.get(REPORT).status_code == 200
    assert f'href="{REPORT}"' in client.get("/admin/").content.decode()


def test_anyone_else_is_sent_to_log_in(client):
    response = client.get(REPORT)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# A key's change page


def test_a_keys_page_shows_its_usage_of_the_day_and_the_month(admin_client, alice):
    record(alice.key, LLAMA, prompt=10, completion=20, cost="0.5", hours_ago=1)
    record(alice.key, LLAMA, prompt=1, completion=1, cost="0.25", hours_ago=1)

    html = admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()

    day = re.search(r'<tr class="usage-1">(.*?)</tr>', html, re.DOTALL).group(1)
    assert "Last 24 hours" in day
    assert re.findall(r"<td>(.*?)</td>", day) == ["2", "32", "0.7500", "0"]
    assert re.search(r'<tr class="usage-2">', html)


def test_a_keys_page_shows_what_is_left_of_its_limits(admin_client, alice):
    ApiKey.objects.filter(pk=alice.key.pk).update(tokens_per_day=1000, monthly_budget=Decimal("10"))
    record(alice.key, LLAMA, prompt=10, completion=20, cost="2.5", hours_ago=0)

    html = admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()

    requests = re.search(r'<tr class="limit-requests-hour">(.*?)</tr>', html, re.DOTALL).group(1)
    assert "100 requests per hour" in requests
    assert re.findall(r"<td>(.*?)</td>", requests)[:2] == ["0", "100"]
    assert 'class="limit-tokens-day"' in html
    budget = re.search(r'<tr class="limit-budget-month">(.*?)</tr>', html, re.DOTALL).group(1)
    assert "10.00 USD per month" in budget
    assert re.findall(r"<td>(.*?)</td>", budget)[:2] == ["2.50", "7.50"]


def test_a_keys_page_shows_each_budget_and_when_it_resets(admin_client, alice, settings):
    settings.LIMITS_TIME_ZONE = "Europe/Berlin"
    ApiKey.objects.filter(pk=alice.key.pk).update(
        daily_budget=Decimal("1"), lifetime_budget=Decimal("100")
    )
    record(alice.key, LLAMA, prompt=10, completion=20, cost="0.25", hours_ago=0)

    html = admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()

    day = re.search(r'<tr class="limit-budget-day">(.*?)</tr>', html, re.DOTALL).group(1)
    assert re.findall(r"<td>(.*?)</td>", day)[:2] == ["0.2500", "0.7500"]
    assert "00:00 (Europe/Berlin)" in day
    lifetime = re.search(r'<tr class="limit-budget-lifetime">(.*?)</tr>', html, re.DOTALL)
    assert "100.00 USD in all" in lifetime.group(1)
    assert "never" in lifetime.group(1)


def test_a_keys_page_says_when_spend_is_not_limited(admin_client, alice):
    html = admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()

    assert "none: spend is not limited" in html
    assert 'class="limit-tokens-' not in html


def test_limits_are_edited_on_the_keys_page(admin_client, alice):
    response = admin_client.post(
        f"{KEYS}{alice.key.pk}/change/",
        {
            "name": "alice",
            "permissions": ApiKey.READ_WRITE,
            "is_active": "on",
            "expires_at_0": "",
            "expires_at_1": "",
            "allowed_models": "",
            "rate_limit": "5/m",
            "tokens_per_minute": "2000",
            "tokens_per_day": "100000",
            "monthly_budget": "25",
        },
    )

    assert response.status_code == 302
    key = ApiKey.objects.get(pk=alice.key.pk)
    assert (key.rate_limit, key.tokens_per_minute, key.tokens_per_day) == ("5/m", 2000, 100000)
    assert key.monthly_budget == Decimal("25")


def test_a_key_is_created_with_limits_in_the_admin(admin_client):
    response = admin_client.post(
        f"{KEYS}add/",
        {
            "name": "ci",
            "permissions": ApiKey.READ_WRITE,
            "expires_at_0": "",
            "expires_at_1": "",
            "allowed_models": "",
            "rate_limit": "100/h",
            "tokens_per_minute": "",
            "tokens_per_day": "5000",
            "monthly_budget": "1.50",
        },
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(name="ci")
    assert (key.tokens_per_minute, key.tokens_per_day) == (None, 5000)
    assert key.monthly_budget == Decimal("1.50")


def test_the_key_list_shows_each_keys_limits(admin_client, alice):
    ApiKey.objects.filter(pk=alice.key.pk).update(tokens_per_minute=2000, monthly_budget=25)

    html = admin_client.get(KEYS).content.decode()

    assert "100/h, 2,000 tokens/min, 25.00 USD/month" in html


def test_the_usage_records_list_shows_the_cost(admin_client, alice):
    record(alice.key, LLAMA, prompt=3, completion=4, cost="0.00000416")

    html = admin_client.get("/admin/apikeys/usagerecord/").content.decode()

    assert '<td class="field-cost">0.00000416</td>' in html


def test_model_prices_are_edited_in_the_admin(admin_client, cloudflare):
    model = Model.objects.get(name=LLAMA)

    html = admin_client.get(f"/admin/completions/model/{model.pk}/change/").content.decode()

    assert 'name="input_price"' in html
    assert 'name="output_price"' in html
    assert "USD per million prompt tokens" in html


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        ("1234.5", "1,234.50"),
        ("1", "1.00"),
        ("0.0153", "0.0153"),
        ("0.00083869", "0.0008"),
        ("0.00000416", "0.00000416"),
        ("0", "0.00"),
    ],
)
def test_amounts_are_written_with_the_decimals_they_need(amount, written):
    assert usd(Decimal(amount)) == written


@pytest.mark.parametrize(
    ("largest", "top"), [(0, 1), (1, 1), (3, 3), (7, 8), (11, 15), (81, 100), (1234, 1500)]
)
def test_the_charts_scale_reaches_just_past_the_largest_bar(largest, top):
    assert nice_ceiling(largest) == top


def test_the_report_shows_each_endpoints_units(admin_client, usage, alice):
    record(
        alice.key,
        "@cf/stabilityai/stable-diffusion-xl-base-1.0",
        prompt=0,
        completion=0,
        endpoint="/v1/images/generations",
        unit=UsageRecord.IMAGES,
        units=3,
        cost="0.3",
    )
    record(
        alice.key,
        "@cf/deepgram/aura-1",
        prompt=0,
        completion=0,
        endpoint="/v1/audio/speech",
        unit=UsageRecord.CHARACTERS,
        units=120,
    )

    html = admin_client.get(REPORT, {"period": "24h"}).content.decode()

    by_endpoint = table_rows(html, "by-endpoint")
    # endpoint: [unit, units, requests, cost, errors]
    assert by_endpoint["/v1/images/generations"][:3] == ["images", "3", "1"]
    assert by_endpoint["/v1/audio/speech"][:3] == ["characters", "120", "1"]
    # Tokens are counted as their total, whatever the records' own units say.
    assert by_endpoint["/v1/chat/completions"][:3] == ["tokens", "1,277", "4"]

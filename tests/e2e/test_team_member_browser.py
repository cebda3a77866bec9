"""A team member in the admin, in headless Chromium against daphne: they create a key in
their team, cannot see another team's key or usage (the key list, its change page by id,
the report filtered by the other team or key, the CSV export), and cannot set a limit above
the team's. The browser fixture and its requirements are those of
test_admin_report_browser; the gateway is a daphne of its own (tests/live_server.py), with
DEBUG on so that it serves the admin's scripts and styles as a web server would.
"""

import sqlite3

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import (
    presence_of_element_located,
    title_contains,
)
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.test_admin_report_browser import PAGE_LOAD_SECONDS, PASSWORD, browser
from tests.live_server import LiveGateway

pytestmark = pytest.mark.e2e

__all__ = ["browser"]

# Dana is a member of team red (a 100 USD monthly budget); team blue has a key of its own.
# Each team used a model of its own in the last hour.
SETUP = f"""
from decimal import Decimal
from django.contrib.auth.models import User
from apikeys.models import ApiKey, Team, UsageRecord

red = Team.objects.create(name="red", monthly_budget=Decimal(100))
blue = Team.objects.create(name="blue")
dana = User.objects.create_user("dana", password="{PASSWORD}", is_staff=True)
red.members.add(dana)
key, _ = ApiKey.objects.create_key(name="blue-secret-project", team=blue)
UsageRecord.objects.create(
    key_name="red-retired", team=red, model="red-model", endpoint="/v1/chat/completions",
    total_tokens=100, cost=Decimal("0.5"), request_id="req-red",
)
UsageRecord.objects.create(
    api_key=key, key_name=key.name, team=blue, model="blue-model",
    endpoint="/v1/chat/completions", total_tokens=7000, cost=Decimal(7), request_id="req-blue",
)
print("blue_key", key.pk)
print("blue_team", blue.pk)
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("team-member"), SETUP, DEBUG="true") as live:
        yield live


def keys_by_team(gateway):
    """Return {key name: team name} as the gateway stored them."""
    with sqlite3.connect(gateway.database.path) as db:
        rows = db.execute(
            "SELECT k.name, t.name FROM apikeys_apikey k "
            "LEFT JOIN apikeys_team t ON t.id = k.team_id"
        ).fetchall()
    return dict(rows)


def _log_in_as_dana(browser, gateway):
    browser.get(f"{gateway.base_url}/admin/")
    browser.find_element(By.NAME, "username").send_keys("dana")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(
        presence_of_element_located((By.ID, "user-tools"))
    )


def _fill_new_key(browser, name, monthly_budget):
    browser.find_element(By.NAME, "name").send_keys(name)
    Select(browser.find_element(By.NAME, "team")).select_by_visible_text("red")
    budget = browser.find_element(By.NAME, "monthly_budget")
    budget.clear()
    budget.send_keys(monthly_budget)
    browser.find_element(By.NAME, "_save").click()


def test_a_member_creates_a_key_in_their_team_and_never_sees_another_teams(browser, gateway):
    _log_in_as_dana(browser, gateway)

    browser.find_element(By.LINK_TEXT, "API keys").click()
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(title_contains("API key"))
    assert "blue-secret-project" not in browser.page_source

    browser.get(f"{gateway.base_url}/admin/apikeys/apikey/add/")
    _fill_new_key(browser, "dana-ci", "40")
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(title_contains("created"))
    assert browser.find_element(By.ID, "api-key-secret").get_attribute("value").startswith("sk-")
    assert keys_by_team(gateway)["dana-ci"] == "red"

    browser.get(f"{gateway.base_url}/admin/apikeys/apikey/")
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "th.field-name")]
    assert names == ["dana-ci"]

    browser.get(f"{gateway.base_url}/admin/apikeys/apikey/{gateway.printed['blue_key']}/change/")
    assert "doesn’t exist" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "blue-secret-project" not in browser.page_source


def test_a_member_cannot_set_a_budget_above_their_teams(browser, gateway):
    _log_in_as_dana(browser, gateway)
    browser.get(f"{gateway.base_url}/admin/apikeys/apikey/add/")

    _fill_new_key(browser, "greedy", "500")

    error = browser.find_element(By.CSS_SELECTOR, ".field-monthly_budget .errorlist").text
    assert "red" in error and "100.00" in error
    assert "greedy" not in keys_by_team(gateway)


def test_a_member_reads_only_their_teams_usage_whatever_filter_they_guess(browser, gateway):
    _log_in_as_dana(browser, gateway)
    report = f"{gateway.base_url}/admin/apikeys/usagereport/?period=24h"

    browser.get(report)
    assert browser.find_element(By.CSS_SELECTOR, "#total-requests .value").text == "1"
    assert "red-model" in browser.page_source
    for guess in [f"team={gateway.printed['blue_team']}", f"key={gateway.printed['blue_key']}"]:
        browser.get(f"{report}&{guess}")
        assert "blue" not in browser.find_element(By.ID, "content-main").text
        assert "7,000" not in browser.page_source

    # The export as the browser's own session fetches it.
    browser.get(report)
    export = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done);",
        f"{gateway.base_url}/admin/apikeys/usagereport/csv/?period=24h",
    )
    assert "red-retired" in export
    assert "blue" not in export

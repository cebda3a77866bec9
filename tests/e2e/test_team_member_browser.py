"""A team member in the admin, in headless Chromium: they create a key in their team,
cannot see another team's key by the list or by its id, and cannot set a limit above the
team's. The browser fixture and its requirements are those of test_admin_report_browser.
"""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import (
    presence_of_element_located,
    title_contains,
)
from selenium.webdriver.support.ui import Select, WebDriverWait

from apikeys.models import ApiKey, Team
from tests.e2e.test_admin_report_browser import PAGE_LOAD_SECONDS, PASSWORD, browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

__all__ = ["browser"]


@pytest.fixture
def teams():
    """Dana is a member of team red (a 100 USD monthly budget); blue has a key of its own."""
    red = Team.objects.create(name="red", monthly_budget=Decimal(100))
    blue = Team.objects.create(name="blue")
    dana = User.objects.create_user("dana", password=PASSWORD, is_staff=True)
    red.members.add(dana)
    blue_key, _ = ApiKey.objects.create_key(name="blue-secret-project", team=blue)
    return red, blue_key


def _log_in_as_dana(browser, live_server):
    browser.get(f"{live_server.url}/admin/")
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


def test_a_member_creates_a_key_in_their_team_and_never_sees_another_teams(
    browser, live_server, teams
):
    red, blue_key = teams
    _log_in_as_dana(browser, live_server)

    browser.find_element(By.LINK_TEXT, "API keys").click()
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(title_contains("API key"))
    assert "blue-secret-project" not in browser.page_source

    browser.get(f"{live_server.url}/admin/apikeys/apikey/add/")
    _fill_new_key(browser, "dana-ci", "40")
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(title_contains("created"))
    assert browser.find_element(By.ID, "api-key-secret").get_attribute("value").startswith("sk-")
    assert ApiKey.objects.get(name="dana-ci").team == red

    browser.get(f"{live_server.url}/admin/apikeys/apikey/")
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "th.field-name")]
    assert names == ["dana-ci"]

    browser.get(f"{live_server.url}/admin/apikeys/apikey/{blue_key.pk}/change/")
    assert "doesn’t exist" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "blue-secret-project" not in browser.page_source


def test_a_member_cannot_set_a_budget_above_their_teams(browser, live_server, teams):
    _log_in_as_dana(browser, live_server)
    browser.get(f"{live_server.url}/admin/apikeys/apikey/add/")

    _fill_new_key(browser, "greedy", "500")

    error = browser.find_element(By.CSS_SELECTOR, ".field-monthly_budget .errorlist").text
    assert "red" in error and "100.00" in error
    assert not ApiKey.objects.filter(name="greedy").exists()

"""The usage report in a real browser: Debian's Chromium, headless, driven by Selenium
against Django's live server.

Chromium and ChromeDriver come from `scripts/system-deps browser` (make test runs it). If
they are missing the test fails rather than skips: a report nobody has seen drawn is not
tested.
"""

import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import (
    presence_of_element_located,
    staleness_of,
    title_contains,
)
from selenium.webdriver.support.ui import Select, WebDriverWait

from apikeys.models import ApiKey, UsageRecord
from apikeys.writer import DatabaseStore

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags for a browser in a container with no display, no sandbox and nothing to fetch
# beyond the live server.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1200",
]
PASSWORD = "correct horse battery staple"
# Seconds a page may take to load from the live server.
PAGE_LOAD_SECONDS = 10


@pytest.fixture
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/system-deps browser")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.implicitly_wait(PAGE_LOAD_SECONDS)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def operator():
    return User.objects.create_superuser("operator", "", PASSWORD)


@pytest.fixture
def usage():
    """Two keys' usage over the last day, one request failed; one more a week back."""
    alice, _ = ApiKey.objects.create_key(name="alice")
    bob, _ = ApiKey.objects.create_key(name="bob")
    now = timezone.now()
    rows = [
        (alice, "@cf/meta/llama-3.1-8b-instruct", 120, 380, "0.0035", 1, UsageRecord.OK),
        (alice, "@cf/meta/llama-3.1-8b-instruct", 80, 0, "0", 3, UsageRecord.UPSTREAM_ERROR),
        (bob, "echo", 40, 60, "0", 3, UsageRecord.OK),
        (bob, "echo", 500, 500, "0", 7 * 24 - 2, UsageRecord.OK),
    ]
    for number, (key, model, prompt, completion, cost, hours_ago, status) in enumerate(rows):
        DatabaseStore().add_one(
            dict(
                api_key=key,
                key_name=key.name,
                model=model,
                endpoint="/v1/chat/completions",
                status=status,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cost=Decimal(cost),
                request_id=f"req-{number}",
                created_at=now - timedelta(hours=hours_ago),
            )
        )


def _log_in(browser, live_server):
    browser.get(f"{live_server.url}/admin/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The index greets the user once logged in.
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(
        presence_of_element_located((By.ID, "user-tools"))
    )


def _total(browser, name):
    return browser.find_element(By.CSS_SELECTOR, f"#total-{name} .value").text


def test_an_operator_reads_the_report_from_the_admin_index(browser, live_server, operator, usage):
    _log_in(browser, live_server)

    browser.find_element(By.LINK_TEXT, "Usage report").click()

    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(title_contains("Usage report"))
    assert _total(browser, "requests") == "3"
    assert _total(browser, "tokens") == "680"
    assert _total(browser, "cost") == "0.0035"
    assert _total(browser, "errors") == "1"


def test_the_chart_is_drawn_with_the_reports_colours(browser, live_server, operator, usage):
    _log_in(browser, live_server)
    browser.get(f"{live_server.url}/admin/apikeys/usagereport/")

    charts = browser.find_elements(By.CSS_SELECTOR, "svg.usage-chart")
    assert len(charts) == 2
    requests_chart, tokens_chart = charts
    assert requests_chart.size["width"] > 500
    ok = requests_chart.find_elements(By.CSS_SELECTOR, "rect.bar.ok")
    failed = requests_chart.find_elements(By.CSS_SELECTOR, "rect.bar.failed")
    # Requests 1 h ago (1 ok) and 3 h ago (1 ok, 1 failed).
    assert (len(ok), len(failed)) == (2, 1)
    assert all(bar.size["height"] > 0 for bar in ok + failed)
    assert len(tokens_chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 4
    # The report's stylesheet was allowed to load: failed bars are red, not SVG's black.
    assert failed[0].value_of_css_property("fill") not in ("rgb(0, 0, 0)", "")
    assert failed[0].value_of_css_property("fill") != ok[0].value_of_css_property("fill")


def test_choosing_a_longer_period_and_a_key_updates_the_report(
    browser, live_server, operator, usage
):
    _log_in(browser, live_server)
    browser.get(f"{live_server.url}/admin/apikeys/usagereport/")

    Select(browser.find_element(By.NAME, "period")).select_by_visible_text("Last 30 days")
    Select(browser.find_element(By.NAME, "key")).select_by_visible_text("bob")
    form = browser.find_element(By.ID, "report-filters")
    form.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(staleness_of(form))

    assert _total(browser, "requests") == "2"
    assert _total(browser, "tokens") == "1,100"
    rows = browser.find_elements(By.CSS_SELECTOR, "#by-key tbody th")
    assert [row.text for row in rows] == ["bob"]
    assert "Requests per day" in browser.page_source

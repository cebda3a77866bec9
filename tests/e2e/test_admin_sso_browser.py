"""Single sign-on in a real browser: headless Chromium signs in to the admin of a gateway
served by daphne, through the fake OpenID provider (tests/fake_oidc.py) on loopback.

The gateway runs as production would with single sign-on: password login off, the admin's
own middleware, Content-Security-Policy and cookies, so that the test sees whether the
browser is let through the redirects to the provider and back.
"""

import sqlite3

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import presence_of_element_located
from selenium.webdriver.support.ui import WebDriverWait

from tests import fake_oidc
from tests.e2e.test_admin_report_browser import PAGE_LOAD_SECONDS, browser  # noqa: F401
from tests.fake_oidc import FakeProvider
from tests.live_server import LiveGateway

pytestmark = pytest.mark.e2e

BOB = {
    "sub": "7c2e-bob",
    "preferred_username": "bob",
    "email": "bob@example.com",
    "groups": ["gateway-staff", "team:research"],
}
SETUP = "from apikeys.models import Team; Team.objects.create(name='research')"


@pytest.fixture(scope="module")
def provider():
    with FakeProvider().start() as provider:
        yield provider


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory):
    with LiveGateway(
        tmp_path_factory.mktemp("sso"),
        SETUP,
        OIDC_ISSUER=provider.issuer,
        OIDC_CLIENT_ID=fake_oidc.CLIENT_ID,
        OIDC_CLIENT_SECRET=fake_oidc.CLIENT_SECRET,
        OIDC_PROVIDER_NAME="Fake IdP",
        OIDC_STAFF_GROUPS="gateway-staff",
        OIDC_SUPERUSER_GROUPS="gateway-superusers",
        ADMIN_PASSWORD_LOGIN="false",
    ) as gateway:
        yield gateway


def _teams_of(gateway, username):
    with sqlite3.connect(gateway.database.path) as db:
        rows = db.execute(
            "SELECT team.name FROM apikeys_team AS team"
            " JOIN apikeys_team_members AS member ON member.team_id = team.id"
            " JOIN auth_user AS user ON user.id = member.user_id"
            " WHERE user.username = ?",
            (username,),
        ).fetchall()
    return [name for (name,) in rows]


def test_a_team_member_signs_in_through_the_provider_and_sees_the_admin_index(
    browser,  # noqa: F811
    provider,
    gateway,
):
    provider.user = BOB
    browser.get(f"{gateway.base_url}/admin/")
    # Password login is off: the login page offers the provider alone.
    assert browser.find_elements(By.NAME, "password") == []

    browser.find_element(By.LINK_TEXT, "Sign in with Fake IdP").click()

    WebDriverWait(browser, PAGE_LOAD_SECONDS).until(
        presence_of_element_located((By.ID, "user-tools"))
    )
    assert browser.current_url == f"{gateway.base_url}/admin/"
    assert "bob" in browser.find_element(By.ID, "user-tools").text
    # The browser went to the provider and came back with a code (PKCE checked there).
    (authorization,) = provider.authorization_requests
    assert authorization["redirect_uri"] == f"{gateway.base_url}/admin/oidc/callback/"
    assert len(provider.token_requests) == 1
    assert _teams_of(gateway, "bob") == ["research"]

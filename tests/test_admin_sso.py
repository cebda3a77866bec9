"""Single sign-on for the admin through OpenID Connect, against a fake provider on loopback.

Users, as the provider (tests/fake_oidc.py) describes them:
    alice   in gateway-superusers
    bob     in gateway-staff and team:research
    carol   in no group
"""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apikeys.audit import describe_source, entry_parts
from apikeys.models import Team
from gateway import sso
from tests import fake_oidc
from tests.fake_oidc import FakeProvider

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-admin-password"
ALICE = {
    "sub": "3b1f-alice",
    "preferred_username": "alice",
    "email": "alice@example.com",
    "given_name": "Alice",
    "family_name": "Arden",
    "groups": ["gateway-superusers", "everyone"],
}
BOB = {
    "sub": "7c2e-bob",
    "preferred_username": "bob",
    "email": "bob@example.com",
    "groups": ["gateway-staff", "team:research", "everyone"],
}
CAROL = {"sub": "9d4a-carol", "preferred_username": "carol", "email": "carol@example.com"}
BACKENDS = ["django.contrib.auth.backends.ModelBackend", "gateway.sso.OidcBackend"]


@pytest.fixture(scope="module")
def provider_server():
    with FakeProvider().start() as provider:
        yield provider


@pytest.fixture
def provider(provider_server, settings):
    """The fake provider, and the gateway's settings naming it."""
    provider_server.reset()
    settings.OIDC_ISSUER = provider_server.issuer
    settings.OIDC_CLIENT_ID = fake_oidc.CLIENT_ID
    settings.OIDC_CLIENT_SECRET = fake_oidc.CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Fake IdP"
    settings.OIDC_STAFF_GROUPS = ["gateway-staff"]
    settings.OIDC_SUPERUSER_GROUPS = ["gateway-superusers"]
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    sso.provider.clear()
    cache.clear()
    yield provider_server
    sso.provider.clear()


@pytest.fixture
def research():
    return Team.objects.create(name="research")


def _sign_in(client, provider, user, next_url="/admin/"):
    """Click "Sign in with ...", let the provider approve `user`, and return the answer to
    the browser's return to the gateway."""
    provider.user = user
    start = client.get("/admin/oidc/authenticate/", {"next": next_url})
    assert start.status_code == 302, start.content
    assert start["Location"].startswith(provider.issuer + "/authorize?")
    approval = httpx.get(start["Location"], follow_redirects=False, timeout=10)
    assert approval.status_code == 302
    back = urlsplit(approval.headers["Location"])
    assert back.netloc == "testserver"
    return client.get(f"{back.path}?{back.query}")


def _signed_in_user(client):
    return client.session.get("_auth_user_id")


def test_the_login_page_offers_to_sign_in_with_the_provider(provider):
    page = Client().get("/admin/login/?next=/admin/")

    assert page.status_code == 200
    assert b"Sign in with Fake IdP" in page.content
    assert b'href="/admin/oidc/authenticate/?next=/admin/"' in page.content
    # The password form is still there.
    assert b'name="password"' in page.content


def test_signing_in_creates_the_user_and_lands_on_the_admin_index(provider, research):
    client = Client()

    back = _sign_in(client, provider, BOB)

    assert back.status_code == 302
    assert back["Location"] == "/admin/"
    index = client.get("/admin/")
    assert index.status_code == 200
    assert b"bob" in index.content
    bob = User.objects.get(username="bob")
    assert (bob.is_staff, bob.is_superuser) == (True, False)
    assert bob.email == "bob@example.com"
    # An account made by single sign-on has no password to guess.
    assert not bob.has_usable_password()
    assert list(bob.teams.all()) == [research]


def test_it_asks_for_pkce_and_sends_the_verifier_and_secret(provider, research):
    _sign_in(Client(), provider, BOB)

    (authorization,) = provider.authorization_requests
    assert authorization["code_challenge_method"] == "S256"
    assert authorization["scope"].split() == ["openid", "email", "profile"]
    (token_request,) = provider.token_requests
    assert len(token_request["code_verifier"]) >= 43
    # Sent as HTTP basic authentication, the method a provider must support.
    assert "client_secret" not in token_request


def test_it_returns_to_the_admin_page_asked_for(provider):
    back = _sign_in(Client(), provider, BOB, next_url="/admin/auth/user/")

    assert back["Location"] == "/admin/auth/user/"


def test_a_superuser_group_makes_a_superuser(provider):
    client = Client()

    _sign_in(client, provider, ALICE)

    alice = User.objects.get(username="alice")
    assert (alice.is_staff, alice.is_superuser) == (True, True)
    assert (alice.first_name, alice.last_name) == ("Alice", "Arden")
    assert client.get("/admin/auth/user/").status_code == 200


def test_a_user_in_no_group_is_kept_out_of_the_admin(provider):
    client = Client()

    _sign_in(client, provider, CAROL)

    carol = User.objects.get(username="carol")
    assert (carol.is_staff, carol.is_superuser) == (False, False)
    index = client.get("/admin/")
    assert index.status_code == 302
    assert index["Location"].startswith("/admin/login/")


def test_each_sign_in_takes_flags_and_teams_from_the_groups_of_the_day(provider, research):
    ops = Team.objects.create(name="ops")
    _sign_in(Client(), provider, BOB)
    Team.objects.create(name="finance").members.add(User.objects.get(username="bob"))

    _sign_in(Client(), provider, BOB | {"groups": ["team:ops"]})

    bob = User.objects.get(username="bob")
    # Staff as a member of ops (to manage its keys), though in no staff group.
    assert (bob.is_staff, bob.is_superuser) == (True, False)
    # Out of research and out of finance (added by hand), into ops: the provider decides.
    assert list(bob.teams.all()) == [ops]


def test_a_superuser_removed_from_the_group_loses_the_flag(provider):
    _sign_in(Client(), provider, ALICE)

    _sign_in(Client(), provider, ALICE | {"groups": ["gateway-staff"]})

    alice = User.objects.get(username="alice")
    assert (alice.is_staff, alice.is_superuser) == (True, False)


def test_a_team_member_in_no_staff_group_opens_the_admin_to_their_team_alone(provider, research):
    Team.objects.create(name="ops")
    client = Client()

    _sign_in(client, provider, BOB | {"groups": ["team:research"]})

    assert User.objects.get(username="bob").is_staff
    teams = client.get("/admin/apikeys/team/")
    assert teams.status_code == 200
    assert "research" in teams.content.decode()
    assert "ops" not in teams.content.decode()


def test_a_team_group_naming_no_team_makes_none(provider):
    _sign_in(Client(), provider, BOB | {"groups": ["gateway-staff", "team:nowhere"]})

    assert not Team.objects.exists()
    assert User.objects.get(username="bob").is_staff


def test_the_team_prefix_can_be_set(provider, research, settings):
    settings.OIDC_TEAM_GROUP_PREFIX = "gw-team-"

    _sign_in(Client(), provider, BOB | {"groups": ["gateway-staff", "gw-team-research"]})

    assert list(User.objects.get(username="bob").teams.all()) == [research]


def test_the_groups_claim_can_be_named(provider, settings):
    settings.OIDC_GROUPS_CLAIM = "roles"

    _sign_in(Client(), provider, CAROL | {"roles": ["gateway-superusers"]})

    assert User.objects.get(username="carol").is_superuser


def test_without_a_preferred_username_the_email_is_the_user_name(provider):
    claims = {key: value for key, value in BOB.items() if key != "preferred_username"}

    _sign_in(Client(), provider, claims)

    assert User.objects.get(username="bob@example.com").is_staff


def test_it_signs_in_the_same_account_the_next_time(provider):
    _sign_in(Client(), provider, BOB)
    first = User.objects.get(username="bob")

    client = Client()
    _sign_in(client, provider, BOB)

    assert User.objects.count() == 1
    assert _signed_in_user(client) == str(first.pk)


def test_it_refuses_to_take_over_a_password_account_of_the_same_name(provider):
    User.objects.create_user("bob", "bob@elsewhere.example", PASSWORD)
    client = Client()

    back = _sign_in(client, provider, BOB)

    assert back["Location"].startswith("/admin/login/")
    assert _signed_in_user(client) is None
    bob = User.objects.get(username="bob")
    assert (bob.is_staff, bob.email) == (False, "bob@elsewhere.example")


@pytest.mark.parametrize("fault", fake_oidc.FAULTS)
def test_it_refuses_an_id_token_that_is_wrong(provider, fault):
    provider.token_fault = fault
    client = Client()

    back = _sign_in(client, provider, ALICE)

    assert back.status_code == 302
    assert back["Location"].startswith("/admin/login/")
    assert _signed_in_user(client) is None
    assert not User.objects.exists()
    page = client.get(back["Location"])
    assert b"Signing in with Fake IdP failed" in page.content


def test_it_refuses_a_return_it_did_not_send_the_browser_on(provider):
    """A code and state from someone else's sign-in (login CSRF) sign nobody in."""
    client = Client()

    back = client.get("/admin/oidc/callback/", {"code": "stolen", "state": "forged"})

    assert back.status_code == 302
    assert back["Location"].startswith("/admin/login/")
    assert _signed_in_user(client) is None


def test_it_refuses_a_code_with_another_browsers_state(provider):
    """The state is bound to the browser's session: another browser's return fails."""
    provider.user = BOB
    start = Client().get("/admin/oidc/authenticate/")
    approval = httpx.get(start["Location"], follow_redirects=False, timeout=10)
    back = urlsplit(approval.headers["Location"])
    other = Client()

    answer = other.get(f"{back.path}?{back.query}")

    assert answer["Location"].startswith("/admin/login/")
    assert _signed_in_user(other) is None


def test_the_provider_saying_no_signs_nobody_in(provider):
    client = Client()
    start = client.get("/admin/oidc/authenticate/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]

    back = client.get("/admin/oidc/callback/", {"error": "access_denied", "state": state})

    assert back["Location"].startswith("/admin/login/")
    assert _signed_in_user(client) is None


def test_a_provider_that_does_not_answer_is_reported_on_the_login_page(provider, settings):
    with FakeProvider().start() as gone:
        settings.OIDC_ISSUER = gone.issuer
    client = Client()

    start = client.get("/admin/oidc/authenticate/")

    assert start.status_code == 302
    assert start["Location"].startswith("/admin/login/")
    page = client.get(start["Location"])
    assert b"Fake IdP did not answer" in page.content


def test_a_single_sign_on_session_ends_after_oidc_session_seconds(provider, settings):
    settings.OIDC_SESSION_SECONDS = 3600
    client = Client()

    _sign_in(client, provider, BOB)

    assert client.session.get_expiry_age() == 3600


def test_with_password_login_off_the_login_page_offers_only_the_provider(provider, settings):
    settings.ADMIN_PASSWORD_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = ["gateway.sso.OidcBackend"]

    page = Client().get("/admin/login/?next=/admin/")

    assert page.status_code == 200
    assert b"Sign in with Fake IdP" in page.content
    assert b'name="password"' not in page.content


def test_with_password_login_off_the_right_password_is_refused(provider, settings):
    settings.ADMIN_PASSWORD_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = ["gateway.sso.OidcBackend"]
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = Client()

    answer = client.post("/admin/login/", {"username": "root", "password": PASSWORD})

    assert answer.status_code == 403
    assert _signed_in_user(client) is None


def test_with_password_login_off_single_sign_on_still_works(provider, settings):
    settings.ADMIN_PASSWORD_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = ["gateway.sso.OidcBackend"]
    client = Client()

    _sign_in(client, provider, ALICE)

    assert client.get("/admin/").status_code == 200


def test_without_an_issuer_the_login_page_is_as_before(settings):
    settings.OIDC_ISSUER = ""

    page = Client().get("/admin/login/?next=/admin/")

    assert b"Sign in with" not in page.content
    assert b'name="password"' in page.content
    assert Client().get("/admin/oidc/authenticate/").status_code == 404


def test_a_user_deactivated_in_the_admin_stays_out(provider):
    _sign_in(Client(), provider, BOB)
    User.objects.filter(username="bob").update(is_active=False)
    client = Client()

    back = _sign_in(client, provider, BOB)

    assert back["Location"].startswith("/admin/login/")
    assert _signed_in_user(client) is None


def test_with_password_login_off_an_open_password_session_ends(provider, settings):
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = Client()
    client.force_login(root, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get("/admin/").status_code == 200
    settings.ADMIN_PASSWORD_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = ["gateway.sso.OidcBackend"]

    answer = client.get("/admin/")

    assert answer.status_code == 302
    assert answer["Location"].startswith("/admin/login/")


# The audit log


def _entries(obj):
    return list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk)
        ).order_by("pk")
    )


def _values(entry):
    return {change["field"]: (change["old"], change["new"]) for change in entry_parts(entry)[0]}


def test_a_first_sign_in_logs_the_account_made_with_its_flags_and_teams(provider, research):
    _sign_in(Client(), provider, BOB)

    bob = User.objects.get(username="bob")
    [entry] = _entries(bob)
    assert entry.action_flag == ADDITION
    assert entry.user == bob
    values = _values(entry)
    assert values["is_staff"] == (None, True)
    assert values["is_superuser"] == (None, False)
    assert values["teams"] == (None, ["research"])
    assert entry_parts(entry)[1] == {"via": "sso", "address": "127.0.0.1"}
    [joined] = _entries(research)
    assert (joined.action_flag, joined.user) == (CHANGE, bob)
    assert _values(joined) == {"members": ([], ["bob"])}


def test_flags_and_teams_changed_at_sign_in_are_logged_old_to_new(provider, research):
    ops = Team.objects.create(name="ops")
    _sign_in(Client(), provider, ALICE | {"groups": ["team:research"]})
    alice = User.objects.get(username="alice")

    _sign_in(Client(), provider, ALICE | {"groups": ["gateway-superusers", "team:ops"]})

    entry = _entries(alice)[-1]
    assert entry.action_flag == CHANGE
    assert entry.user == alice
    assert _values(entry) == {
        "is_superuser": (False, True),
        "teams": (["research"], ["ops"]),
    }
    assert entry_parts(entry)[1] == {"via": "sso", "address": "127.0.0.1"}
    assert "sso (127.0.0.1)" in describe_source(entry_parts(entry)[1])
    assert _values(_entries(research)[-1]) == {"members": (["alice"], [])}
    assert _values(_entries(ops)[-1]) == {"members": ([], ["alice"])}


def test_a_sign_in_that_changes_nothing_logs_nothing(provider, research):
    _sign_in(Client(), provider, BOB)
    logged = LogEntry.objects.count()

    _sign_in(Client(), provider, BOB)

    assert LogEntry.objects.count() == logged


def test_a_sign_in_reads_the_users_teams_once(provider, research):
    Team.objects.create(name="ops")
    _sign_in(Client(), provider, ALICE | {"groups": ["team:research"]})

    with CaptureQueriesContext(connection) as queries:
        _sign_in(Client(), provider, ALICE | {"groups": ["gateway-superusers", "team:ops"]})

    alice = User.objects.get(username="alice")
    reads = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith("SELECT")
        and f'"apikeys_team_members"."user_id" = {alice.pk}' in query["sql"]
    ]
    assert len(reads) == 1, reads
    assert [team.name for team in alice.teams.all()] == ["ops"]
    assert _values(_entries(alice)[-1])["teams"] == (["research"], ["ops"])

"""Single sign-on for the admin: OpenID Connect through mozilla-django-oidc.

    /admin/login/  "Sign in with <provider>"
      └─ /admin/oidc/authenticate/  SignInView: state, nonce and a PKCE (S256) challenge
         kept in the session, the browser sent to the provider's authorization endpoint
           └─ /admin/oidc/callback/  CallbackView, then OidcBackend.authenticate:
              the code and verifier exchanged at the token endpoint (client secret),
              the ID token verified (RS256 against the provider's JWKS; issuer, audience,
              expiry, nonce), userinfo read, the user found or made, staff and superuser
              flags and team memberships taken from the groups claim, and what that
              changed written to the audit log (apikeys/audit.py, "via": "sso")
                └─ the admin page first asked for

Off while OIDC_ISSUER is unset: the views answer 404 and settings.py lists no such backend.

The provider's endpoints come from its discovery document, read at the first sign-in and
kept for DISCOVERY_SECONDS, not at start-up: manage.py and the API then run whether or not
the provider answers, and a provider that is down costs a sign-in, not the gateway.

mozilla-django-oidc reads its own settings (OIDC_RP_*, OIDC_OP_*) through `get_settings` on
its views and backend; here those are answered by `_setting`, from the gateway's OIDC_*
settings, the discovery document and the fixed choices below.
"""

import dataclasses
import ipaddress
import logging
import threading
import time
from urllib.parse import urlsplit

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import ADDITION, CHANGE
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from apikeys import audit
from apikeys.models import Team

logger = logging.getLogger(__name__)

# The only signature accepted on an ID token: the provider's RSA key from its JWKS. HS256
# (keyed with the client secret) and "none" are refused whatever the token's header says.
SIGNING_ALGORITHM = "RS256"
# Seconds a discovery document is kept before it is read again.
DISCOVERY_SECONDS = 3600
# Seconds each request to the provider (discovery, token, userinfo, JWKS) may take.
PROVIDER_TIMEOUT = 10
# Seconds of clock difference with the provider allowed on an ID token's iat and exp.
CLOCK_SKEW_SECONDS = 60
# Django's User.username holds at most this many characters.
USERNAME_MAX_LENGTH = 150
# The user's fields copied from the standard claims at each sign-in, when they are sent.
USER_FIELD_CLAIMS = {"email": "email", "first_name": "given_name", "last_name": "family_name"}


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read or does not describe it."""


@dataclasses.dataclass(frozen=True)
class Provider:
    """What the gateway uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    # client_secret_basic, the method OAuth's servers must support and the default when the
    # document names none; otherwise the secret is sent in the form (client_secret_post).
    basic_auth: bool


def is_loopback_url(url):
    """Whether a URL names a loopback host (127.0.0.1, ::1 or localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_secure_url(url):
    """Whether a URL may carry the gateway's client secret and users' tokens: HTTPS, or
    plain HTTP to this machine alone (a provider in development and tests)."""
    scheme = urlsplit(url).scheme
    return scheme == "https" or (scheme == "http" and is_loopback_url(url))


class Discovery:
    """The provider of settings.OIDC_ISSUER, read from its discovery document when first
    needed and again once DISCOVERY_SECONDS have passed (or OIDC_ISSUER changed)."""

    timer = time.monotonic

    def __init__(self):
        self._lock = threading.Lock()
        self._known = None  # (issuer as configured, Provider, when read)

    def __call__(self):
        issuer = settings.OIDC_ISSUER
        with self._lock:
            known = self._known
        if known and known[0] == issuer and self.timer() - known[2] < DISCOVERY_SECONDS:
            return known[1]
        found = _discover(issuer)
        with self._lock:
            self._known = (issuer, found, self.timer())
        return found

    def clear(self):
        with self._lock:
            self._known = None


def _discover(issuer):
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        answer = requests.get(url, timeout=PROVIDER_TIMEOUT)
        answer.raise_for_status()
        document = answer.json()
    except (requests.RequestException, ValueError) as error:
        raise ProviderUnavailable(f"{url}: {error}") from None
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"{url} is not a discovery document")
    # OpenID Connect Discovery 1.0, section 4.3: the document's issuer is the one asked for
    # (a trailing slash aside), and ID tokens are then checked against the document's.
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ProviderUnavailable(
            f"{url} names the issuer {document.get('issuer')!r}, not OIDC_ISSUER={issuer!r}"
        )
    names = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    for name in names:
        if not isinstance(document.get(name), str) or not is_secure_url(document[name]):
            raise ProviderUnavailable(f"{url}: {name} is missing or not an https:// URL")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return Provider(
        issuer=document["issuer"],
        **{name: document[name] for name in names},
        basic_auth="client_secret_basic" in methods,
    )


provider = Discovery()


def _setting(name, *default):
    """Answer one of mozilla-django-oidc's settings."""
    fixed = {
        "OIDC_RP_SIGN_ALGO": SIGNING_ALGORITHM,
        "OIDC_RP_IDP_SIGN_KEY": None,
        "OIDC_ALLOW_UNSECURED_JWT": False,
        "OIDC_USE_NONCE": True,
        "OIDC_USE_PKCE": True,
        "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
        "OIDC_VERIFY_SSL": True,
        "OIDC_TIMEOUT": PROVIDER_TIMEOUT,
        "OIDC_CREATE_USER": True,
        "OIDC_STORE_ACCESS_TOKEN": False,
        "OIDC_STORE_ID_TOKEN": False,
    }
    if name in fixed:
        return fixed[name]
    if name == "OIDC_RP_CLIENT_ID":
        return settings.OIDC_CLIENT_ID
    if name == "OIDC_RP_CLIENT_SECRET":
        return settings.OIDC_CLIENT_SECRET
    if name == "OIDC_RP_SCOPES":
        return " ".join(settings.OIDC_SCOPES)
    if name == "OIDC_TOKEN_USE_BASIC_AUTH":
        return provider().basic_auth
    if name == "LOGIN_REDIRECT_URL":
        return reverse("admin:index")
    if name == "LOGIN_REDIRECT_URL_FAILURE":
        return reverse("admin:login")
    if default:
        return default[0]
    raise ImproperlyConfigured(f"gateway.sso does not set {name}")


def groups(claims):
    """Return the names in the claims' groups claim (settings.OIDC_GROUPS_CLAIM) as a set.

    A provider may send one group as a bare string; anything else that is not a list of
    strings counts as no group, so that a malformed claim takes rights away, never gives.
    """
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def username(claims):
    """Return the user name the claims sign in as: preferred_username, or the e-mail
    address for providers that send none (Google), or "" if neither is there."""
    for name in ("preferred_username", "email"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


class OidcBackend(OIDCAuthenticationBackend):
    """Sign in the user the provider vouches for, made on first sign-in, with staff and
    superuser flags and team memberships as the groups claim says at each sign-in."""

    get_settings = staticmethod(_setting)

    def __init__(self, *args, **kwargs):
        # Django makes a backend for each password login and for each request's user; the
        # provider is asked only once this one signs someone in (authenticate).
        self.UserModel = get_user_model()
        self.OIDC_RP_SIGN_ALGO = SIGNING_ALGORITHM
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, nonce=None, code_verifier=None, **credentials):
        # Only CallbackView passes a nonce and a verifier; a user name and password, or a
        # code sent to any other view, are not this backend's to check.
        if request is None or nonce is None or code_verifier is None or credentials:
            return None
        if not settings.OIDC_ISSUER:
            return None
        self.provider = provider()
        self.OIDC_OP_TOKEN_ENDPOINT = self.provider.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = self.provider.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = self.provider.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_CLIENT_SECRET
        return super().authenticate(request, nonce=nonce, code_verifier=code_verifier)

    def _verify_jws(self, token, key):
        """Return the claims of an ID token signed by the provider for this gateway."""
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[SIGNING_ALGORITHM],
                audience=settings.OIDC_CLIENT_ID,
                issuer=self.provider.issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.PyJWTError as error:
            raise SuspiciousOperation(f"ID token refused: {error}") from None

    def get_userinfo(self, access_token, id_token, payload):
        """Return the ID token's claims with the userinfo endpoint's over them."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        # OpenID Connect Core 1.0, section 5.3.2: an answer about another subject is not used.
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The userinfo answer is not about the ID token's subject")
        return payload | userinfo

    def verify_claims(self, claims):
        name = username(claims)
        return bool(name) and len(name) <= USERNAME_MAX_LENGTH

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(username=username(claims))

    @transaction.atomic
    def create_user(self, claims):
        # No password: create_user marks it unusable, so the account opens only this way.
        user = self.UserModel.objects.create_user(username(claims))
        return self._synchronize(user, claims, created=True)

    @transaction.atomic
    def update_user(self, user, claims):
        if user.has_usable_password():
            # A password account of the same name is someone's local account: signing it in
            # would hand it to whoever holds that name at the provider. An operator hands it
            # over by removing its password (the admin's "Set password", disabled).
            raise SuspiciousOperation(
                f"{user.username!r} has a password: single sign-on does not take it over"
            )
        return self._synchronize(user, claims)

    def _synchronize(self, user, claims, created=False):
        named = groups(claims)
        prefix = settings.OIDC_TEAM_GROUP_PREFIX
        names = {name.removeprefix(prefix) for name in named if name.startswith(prefix)} - {""}
        teams = list(Team.objects.filter(name__in=names))
        # The user's teams, read once: for the audit entry's "before" and for what changes.
        old_teams = [] if created else list(user.teams.all())
        before = None if created else _user_snapshot(user, old_teams)
        # Teams joined or left, as they were: each gets its own audit entry, as when an
        # operator changes a team's members in the admin.
        joined, left = set(teams) - set(old_teams), set(old_teams) - set(teams)
        teams_before = {team: audit.snapshot(team) for team in joined | left}
        user.is_superuser = bool(named & set(settings.OIDC_SUPERUSER_GROUPS))
        # A superuser who is not staff could not open the admin at all. A team's member is
        # staff too, with no model permissions: the admin shows them their teams' keys and
        # usage alone (apikeys/membership.py).
        user.is_staff = (
            user.is_superuser or bool(named & set(settings.OIDC_STAFF_GROUPS)) or bool(teams)
        )
        for field, claim in USER_FIELD_CLAIMS.items():
            value = claims.get(claim)
            if isinstance(value, str):
                limit = self.UserModel._meta.get_field(field).max_length
                setattr(user, field, value[:limit])
        user.save()
        # The difference, rather than teams.set(), which would read the teams again. A team
        # an operator adds the user to between the read above and these writes stays until
        # the next sign-in (the groups decide then): a moment's race, not worth a row lock.
        user.teams.remove(*left)
        user.teams.add(*joined)
        source = audit.sso_source(self.request)
        action = ADDITION if created else CHANGE
        after = _user_snapshot(user, teams)
        audit.record_change(user, user, action, before, source, after=after)
        for team, team_before in teams_before.items():
            audit.record_change(user, team, CHANGE, team_before, source)
        unknown = names - {team.name for team in teams}
        if unknown:
            # Teams carry keys and budgets, so they are made by operators, not by a group.
            logger.info(
                "Single sign-on: %s is in groups for teams that do not exist: %s",
                user.username,
                ", ".join(sorted(unknown)),
            )
        return user


def _user_snapshot(user, teams):
    """Return the user's fields as the audit log shows them, with `teams`, those they are in."""
    return audit.snapshot(user) | {"teams": sorted(team.name for team in teams)}


@method_decorator(never_cache, name="dispatch")
class SignInView(OIDCAuthenticationRequestView):
    """Send the browser to the provider, with the admin page to come back to (`next`)."""

    get_settings = staticmethod(_setting)

    def __init__(self, **kwargs):
        # The provider's endpoint is read in get(), where a provider that does not answer
        # can be reported on the login page.
        View.__init__(self, **kwargs)

    def get(self, request):
        if not settings.OIDC_ISSUER:
            raise Http404("Single sign-on is off")
        try:
            found = provider()
        except ProviderUnavailable as error:
            logger.warning("Single sign-on: the provider's discovery failed: %s", error)
            name = settings.OIDC_PROVIDER_NAME
            messages.error(request, f"{name} did not answer. Try again in a few minutes.")
            return HttpResponseRedirect(reverse("admin:login"))
        self.OIDC_OP_AUTH_ENDPOINT = found.authorization_endpoint
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        return super().get(request)


@method_decorator(never_cache, name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    """Sign in the user the provider sends back, or say on the login page that it failed."""

    get_settings = staticmethod(_setting)

    def get(self, request):
        if not settings.OIDC_ISSUER:
            raise Http404("Single sign-on is off")
        if request.GET.get("error"):
            logger.warning(
                "Single sign-on: the provider answered %s: %s",
                request.GET["error"],
                request.GET.get("error_description", ""),
            )
        try:
            return super().get(request)
        except (
            SuspiciousOperation,
            ProviderUnavailable,
            requests.RequestException,
            jwt.PyJWTError,
            KeyError,
            ValueError,
        ) as error:
            # A forged or replayed return, a token that fails verification, a provider
            # that does not answer: the same refusal to the browser, the reason in the log.
            logger.warning("Single sign-on refused: %s: %s", type(error).__name__, error)
            return self.login_failure()

    def login_failure(self):
        messages.error(
            self.request,
            f"Signing in with {settings.OIDC_PROVIDER_NAME} failed. Try again, or ask an "
            "operator to look at the gateway's log.",
        )
        return super().login_failure()

    def login_success(self):
        response = super().login_success()
        # Flags and teams are read at sign-in: a short session brings a change made at the
        # provider (a user removed from a group) to the admin within this many seconds.
        self.request.session.set_expiry(settings.OIDC_SESSION_SECONDS)
        return response


def login_context():
    """Return what the admin's login page shows of single sign-on, or None when it is off."""
    if not settings.OIDC_ISSUER:
        return None
    return {
        "provider_name": settings.OIDC_PROVIDER_NAME,
        "password_login": settings.ADMIN_PASSWORD_LOGIN,
    }


# Under the admin's path, so that the admin's handler and middleware (sessions, CSRF, the
# admin's CSP) serve them (gateway/handler.py). The names are mozilla-django-oidc's, which
# its views reverse to build the redirect URI.
urlpatterns = [
    path("authenticate/", SignInView.as_view(), name="oidc_authentication_init"),
    path("callback/", CallbackView.as_view(), name="oidc_authentication_callback"),
]

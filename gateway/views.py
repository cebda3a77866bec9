"""Views of the gateway itself: health, the OpenAPI document, the admin's login, and
OpenAI-style errors for unknown paths and requests Django refuses."""

import logging
import secrets

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django_ratelimit.core import is_ratelimited

from gateway import metrics, sso
from gateway.addresses import address_key
from gateway.db import off_the_request_thread
from gateway.decorators import require_methods
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    error_response,
)
from gateway.memo import cache_kind
from gateway.openapi import openapi_json

logger = logging.getLogger(__name__)

# Seconds in the window of each unit of a django-ratelimit rate (ADMIN_LOGIN_RATE).
RATE_WINDOWS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@require_methods("GET")
async def healthz(request):
    """Answer 200 while the process runs (liveness)."""
    return JsonResponse({"status": "ok"})


@require_methods("GET")
async def readyz(request):
    """Answer 200 if the database and the cache answer, 503 naming the one that does not.

    `cache_kind` says whether limits are counted for every process ("shared", Redis) or
    for this one alone ("local", the in-process cache).
    """
    checks = {"database": await _database_answers(), "cache": await _cache_answers()}
    ready = all(checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable"}
        | {name: "ok" if good else "unavailable" for name, good in checks.items()}
        | {"cache_kind": cache_kind()},
        status=200 if ready else 503,
    )


# In the pool, which closes the connection it opens: no request thread holds one.
@off_the_request_thread
def _database_answers():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.exception("Readiness: the database does not answer")
        return False


async def _cache_answers():
    try:
        name = "readyz:" + secrets.token_hex(8)
        await cache.aset(name, 1, timeout=10)
        return await cache.aget(name) == 1
    except Exception:
        logger.exception("Readiness: the cache does not answer")
        return False


@require_methods("GET")
async def prometheus_metrics(request):
    """Answer the Prometheus metrics; with METRICS_TOKEN set, only to that bearer token."""
    expected = settings.METRICS_TOKEN
    if expected:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), expected.encode()):
            return error_response(AuthenticationFailed("Send the metrics token as a bearer token."))
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


@require_methods("GET")
async def openapi(request):
    """Answer the OpenAPI document of the /v1 surface, for clients and fuzzers to read."""
    return HttpResponse(openapi_json(), content_type="application/json")


@sensitive_post_parameters("password")
@never_cache
def admin_login(request, extra_context=None):
    """Show the admin's login, refusing attempts past ADMIN_LOGIN_RATE with 429.

    Attempts are counted per client address and per user name, so that guessing one
    account's password from many addresses is slowed as much as guessing many from one.
    With ADMIN_PASSWORD_LOGIN off, the page offers single sign-on alone and a user name and
    password sent anyway are refused with 403 before they are looked at.
    """
    if request.method == "POST" and not settings.ADMIN_PASSWORD_LOGIN:
        return HttpResponse(
            "Signing in with a password is switched off: sign in with "
            f"{settings.OIDC_PROVIDER_NAME}.",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    if request.method == "POST":
        rate = settings.ADMIN_LOGIN_RATE
        # Both counters are counted before either is checked.
        limited = [
            is_ratelimited(
                request, group="admin-login", key=key, rate=rate, method="POST", increment=True
            )
            for key in (_client_key, _user_name_key)
        ]
        if any(limited):
            return HttpResponse(
                "Too many login attempts. Wait a little and try again.",
                status=429,
                content_type="text/plain; charset=utf-8",
                headers={"Retry-After": str(RATE_WINDOWS[rate[-1]])},
            )
    return admin.site.login(request, (extra_context or {}) | {"sso": sso.login_context()})


def _client_key(group, request):
    return address_key(request.META)


def _user_name_key(group, request):
    """Return the user name as the login form hands it to the authentication backend.

    The form strips white space and applies NFKC, so ' admin', 'admin\t' and a fullwidth
    'ａｄｍｉｎ' all log in as 'admin': counted on the raw value, each would be a fresh
    counter for the same account. Case is kept, as the backend's lookup keeps it.
    """
    form = admin.site.login_form or AdminAuthenticationForm
    raw = request.POST.get("username", "")
    try:
        return form.base_fields["username"].clean(raw)
    except ValidationError:
        # Empty or too long: no account has that name; counted as given.
        return raw


@csrf_exempt
async def not_found(request, path=""):
    return error_response(
        NotFound(f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
    )


def bad_request(request, exception):
    return error_response(InvalidRequest("The request is malformed.", code="bad_request"))


def server_error(request):
    return error_response(GatewayError())


def page_not_found(request, exception):
    return error_response(NotFound(f"Unknown request URL: {request.method} {request.path}."))

"""Views of the gateway itself: health, the OpenAPI document, the admin's login, and
OpenAI-style errors for unknown paths and requests Django refuses."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django_ratelimit.core import is_ratelimited

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    error_response,
)
from gateway.openapi import openapi_json

# Seconds in the window of each unit of a django-ratelimit rate (ADMIN_LOGIN_RATE).
RATE_WINDOWS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


async def healthz(request):
    return JsonResponse({"status": "ok"})


async def openapi(request):
    """Answer the OpenAPI document of the /v1 surface, for clients and fuzzers to read."""
    if request.method != "GET":
        return error_response(MethodNotAllowed(request.method, ["GET"]))
    return HttpResponse(openapi_json(), content_type="application/json")


@sensitive_post_parameters("password")
@never_cache
def admin_login(request, extra_context=None):
    """Show the admin's login, refusing attempts past ADMIN_LOGIN_RATE with 429.

    Attempts are counted per client address and per user name, so that guessing one
    account's password from many addresses is slowed as much as guessing many from one.
    """
    if request.method == "POST":
        rate = settings.ADMIN_LOGIN_RATE
        # Both counters are counted before either is checked.
        limited = [
            is_ratelimited(
                request, group="admin-login", key=key, rate=rate, method="POST", increment=True
            )
            for key in ("ip", "post:username")
        ]
        if any(limited):
            return HttpResponse(
                "Too many login attempts. Wait a little and try again.",
                status=429,
                content_type="text/plain; charset=utf-8",
                headers={"Retry-After": str(RATE_WINDOWS[rate[-1]])},
            )
    return admin.site.login(request, extra_context)


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

import contextlib
import functools
import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.views.decorators.csrf import csrf_exempt

from apikeys.authentication import authenticate
from apikeys.permissions import require_write
from apikeys.throttling import aadmit, adescribe_limits, asettle
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    error_response,
)


def allowed_methods(methods):
    """Return the methods a view answers: those given, and HEAD wherever GET is.

    A HEAD request is answered as GET would be, without the body (the handler drops it);
    the Allow header of a 405 names the methods given.
    """
    return [*methods, "HEAD"] if "GET" in methods and "HEAD" not in methods else list(methods)


def require_methods(*methods):
    """Make an async view answer other methods with OpenAI's 405 error object."""
    allowed = allowed_methods(methods)

    def decorator(view):
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                return error_response(MethodNotAllowed(request.method, methods))
            return await view(request, *args, **kwargs)

        return wrapper

    return decorator


def api_endpoint(*, methods, write=False):
    """Make an async view an API endpoint: method check, key, permission, limits, errors.

    The view gets the authenticated key as `request.api_key` and may raise any
    GatewayError; it is rendered as OpenAI's error object. Once the key is known, the
    answer carries its rate limit headers (x-ratelimit-*), a refusal (429) too; an
    endpoint that runs a model adds its token windows and budget (x-budget-*). A
    reservation that no usage record took over when the view ends is returned here.
    """

    allowed = allowed_methods(methods)

    def decorator(view):
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            allowance = None
            request.reservation = None
            response = None
            try:
                if request.method not in allowed:
                    raise MethodNotAllowed(request.method, methods)
                request.api_key = await authenticate(request)
                if write:
                    require_write(request.api_key)
                # Endpoints that need write permission are those that run a model: the
                # view reserves their tokens and money once the request is validated
                # (apikeys/throttling.reserve).
                allowance = await aadmit(request, spends=write)
                response = await view(request, *args, **kwargs)
            except GatewayError as error:
                response = error_response(error)
            finally:
                if not getattr(response, "streaming", False):
                    await _release_unclaimed(request)
            if allowance is not None and write and request.reservation is None:
                # Refused before its reservation (invalid, a model it may not use): where
                # its limits stand all the same.
                with contextlib.suppress(Exception):
                    await adescribe_limits(request)
            if allowance is not None:
                # Set before a streamed answer's first byte is sent; a reservation has
                # added the token windows and budgets to it.
                allowance.add_headers(response)
            return response

        return wrapper

    return decorator


async def _release_unclaimed(request):
    """Return a reservation that no usage record took over: the view ended before any
    provider was called. (A stream's record takes it over when the stream ends.)"""
    reservation = request.reservation
    if reservation is not None and not reservation.claimed:
        reservation.claimed = True
        await asettle(request.api_key, reservation, 0, 0)


def json_body(request):
    """Return the request's decoded JSON body, or raise the matching 4xx error."""
    content_type = request.content_type or ""
    if content_type and content_type != "application/json":
        raise InvalidRequest(
            f"Unsupported content type '{content_type}'; send application/json.",
            code="unsupported_content_type",
        )
    try:
        raw = request.body
    except RequestDataTooBig:
        raise PayloadTooLarge(
            f"The request body is larger than {settings.MAX_REQUEST_BYTES} bytes."
        ) from None
    try:
        return json.loads(raw)
    # Nesting deep enough to exhaust the parser's recursion is no valid request either.
    except (ValueError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None

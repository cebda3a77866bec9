"""The gateway's own middleware: request ids, security headers, CORS, abandoned streams.

Each is async: a middleware that works in a thread would cost every request a hop to it
and back, and these only set headers.
"""

import asyncio
import contextvars
import functools
import re
import secrets
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from corsheaders.middleware import CorsMiddleware as BaseCorsMiddleware
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware
from django.middleware import clickjacking, common, csrf, security
from django.urls import reverse

from gateway import metrics
from gateway.logs import request_id_var


class RequestIdMiddleware:
    """Give every request an id, sent back as `x-request-id` and kept on usage records."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        request.id = "req_" + secrets.token_hex(16)
        # Left set: each request runs in a task of its own, whose context ends with it, and
        # Django logs the request's outcome after the middleware has returned.
        request_id_var.set(request.id)
        started = time.perf_counter()
        response = await self.get_response(request)
        response["x-request-id"] = request.id
        # Labelled by URL pattern, not path: ids in paths would make a series each.
        match = request.resolver_match
        endpoint = match.route if match is not None else "unmatched"
        metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response


# Streaming responses made while serving the current request (see AbandonedStreamMiddleware).
_streams = contextvars.ContextVar("streams", default=None)
# What may follow a prefix in a header name that CORS_ALLOW_HEADER_PREFIXES lets through.
HEADER_NAME = re.compile(r"[a-z0-9-]+")


def track_stream(response):
    """Have a streaming response closed if its request is cancelled before it is sent."""
    streams = _streams.get()
    if streams is not None:
        streams.append(response)


class _AsyncMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)


class AbandonedStreamMiddleware(_AsyncMiddleware):
    """Close the streams of a request that was cancelled before its response was sent.

    Django's ASGI handler cancels the request's task when the client goes away, and calls
    the response's close() only if the view and every middleware had already returned it.
    A streaming response made by the view and dropped on its way out would keep its
    upstream request open until garbage collection; this middleware closes it instead.
    """

    async def __call__(self, request):
        streams = []
        token = _streams.set(streams)
        try:
            return await self.get_response(request)
        except asyncio.CancelledError:
            for response in streams:
                response.close()
            raise
        finally:
            _streams.reset(token)


class SecurityHeadersMiddleware(_AsyncMiddleware):
    """Set the security headers that Django's SecurityMiddleware does not."""

    async def __call__(self, request):
        response = await self.get_response(request)
        # Browsers' XSS auditors are gone or, where left, can be abused to blank parts of a
        # page; 0 switches off any that remain (OWASP's advice). CSP does the real work.
        response.setdefault("X-XSS-Protection", "0")
        return response


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the admin's policy on admin pages and no thread hop.

    CONTENT_SECURITY_POLICY is the API's policy; ADMIN_CONTENT_SECURITY_POLICY applies under
    the admin's URL. django-csp's decorators still override both for a view.
    """

    async def __acall__(self, request):
        # Building the header reads settings only; no reason to run it in a thread.
        self.process_request(request)
        response = await self.get_response(request)
        return self.process_response(request, response)

    def get_policy_parts(self, request, response, report_only=False):
        parts = super().get_policy_parts(request, response, report_only)
        if not report_only and parts.config is None and self._is_admin(request):
            parts.config = settings.ADMIN_CONTENT_SECURITY_POLICY["DIRECTIVES"]
        return parts

    def _is_admin(self, request):
        return request.path_info.startswith(self._admin_prefix)

    @functools.cached_property
    def _admin_prefix(self):
        return reverse("admin:index")


class CorsMiddleware(BaseCorsMiddleware):
    """django-cors-headers, also allowing any header under CORS_ALLOW_HEADER_PREFIXES.

    The openai SDKs send a family of x-stainless-* headers that grows with their versions;
    a preflight asking for a new one is answered as if it were listed.
    """

    def add_response_headers(self, request, response):
        response = super().add_response_headers(request, response)
        if "access-control-allow-headers" not in response:
            return response
        allowed = {name.lower() for name in settings.CORS_ALLOW_HEADERS}
        prefixes = tuple(settings.CORS_ALLOW_HEADER_PREFIXES)
        requested = request.headers.get("access-control-request-headers", "")
        extra = []
        for name in (part.strip().lower() for part in requested.split(",")):
            if (
                name.startswith(prefixes)
                and HEADER_NAME.fullmatch(name)
                and name not in allowed
                and name not in extra
            ):
                extra.append(name)
        if extra:
            response["access-control-allow-headers"] += ", " + ", ".join(extra)
        return response


class RequestBodyLimit:
    """An ASGI wrapper that stops reading a request body past MAX_REQUEST_BYTES.

    Django reads the whole body before any view runs, and checks its size against
    DATA_UPLOAD_MAX_MEMORY_SIZE only from Content-Length, which a chunked body does not
    have: without this, a body of any size would be read and spooled to disk. Past the
    limit, Django is handed the end of the body and a Content-Length above the limit, so
    the view that reads the body answers 413 through the usual pipeline, headers and all.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.MAX_REQUEST_BYTES
        # A copy: its headers change if the body turns out too large.
        scope = dict(scope)
        declared = _content_length(scope["headers"])
        too_large = declared is not None and declared > limit
        ended = False
        received = 0

        async def limited_receive():
            nonlocal ended, received, too_large
            if too_large and not ended:
                ended = True
                return {"type": "http.request", "body": b"", "more_body": False}
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                if ended:
                    # The rest of a body that was refused: dropped as it comes.
                    continue
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = ended = True
                    scope["headers"] = [
                        (name, value)
                        for name, value in scope["headers"]
                        if name.lower() != b"content-length"
                    ] + [(b"content-length", str(received).encode())]
                    return {"type": "http.request", "body": b"", "more_body": False}
                ended = not message.get("more_body", False)
                return message

        return await self.app(scope, limited_receive, send)


def _content_length(headers):
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _OnTheLoop:
    """Run a Django middleware's hooks on the event loop rather than in a thread.

    Under ASGI, Django runs each hook of a MiddlewareMixin in a thread: a hop there and
    back per hook and per request, a dozen for the stack below, which cost the API more
    than all its own work. The hooks of these middlewares only read settings, headers and
    cookies, so they run where they are.
    """

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(_OnTheLoop, security.SecurityMiddleware):
    pass


class CommonMiddleware(_OnTheLoop, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(_OnTheLoop, csrf.CsrfViewMiddleware):
    async def process_view(self, request, callback, callback_args, callback_kwargs):
        # A coroutine, so that Django's handler calls it without a thread: it reads the
        # cookie and, on the admin's forms, the body already in memory.
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(_OnTheLoop, auth_middleware.AuthenticationMiddleware):
    """The user is loaded lazily, by the (sync) admin views that need it."""


class MessageMiddleware(_OnTheLoop, messages_middleware.MessageMiddleware):
    pass


class XFrameOptionsMiddleware(_OnTheLoop, clickjacking.XFrameOptionsMiddleware):
    pass


class SessionMiddleware(sessions_middleware.SessionMiddleware):
    """Sessions, saved in a thread only by the requests that used them (the admin's)."""

    async def __acall__(self, request):
        self.process_request(request)
        response = await self.get_response(request)
        session = request.session
        if session.accessed or session.modified:
            # Saving a session writes to the database.
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)

"""The API's own middleware (settings.API_MIDDLEWARE, run by gateway.handler.ApiHandler),
and the body limit in front of both handlers.

The admin runs on Django's own middleware (settings.MIDDLEWARE). These are the API's
counterparts: small async classes that set headers and ids, with no thread hop, since an
API request has no session, cookie or form to read. Each is made from the next callable
in the chain and reads its settings per request, so that a changed setting applies at once.
"""

import asyncio
import contextvars
import re
import secrets
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from corsheaders.middleware import CorsMiddleware as BaseCorsMiddleware
from django.conf import settings
from django.http import HttpResponsePermanentRedirect

from gateway import metrics
from gateway.logs import request_id_var

# Streaming responses made while serving the current request (see AbandonedStreamMiddleware).
_streams = contextvars.ContextVar("streams", default=None)
# What may follow a prefix in a header name that CORS_ALLOW_HEADER_PREFIXES lets through.
HEADER_NAME = re.compile(r"[a-z0-9-]+")


def track_stream(response):
    """Have a streaming response closed if its request is cancelled before it is sent."""
    streams = _streams.get()
    if streams is not None:
        streams.append(response)


class _ApiMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)


class AbandonedStreamMiddleware(_ApiMiddleware):
    """Close the streams of a request that were made and will never be sent.

    The handler cancels the request's task when the client goes away, and closes the
    response only once it has it. A streaming response made by the view and dropped on
    its way out (the request cancelled, or answered otherwise: a middleware inside this
    one failed, and its error was answered instead) would keep its upstream request open
    and its reservation held until garbage collection; this middleware ends it instead.
    """

    async def __call__(self, request):
        streams = []
        token = _streams.set(streams)
        try:
            response = await self.get_response(request)
        except asyncio.CancelledError:
            for stream in streams:
                stream.close()
            raise
        finally:
            _streams.reset(token)
        for stream in streams:
            if stream is not response:
                stream.drop()
        return response


class RequestIdMiddleware(_ApiMiddleware):
    """Give every request an id, sent back as `x-request-id` and kept on usage records."""

    async def __call__(self, request):
        request.id = "req_" + secrets.token_hex(16)
        # Left set: each request runs in a task of its own, whose context ends with it, and
        # the handler logs the request's outcome after the middleware has returned.
        request_id_var.set(request.id)
        started = time.perf_counter()
        response = await self.get_response(request)
        response["x-request-id"] = request.id
        # Labelled by URL pattern, not path: ids in paths would make a series each.
        match = getattr(request, "resolver_match", None)
        endpoint = match.route if match is not None else "unmatched"
        metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response


class TransportMiddleware(_ApiMiddleware):
    """Refuse unknown hosts, send plain HTTP to HTTPS, and ask browsers to keep to HTTPS.

    What Django's SecurityMiddleware and CommonMiddleware do for the admin, from the same
    settings: ALLOWED_HOSTS, SECURE_SSL_REDIRECT (but for SECURE_REDIRECT_EXEMPT),
    SECURE_HSTS_SECONDS and its two flags.
    """

    async def __call__(self, request):
        # DisallowedHost for a host ALLOWED_HOSTS does not name: a 400.
        host = request.get_host()
        if (
            settings.SECURE_SSL_REDIRECT
            and not request.is_secure()
            and not any(
                re.search(pattern, request.path.lstrip("/"))
                for pattern in settings.SECURE_REDIRECT_EXEMPT
            )
        ):
            host = settings.SECURE_SSL_HOST or host
            response = HttpResponsePermanentRedirect(f"https://{host}{request.get_full_path()}")
        else:
            response = await self.get_response(request)
        if settings.SECURE_HSTS_SECONDS and request.is_secure():
            value = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                value += "; includeSubDomains"
            if settings.SECURE_HSTS_PRELOAD:
                value += "; preload"
            response.setdefault("Strict-Transport-Security", value)
        return response


class SecurityHeadersMiddleware(_ApiMiddleware):
    """Tell browsers to render, frame and run nothing of the API's answers.

    API_CONTENT_SECURITY_POLICY is the API's policy (the admin's, CONTENT_SECURITY_POLICY,
    is django-csp's on Django's side).
    """

    async def __call__(self, request):
        response = await self.get_response(request)
        directives = settings.API_CONTENT_SECURITY_POLICY["DIRECTIVES"]
        response.setdefault(
            "Content-Security-Policy",
            "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items()),
        )
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            response.setdefault("X-Content-Type-Options", "nosniff")
        response.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS)
        if settings.SECURE_REFERRER_POLICY:
            response.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY)
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            response.setdefault(
                "Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
            )
        return _no_xss_auditor(response)


class XssProtectionMiddleware:
    """Switch off what is left of browsers' XSS auditors, on the admin's pages (Django's
    side; the API's SecurityHeadersMiddleware does it on the API's)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self._acall(request)
        return _no_xss_auditor(self.get_response(request))

    async def _acall(self, request):
        return _no_xss_auditor(await self.get_response(request))


def _no_xss_auditor(response):
    # Browsers' XSS auditors are gone or, where left, can be abused to blank parts of a
    # page; 0 switches off any that remain (OWASP's advice). CSP does the real work.
    response.setdefault("X-XSS-Protection", "0")
    return response


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


def _content_length(headers):
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""The gateway's errors, and the one place that renders them as OpenAI's error object.

    GatewayError                 every error a client can see
    ├── InvalidRequest           400 invalid_request_error (names the parameter)
    ├── AuthenticationFailed     401 authentication_error
    ├── PermissionDenied         403 permission_error
    ├── NotFound                 404 invalid_request_error
    │   └── ModelNotFound        404 code model_not_found
    ├── MethodNotAllowed         405
    ├── PayloadTooLarge          413
    ├── RateLimited              429 rate_limit_error
    │   └── UpstreamQuotaExhausted  429 the provider's allowance is used up until it renews
    └── UpstreamError            502 the provider failed or answered nonsense
        ├── UpstreamOverCapacity 503 the provider has no capacity for the model just now
        └── UpstreamTimeout      504 the provider did not answer in time

Providers translate their own failures into these at their boundary; views raise them;
`error_response()` turns any of them into a JsonResponse.
"""

import ipaddress
import os
import re
from urllib.parse import urlsplit

from django.http import JsonResponse
from django.views.debug import SafeExceptionReporterFilter


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code = None
    default_message = "The gateway failed to handle the request."
    # Whether a provider may have run its model on the request's prompt before this
    # failure: if so, the prompt is paid for (apikeys/usage.py). True of the upstream's
    # failures (UpstreamError), False of refusals; providers/base.py sets it on each error
    # made from an upstream's answer or a failed connection.
    prompt_spent = False

    def __init__(self, message=None, *, param=None, code=None, headers=None):
        self.message = message or self.default_message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}
        super().__init__(self.message)

    def as_dict(self):
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_message = "The request is not valid."


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    default_message = "Incorrect API key provided."


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_permissions"
    default_message = "This API key is not allowed to do that."


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    default_message = "Not found."


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model, **kwargs):
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            **kwargs,
        )


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, method, allowed):
        super().__init__(
            f"Method {method} is not allowed here; use {', '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    default_message = "The request body is too large."


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    default_message = "Rate limit reached; try again later."


class UpstreamQuotaExhausted(RateLimited):
    """The provider's allowance for the gateway's account is used up until it renews.

    Another attempt, or another model of the same account, fails the same way until then;
    Retry-After says when that is.
    """

    code = "upstream_quota_exhausted"
    default_message = "The model provider's allowance is used up; try again once it renews."


class UpstreamError(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_error"
    default_message = "The model provider failed to answer."
    # A failure after the upstream took the request: a 5xx, a timeout, a cut stream, an
    # answer that makes no sense.
    prompt_spent = True


class UpstreamOverCapacity(UpstreamError):
    """The provider has no capacity for the model at the moment.

    503, not 429: the client exceeded no limit of its own, and the condition is the
    service's temporary overload that RFC 9110 gives 503 for. OpenAI's SDKs retry a 503
    after a short backoff, which is what capacity that comes back within seconds wants.
    """

    status = 503
    code = "upstream_over_capacity"
    default_message = "The model is over capacity at its provider; try again shortly."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    default_message = "The model provider did not answer in time."


# The longest wait worth retrying after, in seconds: openai-python's own limit on
# Retry-After. openai-node sleeps however long Retry-After says (a spent monthly budget's
# wait runs to the month's end).
LONGEST_USEFUL_WAIT = 60


def error_response(error):
    """Render a GatewayError as the OpenAI error object with its status and headers."""
    response = JsonResponse(error.as_dict(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    if _retry_cannot_help(error):
        # Both official SDKs (and the clients built on them) give up at once on this header.
        response["x-should-retry"] = "false"
    return response


def _retry_cannot_help(error):
    """Whether a retry within a minute is bound to meet the same error: a spent monthly
    budget, or any wait asked for that is longer than a minute (a day's allowance)."""
    if error.code == "insufficient_quota":
        return True
    try:
        return int(error.headers.get("Retry-After", 0)) > LONGEST_USEFUL_WAIT
    except ValueError:
        # An HTTP date: the gateway writes seconds, so this is an upstream's, kept as sent.
        return False


def redact(text, secrets):
    """Return text with every non-empty secret in it replaced by a placeholder."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


# A URL in an upstream's message; its host decides whether it may be shown. The scheme is
# bounded (32 characters, far above any in use): unbounded, every word of a long run such as
# a.a.a.a... would be scanned to its end for "://", seconds per 10 kB of message.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]{0,31}://[^\s\"'<>]+", re.IGNORECASE)
# Host names that only make sense inside a private network.
_INTERNAL_SUFFIXES = (".local", ".internal", ".lan", ".localdomain", ".svc", ".corp", ".arpa")
# An address written without a scheme, with or without a port: an IPv4 address, an IPv6
# address in brackets or bare, or a host name that only a private network resolves. Each is
# checked by _is_internal_address before it is taken out, so that a public address, a version
# (3.1.4) or a time of day (10:30:00) stays.
_BARE_ADDRESS = re.compile(
    r"""
    \[[0-9a-f:.]+ (?:%[\w.-]+)? \] (?::\d{1,5})?       # [fd00::1]:443
    | (?<![\w.:-]) (?:                                 # not part of a longer word
        \d{1,3} (?:\.\d{1,3}){3} (?::\d{1,5})?          # 10.1.2.3:8080
        | [0-9a-f]{0,4} (?::[0-9a-f]{0,4}){2,7} (?:%[\w.-]+)?  # fd00::1, fe80::1%eth0
        | localhost (?::\d{1,5})?
        | (?:[a-z0-9-]+\.)+ (?:SUFFIXES) (?::\d{1,5})?  # gpu-3.svc.cluster.local
    ) (?![\w:-]|\.\w)                                  # nor followed by more of one
    """.replace("SUFFIXES", "|".join(suffix[1:] for suffix in _INTERNAL_SUFFIXES)),
    re.IGNORECASE | re.VERBOSE,
)


def redact_internal_urls(text):
    """Return text with every URL and address that points inside a private network replaced.

    Upstreams and the proxies in front of them name their own addresses in errors
    (http://10.0.3.7:8000/v1/..., or a bare 10.0.3.7:8000). A public URL, such as a link to
    the provider's documentation, stays: it tells the client where to read about the error.
    """
    text = _URL.sub(lambda match: "[internal URL]" if _is_internal(match[0]) else match[0], text)
    return _BARE_ADDRESS.sub(
        lambda match: "[internal address]" if _is_internal_address(match[0]) else match[0], text
    )


def _is_internal(url):
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return True
    return _is_internal_host(host)


def _is_internal_address(written):
    """Tell whether a bare address (10.0.0.1:80, [fd00::1]:443, fd00::1, db.internal) is."""
    if written.startswith("["):
        host = written[1 : written.index("]")]
    elif written.count(":") > 1:
        host = written
    else:
        host = written.partition(":")[0]
    if ":" in host or re.fullmatch(r"[\d.]+", host):
        # Written like an address, so only an address counts: 3.1.400.5 may be a version,
        # 10:30:00 a time of day.
        try:
            return not ipaddress.ip_address(host.partition("%")[0]).is_global
        except ValueError:
            return False
    return _is_internal_host(host)


def _is_internal_host(host):
    host = host.partition("%")[0].rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_INTERNAL_SUFFIXES)
    return not address.is_global


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Keep API keys and upstream credentials out of error reports, in DEBUG too.

    Django hides settings and request headers with sensitive names, and, outside DEBUG,
    the variables of functions marked with sensitive_variables. A key that some frame holds
    under another name would still be shown on DEBUG's error page; this filter also hides
    every variable with a sensitive name, or whose value shows the request's key or the
    value of an environment variable with a sensitive name (where credentials live).
    """

    # Shorter values would match ordinary text; no credential is this short.
    SHORTEST_SECRET = 8

    def get_traceback_frame_variables(self, request, tb_frame):
        secrets = self._secrets(request)
        cleansed = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if value != self.cleansed_substitute and (
                self.hidden_settings.search(name) or self._shows(value, secrets)
            ):
                value = self.cleansed_substitute
            cleansed.append((name, value))
        return cleansed

    def _secrets(self, request):
        values = [
            value
            for name, value in os.environ.items()
            if self.hidden_settings.search(name) and len(value) >= self.SHORTEST_SECRET
        ]
        headers = getattr(request, "headers", {})
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        if len(credential.strip()) >= self.SHORTEST_SECRET:
            values.append(credential.strip())
        return values

    @staticmethod
    def _shows(value, secrets):
        try:
            text = repr(value)
        except Exception:
            return False
        return any(secret in text for secret in secrets)

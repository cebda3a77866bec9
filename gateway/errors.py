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
    └── UpstreamError            502 the provider failed or answered nonsense
        └── UpstreamTimeout      504 the provider did not answer in time

Providers translate their own failures into these at their boundary; views raise them;
`error_response()` turns any of them into a JsonResponse.
"""

from django.http import JsonResponse


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code = None
    default_message = "The gateway failed to handle the request."

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


class UpstreamError(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_error"
    default_message = "The model provider failed to answer."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    default_message = "The model provider did not answer in time."


def error_response(error):
    """Render a GatewayError as the OpenAI error object with its status and headers."""
    response = JsonResponse(error.as_dict(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def redact(text, secrets):
    """Return text with every non-empty secret in it replaced by a placeholder."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text

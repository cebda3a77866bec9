from django.conf import settings
from django.core.checks import Error, register

# The API's middleware that Django's own security checks cannot see: they read MIDDLEWARE,
# the admin's, and API_MIDDLEWARE is the gateway's (gateway/handler.py).
REQUIRED_API_MIDDLEWARE = [
    "gateway.middleware.TransportMiddleware",
    "gateway.middleware.SecurityHeadersMiddleware",
]


@register("security")
def check_api_middleware(app_configs, **kwargs):
    return [
        Error(
            f"{name} is not in API_MIDDLEWARE: the API would answer without it.",
            hint="Keep the HTTPS redirect, HSTS and security headers of the API.",
            id="gateway.E001",
        )
        for name in REQUIRED_API_MIDDLEWARE
        if name not in settings.API_MIDDLEWARE
    ]

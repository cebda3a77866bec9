from django.conf import settings
from django.core.checks import Error, register

# Django's middleware that the gateway runs as its own subclasses (gateway/middleware.py);
# Django's checks for them look for Django's names and are silenced in settings.
REQUIRED_MIDDLEWARE = [
    "gateway.middleware.SecurityMiddleware",
    "gateway.middleware.CsrfViewMiddleware",
    "gateway.middleware.XFrameOptionsMiddleware",
]


@register("security")
def check_security_middleware(app_configs, **kwargs):
    return [
        Error(
            f"{name} is not in MIDDLEWARE: Django's check for it is silenced.",
            hint="Keep gateway.middleware's security, CSRF and clickjacking middleware.",
            id="gateway.E001",
        )
        for name in REQUIRED_MIDDLEWARE
        if name not in settings.MIDDLEWARE
    ]

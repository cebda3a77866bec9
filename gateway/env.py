"""Read settings from the environment, failing loudly on values that make no sense.

Each helper names the variable in its error, so a typo in a deployment stops the
process at start with a message an operator can act on.
"""

import ipaddress
import os
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def envstr(name, default=""):
    return os.environ.get(name, default)


def envbool(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name, default, minimum=None):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envfloat(name, default, minimum=None):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envlist(name, default=()):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def envchoice(name, default, choices):
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def envnetworks(name, default=()):
    """Return a comma-separated list of IP networks (10.0.0.0/8, fd00::/8, 192.0.2.7), as
    given; a network with host bits set (10.0.0.1/8) is refused as a likely typo."""
    networks = envlist(name, default)
    for network in networks:
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name} must list IP networks: {exc}") from None
    return networks


# Schemes of EMAIL_URL: (backend, default port, TLS).
MAIL_SCHEMES = {
    "smtp": ("django.core.mail.backends.smtp.EmailBackend", 25, None),
    "smtp+tls": ("django.core.mail.backends.smtp.EmailBackend", 587, "EMAIL_USE_TLS"),
    "smtps": ("django.core.mail.backends.smtp.EmailBackend", 465, "EMAIL_USE_SSL"),
    "console": ("django.core.mail.backends.console.EmailBackend", None, None),
    "dummy": ("django.core.mail.backends.dummy.EmailBackend", None, None),
}


def envmailurl(name):
    """Return Django's mail settings from a URL such as smtp+tls://user:pass@host:587
    (smtp, smtp+tls for STARTTLS, smtps for TLS from the start, console, dummy), or {} when
    the variable is unset. The user and password are percent-decoded."""
    value = os.environ.get(name, "").strip()
    if not value:
        return {}
    url = urlsplit(value)
    if url.scheme not in MAIL_SCHEMES:
        raise ImproperlyConfigured(
            f"{name} must start with one of {', '.join(s + '://' for s in MAIL_SCHEMES)}, "
            f"not {url.scheme or 'nothing'}://"
        )
    backend, default_port, tls = MAIL_SCHEMES[url.scheme]
    mail = {"EMAIL_BACKEND": backend}
    if default_port is None:
        return mail
    try:
        port = url.port or default_port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a port that is not a number") from None
    if not url.hostname:
        raise ImproperlyConfigured(f"{name} must name a host, as in smtp://mail.example.com")
    mail.update(
        EMAIL_HOST=url.hostname,
        EMAIL_PORT=port,
        EMAIL_HOST_USER=unquote(url.username or ""),
        EMAIL_HOST_PASSWORD=unquote(url.password or ""),
        EMAIL_USE_TLS=tls == "EMAIL_USE_TLS",
        EMAIL_USE_SSL=tls == "EMAIL_USE_SSL",
    )
    return mail

"""Settings for the gateway, all read from the environment (see README, "Configuration").

Development needs none of them: SQLite in the project folder, the in-process cache and a
throwaway secret key. Production refuses to start without a real SECRET_KEY (no placeholder),
ALLOWED_HOSTS, REDIS_URL, and a METRICS_TOKEN or METRICS_PUBLIC=true.
"""

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured, ValidationError

from alerts.validators import validate_thresholds
from gateway.env import (
    envbool,
    envchoice,
    envfloat,
    envint,
    envlist,
    envmailurl,
    envnetworks,
    envstr,
)

BASE_DIR = Path(__file__).resolve().parent.parent

ENVIRONMENT = envchoice("ENVIRONMENT", "development", ("development", "staging", "production"))
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production"

SECRET_KEY = envstr("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = envbool("DEBUG", ENVIRONMENT == "development")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# Words found in keys copied from examples rather than generated: deploy/env.example's
# "change-me-...", Django's "django-insecure-...", "your-secret-key-here". Six letters or
# more, so that a random key of 50 characters holds one by chance about once in 10**8.
PLACEHOLDER_KEY_WORDS = ("change", "replace", "example", "placeholder", "insecure", "secret")
# Django's deploy check (security.W009) asks for more different characters than this.
FEWEST_DIFFERENT_KEY_CHARACTERS = 5

if ENVIRONMENT == "production":
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a random value of at least 32 characters in production"
        )
    placeholder = [word for word in PLACEHOLDER_KEY_WORDS if word in SECRET_KEY.lower()]
    if placeholder:
        raise ImproperlyConfigured(
            f"SECRET_KEY looks like a placeholder (it holds {placeholder[0]!r}): set a random "
            "value in production, such as python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'"
        )
    if len(set(SECRET_KEY)) < FEWEST_DIFFERENT_KEY_CHARACTERS:
        raise ImproperlyConfigured(
            f"SECRET_KEY must hold at least {FEWEST_DIFFERENT_KEY_CHARACTERS} different "
            "characters in production: set a random value"
        )
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production: it shows internals in errors")
    if not envlist("ALLOWED_HOSTS"):
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS must list this gateway's host names in production"
        )

INSTALLED_APPS = [
    "daphne",
    "csp",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_ratelimit",
    "gateway",
    "apikeys",
    "completions",
    "alerts",
]

# The admin's middleware: Django's own, run by Django's handler, which Django's checks see.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "gateway.middleware.XssProtectionMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The API's middleware: the gateway's own, async, run on the event loop by its own handler
# (gateway/handler.py) for every path but the admin's. The same settings drive both.
API_MIDDLEWARE = [
    "gateway.middleware.AbandonedStreamMiddleware",
    "gateway.middleware.RequestIdMiddleware",
    "gateway.middleware.TransportMiddleware",
    "gateway.middleware.SecurityHeadersMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "gateway.middleware.CorsMiddleware",
]

ROOT_URLCONF = "gateway.urls"
ASGI_APPLICATION = "gateway.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

try:
    DATABASES = {
        "default": dj_database_url.parse(
            envstr("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
            conn_max_age=envint("DATABASE_CONN_MAX_AGE", 0, minimum=0),
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    options = DATABASES["default"].setdefault("OPTIONS", {})
    # The usage writer writes while requests read: wait for a lock rather than fail with
    # "database is locked" (seconds), and let readers go on during a write (WAL).
    options.setdefault("timeout", 20)
    options.setdefault("transaction_mode", "IMMEDIATE")
    options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    # The tests' database is a file, not SQLite's shared in-memory one: there, a reader
    # that meets another connection's write fails at once instead of waiting.
    # In memory-backed /dev/shm where there is one, as SQLite's own would be.
    test_folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(test_folder) / f"gateway-test-{os.getpid()}.sqlite3")
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Connections borrowed per query from a pool of this size per process (0: none).
    pool_size = envint("DATABASE_POOL_SIZE", 0, minimum=0)
    if pool_size:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": pool_size,
        }

REDIS_URL = envstr("REDIS_URL")
# Rate limits, token windows and key revocations are shared between processes through this
# cache: without Redis each process counts on its own, so N processes admit N times a key's
# limit. A deployment of exactly one process may say so and run on the in-process cache.
ALLOW_LOCAL_CACHE_IN_PRODUCTION = envbool("ALLOW_LOCAL_CACHE_IN_PRODUCTION", False)
if ENVIRONMENT == "production" and not REDIS_URL and not ALLOW_LOCAL_CACHE_IN_PRODUCTION:
    raise ImproperlyConfigured(
        "REDIS_URL must be set in production, so that every process counts limits in one "
        "cache; for a deployment of a single process, set ALLOW_LOCAL_CACHE_IN_PRODUCTION=true"
    )
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# django-ratelimit refuses the in-process cache (E003, W001): each process would count on its
# own. Development serves from one process, where it counts exactly, so only there is it
# allowed; anywhere else several processes need REDIS_URL. Django's own Redis backend
# (atomic SET NX and INCRBY) is merely not on django-ratelimit's list (W001).
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
if not REDIS_URL and (ENVIRONMENT == "development" or ALLOW_LOCAL_CACHE_IN_PRODUCTION):
    SILENCED_SYSTEM_CHECKS.append("django_ratelimit.E003")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# The time zone whose midnights start a budget's day, week (Monday) and month, and a day's
# tokens (apikeys/periods.py): an IANA name such as Europe/Berlin.
LIMITS_TIME_ZONE = envstr("LIMITS_TIME_ZONE", "UTC")
try:
    import zoneinfo

    zoneinfo.ZoneInfo(LIMITS_TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
    raise ImproperlyConfigured(
        f"LIMITS_TIME_ZONE={LIMITS_TIME_ZONE!r} is not a time zone; use an IANA name such as "
        "UTC or Europe/Berlin."
    ) from error
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# The largest request body accepted, in bytes; a larger one is answered with 413.
MAX_REQUEST_BYTES = envint("MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

# Seconds a process keeps keys and models it read from the database before reading them
# again (a change made through this process's admin is seen at once).
REGISTRY_CACHE_SECONDS = envfloat("REGISTRY_CACHE_SECONDS", 5.0, minimum=0.0)

# The usage writer (apikeys/writer.py). Seconds a request waits for its usage record to be
# written before it answers with an error (the record stays queued and is written later);
# more than SQLite's 20 s wait for a lock, so that a lock is waited out.
USAGE_WRITE_TIMEOUT = envfloat("USAGE_WRITE_TIMEOUT", 30.0, minimum=0.1)
# Seconds between attempts to write records whose write failed.
USAGE_WRITE_RETRY_SECONDS = envfloat("USAGE_WRITE_RETRY_SECONDS", 5.0, minimum=0.1)
# Seconds the process may spend at exit writing the records it still holds.
USAGE_WRITER_SHUTDOWN_TIMEOUT = envfloat("USAGE_WRITER_SHUTDOWN_TIMEOUT", 30.0, minimum=0.0)
# Where the writer writes: a class with add, add_one, touch, recover and close (tests put
# one that fails in its place).
USAGE_WRITER_STORE = "apikeys.writer.DatabaseStore"
# Days raw usage records are kept (manage.py prune_usage deletes older ones); reports of
# older periods read the hourly rollups, which are kept USAGE_ROLLUP_RETENTION_DAYS (empty:
# for ever).
USAGE_RETENTION_DAYS = envint("USAGE_RETENTION_DAYS", 90, minimum=1)
USAGE_ROLLUP_RETENTION_DAYS = envint("USAGE_ROLLUP_RETENTION_DAYS", None, minimum=1)

# Upstream providers.
CLOUDFLARE_ACCOUNT_ID = envstr("CLOUDFLARE_ACCOUNT_ID")
CLOUDFLARE_API_TOKEN = envstr("CLOUDFLARE_API_TOKEN")
CLOUDFLARE_API_BASE_URL = envstr(
    "CLOUDFLARE_API_BASE_URL", "https://api.cloudflare.com/client/v4"
).rstrip("/")
# Environment variables a provider's "API key variable" may name (completions.models.Provider),
# besides those that start with GATEWAY_PROVIDER_ and CLOUDFLARE_API_TOKEN: a provider sends
# the variable's value upstream, so it must never be able to read the gateway's own secrets.
PROVIDER_KEY_VARIABLES = envlist("PROVIDER_KEY_VARIABLES")
# The gateway's own secrets, which no provider may send anywhere.
GATEWAY_SECRET_VARIABLES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "METRICS_TOKEN",
    "OIDC_CLIENT_SECRET",
)
for name in PROVIDER_KEY_VARIABLES:
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
        raise ImproperlyConfigured(
            f"PROVIDER_KEY_VARIABLES must list names of environment variables, like "
            f"OPENAI_API_KEY, not {name!r}"
        )
    if name in GATEWAY_SECRET_VARIABLES:
        raise ImproperlyConfigured(
            f"PROVIDER_KEY_VARIABLES must not name {name}: it holds the gateway's own secret, "
            "which a provider would send upstream"
        )
# Upstream timeouts, in seconds; one that runs out is a 504 (or, once a stream has started,
# an error event). UPSTREAM_TIMEOUT bounds each wait that has no bound of its own.
UPSTREAM_TIMEOUT = envfloat("UPSTREAM_TIMEOUT", 120.0, minimum=0.1)
# Opening a connection to an upstream.
UPSTREAM_CONNECT_TIMEOUT = envfloat("UPSTREAM_CONNECT_TIMEOUT", 10.0, minimum=0.1)
# From sending the request to the head of the answer, and for a stream to its first event;
# unset: UPSTREAM_TIMEOUT.
UPSTREAM_FIRST_BYTE_TIMEOUT = envfloat("UPSTREAM_FIRST_BYTE_TIMEOUT", None, minimum=0.1)
# The longest silence between two reads of a stream; unset: UPSTREAM_TIMEOUT.
UPSTREAM_READ_TIMEOUT = envfloat("UPSTREAM_READ_TIMEOUT", None, minimum=0.1)
# A whole stream, from the request to its last event (10 minutes).
UPSTREAM_STREAM_TIMEOUT = envfloat("UPSTREAM_STREAM_TIMEOUT", 600.0, minimum=0.1)
# Retries of a call that failed before any byte reached the client: a connection that could
# not be made or was lost, 502, 503, and 429 with Retry-After. At most UPSTREAM_RETRIES
# more attempts, none starting more than UPSTREAM_RETRY_MAX_SECONDS after the first did; the
# wait doubles from UPSTREAM_RETRY_BACKOFF seconds, or is what Retry-After asks for.
UPSTREAM_RETRIES = envint("UPSTREAM_RETRIES", 2, minimum=0)
UPSTREAM_RETRY_MAX_SECONDS = envfloat("UPSTREAM_RETRY_MAX_SECONDS", 5.0, minimum=0.0)
UPSTREAM_RETRY_BACKOFF = envfloat("UPSTREAM_RETRY_BACKOFF", 0.5, minimum=0.0)
# The largest upstream answer read, in bytes once inflated (32 MiB); a larger one is a 502
# (upstream_answer_too_large). An embeddings answer may also be EMBEDDING_ANSWER_BYTES
# (completions/providers/answers.py) per input, so that 2048 vectors of 3072 floats fit.
# Streams are read as they come and bounded per event (1 MiB), not as a whole.
UPSTREAM_MAX_ANSWER_BYTES = envint("UPSTREAM_MAX_ANSWER_BYTES", 32 * 1024 * 1024, minimum=1024)
# Connections the shared HTTP client keeps open to all upstreams together, per process.
# The max_tokens sent to Workers AI when a client gives none: its older models otherwise
# stop at 256 tokens. Bounded by what the model's context window leaves after the prompt.
DEFAULT_MAX_TOKENS = envint("DEFAULT_MAX_TOKENS", 4096, minimum=1)
UPSTREAM_MAX_CONNECTIONS = envint("UPSTREAM_MAX_CONNECTIONS", 512, minimum=1)
# Seconds between two words of the echo development model's stream.
ECHO_STREAM_DELAY = envfloat("ECHO_STREAM_DELAY", 0.05, minimum=0.0)

# Days a stored response of /v1/responses is kept (OpenAI keeps them 30 days); older ones
# are no longer found and `manage.py clear_responses` deletes them.
RESPONSES_RETENTION_DAYS = envint("RESPONSES_RETENTION_DAYS", 30, minimum=1)

# Images by URL, for upstreams that take images only inline (Workers AI): the gateway fetches
# them and sends data: URIs (completions/image_urls.py). Off: such a URL is refused with 400.
IMAGE_URL_FETCH = envbool("IMAGE_URL_FETCH", True)
# The largest image fetched or taken as a data: URI, in bytes (10 MiB).
IMAGE_URL_MAX_BYTES = envint("IMAGE_URL_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
# Seconds one image may take, from resolving its host to its last byte, redirects included.
IMAGE_URL_TIMEOUT = envfloat("IMAGE_URL_TIMEOUT", 5.0, minimum=0.1)
# Images by URL in one request, fetched at once: a request may hold this many times
# IMAGE_URL_MAX_BYTES in memory, and a third more again as base64.
IMAGE_URL_MAX_IMAGES = envint("IMAGE_URL_MAX_IMAGES", 4, minimum=1)
IMAGE_URL_MAX_REDIRECTS = envint("IMAGE_URL_MAX_REDIRECTS", 3, minimum=0)
# Networks (CIDRs) inside the gateway's own network that images may come from, such as an
# internal image server; private, loopback and link-local addresses are otherwise refused.
IMAGE_URL_ALLOWED_NETWORKS = envnetworks("IMAGE_URL_ALLOWED_NETWORKS")

# Mail, for budget alerts and the usage digest (alerts/). EMAIL_URL (smtp+tls://user:password@
# smtp.example.com:587; smtps:// for TLS from the start; console://) or EMAIL_HOST and its
# companions; with neither, development prints mail to the console and other environments
# send through an SMTP server on localhost:25.
EMAIL_SETTINGS = envmailurl("EMAIL_URL")
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)
EMAIL_BACKEND = (
    "django.core.mail.backends.console.EmailBackend"
    if ENVIRONMENT == "development" and not envstr("EMAIL_HOST")
    else "django.core.mail.backends.smtp.EmailBackend"
)
# Seconds an SMTP server may take to answer.
EMAIL_TIMEOUT = envfloat("EMAIL_TIMEOUT", 10.0, minimum=0.1)
globals().update(EMAIL_SETTINGS)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other: set one")
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "gateway@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Budget alerts (alerts/): the percentages of a budget that send an alert, once each per
# budget period, for keys and teams that set none of their own.
BUDGET_ALERT_THRESHOLDS = envstr("BUDGET_ALERT_THRESHOLDS", "50,80,95,100")
try:
    validate_thresholds(BUDGET_ALERT_THRESHOLDS)
except ValidationError as error:
    raise ImproperlyConfigured(f"BUDGET_ALERT_THRESHOLDS: {error.messages[0]}") from None
# Attempts at delivering an alert to a team's webhook, the wait before the second attempt in
# seconds (doubling after each: 1, 2, 4, 8 s), and how long one attempt may take (seconds).
BUDGET_ALERT_WEBHOOK_ATTEMPTS = envint("BUDGET_ALERT_WEBHOOK_ATTEMPTS", 5, minimum=1)
BUDGET_ALERT_WEBHOOK_BACKOFF = envfloat("BUDGET_ALERT_WEBHOOK_BACKOFF", 1.0, minimum=0.0)
BUDGET_ALERT_WEBHOOK_TIMEOUT = envfloat("BUDGET_ALERT_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
# Networks (CIDRs) inside the gateway's own network that webhooks may be posted to, such as
# an internal alerting service; private, loopback and link-local addresses are otherwise
# refused, as for images by URL.
BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS = envnetworks("BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS")

# Security headers (README, "Security settings"). Behind a proxy that terminates TLS, set
# TRUST_X_FORWARDED_PROTO so that requests it forwards count as HTTPS; without it, HSTS is
# never sent and the redirect to HTTPS loops.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if envbool("TRUST_X_FORWARDED_PROTO", False) else None
)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", ENVIRONMENT == "production")
# Load balancers' health checks and metrics scrapers speak plain HTTP to the process.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# One year, in seconds, once in production; HSTS is sent on HTTPS responses only.
SECURE_HSTS_SECONDS = envint(
    "SECURE_HSTS_SECONDS", 365 * 24 * 3600 if ENVIRONMENT == "production" else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", ENVIRONMENT == "production"
)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", ENVIRONMENT == "production")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", ENVIRONMENT == "production")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Origins (https://admin.example.com) allowed to post the admin's forms when they differ from
# the host the request names, as behind some proxies.
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

# Error reports (DEBUG's error page, logs of errors) hide API keys and credentials.
DEFAULT_EXCEPTION_REPORTER_FILTER = "gateway.errors.ExceptionReporterFilter"

# The admin's pages get what they use: their static files, and scripts or styles a template
# marks with the request's nonce (<script nonce="{{ request.csp_nonce }}">). django-csp's
# middleware sends it, on Django's side only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# The API answers JSON and event streams that no browser should render or run: nothing may
# load (gateway.middleware.SecurityHeadersMiddleware).
API_CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
}
# No page of the gateway uses a powerful browser feature.
PERMISSIONS_POLICY = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "browsing-topics",
        "camera",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "geolocation",
        "gyroscope",
        "hid",
        "idle-detection",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "picture-in-picture",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
}

# The API is for programs in any origin (keys, not cookies, authenticate it); the admin is
# never exposed to other origins.
CORS_URLS_REGEX = r"^/v1/.*$"
CORS_ALLOWED_ORIGINS = envlist("CORS_ALLOWED_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = not CORS_ALLOWED_ORIGINS
CORS_ALLOW_CREDENTIALS = False
# DELETE: a stored response (/v1/responses/{id}).
CORS_ALLOW_METHODS = ["GET", "POST", "DELETE", "OPTIONS"]
# What the openai SDKs send from a browser; any other x-stainless-* header they add later is
# allowed too (gateway.middleware.CorsMiddleware).
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-requested-with",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
    "x-stainless-helper-method",
]
CORS_ALLOW_HEADER_PREFIXES = ["x-stainless-"]
CORS_EXPOSE_HEADERS = [
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-budget-remaining-usd",
    "x-budget-reset",
]

# Proxies (CIDRs, such as 127.0.0.1 for nginx on the same machine) whose X-Forwarded-For is
# believed: the client's address, which login and authentication limits count by, is the
# right-most address in it that is not one of these (gateway/addresses.py). Empty: the
# header is ignored and the peer's address is the client's.
TRUSTED_PROXIES = envnetworks("TRUSTED_PROXIES")

# Failed API authentications (401) allowed per client address per minute; past that, the
# address is answered 429 with Retry-After until the minute is over, without a lookup.
AUTH_FAILURES_PER_MINUTE = envint("AUTH_FAILURES_PER_MINUTE", 30, minimum=1)

# Admin login attempts allowed per client address and per user name, as django-ratelimit
# rates (N/s, N/m, N/h, N/d); more are answered with 429 until the window has passed.
ADMIN_LOGIN_RATE = envstr("ADMIN_LOGIN_RATE", "10/m")
if not re.fullmatch(r"[1-9][0-9]*/[smhd]", ADMIN_LOGIN_RATE):
    raise ImproperlyConfigured(
        f"ADMIN_LOGIN_RATE must be a rate such as 10/m (per s, m, h or d), not {ADMIN_LOGIN_RATE!r}"
    )

# Single sign-on for the admin through an OpenID Connect provider (gateway/sso.py); off
# while OIDC_ISSUER is unset. The provider's endpoints come from
# <OIDC_ISSUER>/.well-known/openid-configuration, read at the first sign-in, not here, so
# that manage.py and the API run whether or not the provider answers.
OIDC_ISSUER = envstr("OIDC_ISSUER")
OIDC_CLIENT_ID = envstr("OIDC_CLIENT_ID")
OIDC_CLIENT_SECRET = envstr("OIDC_CLIENT_SECRET")
# Separated by spaces, as OAuth writes them, or commas.
OIDC_SCOPES = envstr("OIDC_SCOPES", "openid email profile").replace(",", " ").split()
# The claim that lists the user's groups, and the groups that make a user staff, a superuser
# (staff too), or a member of the existing team named by what follows the prefix
# (team:research is the team "research"). Taken again from the claims at each sign-in.
OIDC_GROUPS_CLAIM = envstr("OIDC_GROUPS_CLAIM", "groups")
OIDC_STAFF_GROUPS = envlist("OIDC_STAFF_GROUPS")
OIDC_SUPERUSER_GROUPS = envlist("OIDC_SUPERUSER_GROUPS")
OIDC_TEAM_GROUP_PREFIX = envstr("OIDC_TEAM_GROUP_PREFIX", "team:")
# The name on the login page's "Sign in with ..." button; unset: the issuer's host name.
OIDC_PROVIDER_NAME = envstr("OIDC_PROVIDER_NAME") or urlsplit(OIDC_ISSUER).hostname or ""
# Seconds an admin session made by single sign-on lasts (8 hours): a user removed from a
# group at the provider keeps what it gave until the session ends.
OIDC_SESSION_SECONDS = envint("OIDC_SESSION_SECONDS", 8 * 3600, minimum=60)
# Off: the login page offers only the provider, and user names and passwords are refused.
ADMIN_PASSWORD_LOGIN = envbool("ADMIN_PASSWORD_LOGIN", True)
if OIDC_ISSUER:
    issuer = urlsplit(OIDC_ISSUER)
    loopback = issuer.hostname in ("localhost", "127.0.0.1", "::1")
    if not issuer.hostname or not (
        issuer.scheme == "https" or (issuer.scheme == "http" and loopback)
    ):
        raise ImproperlyConfigured(
            f"OIDC_ISSUER must be an https:// URL (http:// only on this machine), not "
            f"{OIDC_ISSUER!r}"
        )
    if not OIDC_CLIENT_ID or not OIDC_CLIENT_SECRET:
        raise ImproperlyConfigured(
            "OIDC_CLIENT_ID and OIDC_CLIENT_SECRET must be set with OIDC_ISSUER: the client "
            "the gateway is registered as at the provider"
        )
    if "openid" not in OIDC_SCOPES:
        raise ImproperlyConfigured(f"OIDC_SCOPES must include openid, not {OIDC_SCOPES!r}")
elif not ADMIN_PASSWORD_LOGIN:
    raise ImproperlyConfigured(
        "ADMIN_PASSWORD_LOGIN=false needs OIDC_ISSUER: nobody could sign in to the admin"
    )
AUTHENTICATION_BACKENDS = (
    ["django.contrib.auth.backends.ModelBackend"] if ADMIN_PASSWORD_LOGIN else []
) + (["gateway.sso.OidcBackend"] if OIDC_ISSUER else [])

# Bearer token /metrics asks for; empty: open. Production refuses to start with /metrics
# open unless METRICS_PUBLIC says it is meant to be (the proxy keeps it from the internet).
METRICS_TOKEN = envstr("METRICS_TOKEN")
METRICS_PUBLIC = envbool("METRICS_PUBLIC", False)
if ENVIRONMENT == "production" and not METRICS_TOKEN and not METRICS_PUBLIC:
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be set in production, or METRICS_PUBLIC=true if /metrics is meant "
        "to answer without one (restricted at the proxy)"
    )

LOG_FORMAT = envchoice(
    "LOG_FORMAT", "text" if ENVIRONMENT == "development" else "json", ("text", "json")
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gateway.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "gateway.logs.JsonFormatter"},
        "text": {
            "()": "gateway.logs.TextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        # Upstream URLs carry account ids; the client library's request log is not needed.
        "httpx": {"level": "WARNING"},
    },
}

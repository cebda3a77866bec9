"""Settings of the bare proxy: Django with nothing but one forwarding view."""

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "apikeys", "completions"]
MIDDLEWARE = []
ROOT_URLCONF = "bench.bare_proxy"
# The gateway's models are importable, never queried.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
UPSTREAM_TIMEOUT = 120.0
UPSTREAM_CONNECT_TIMEOUT = 10.0
UPSTREAM_MAX_CONNECTIONS = 512

"""ASGI entry point: `daphne gateway.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

django_application = get_asgi_application()

# Imported once Django is set up.
from gateway.middleware import RequestBodyLimit  # noqa: E402

application = RequestBodyLimit(django_application)

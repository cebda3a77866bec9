"""ASGI entry point: `daphne gateway.asgi:application`.

The admin's paths go to Django's own handler and middleware; every other path to the API's
handler (gateway/handler.py), which makes no thread per request. Both sit behind the body
limit.
"""

import os
from http import HTTPStatus

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

django_application = get_asgi_application()

# Imported once Django is set up.
from gateway.handler import ApiHandler, is_api_path, path_info  # noqa: E402
from gateway.middleware import RequestBodyLimit  # noqa: E402


class PathRouter:
    """Send each HTTP request to the API's handler or to Django's, by its path."""

    def __init__(self, api, django):
        self.api = api
        self.django = django

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and is_api_path(path_info(scope)):
            return await self.api(scope, receive, send)
        return await self.django(scope, receive, send)


def name_every_status():
    """Give daphne's HTTP layer a reason phrase for every status Python knows.

    daphne writes the status line with Twisted, whose table of phrases lacks 429 (and 422,
    451, ...) and writes "429 Unknown Status" instead: harmless for clients, which read the
    code, but confusing in logs and curl. ASGI sends no phrase, so Twisted's table is the
    only place to name it. Twisted's own phrases are kept; under another ASGI server the
    table goes unread.
    """
    try:
        from twisted.web import http
    except ImportError:
        return
    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode())


name_every_status()
application = RequestBodyLimit(PathRouter(ApiHandler(), django_application))

"""ASGI entry point: `daphne gateway.asgi:application`."""

import os
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

django_application = get_asgi_application()

# Imported once Django is set up.
from gateway.middleware import RequestBodyLimit  # noqa: E402


class OneSyncThread:
    """Run the sync code of every request in one thread made once, not one per request.

    Django gives each request a thread of its own for its sync code, made when first used
    and joined (from yet another thread) when the request ends; it always has some, as it
    closes every response from a thread. On the API's path, where the sync code is only
    that close, making and joining two threads cost more than the request's own work. The
    admin's views, the only real sync code, take turns in this thread; the request path's
    rare database reads run in a pool of their own (gateway/db.py).
    """

    def __init__(self, app):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-sync")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        async with ThreadSensitiveContext(executor=self.executor):
            return await self.app(scope, receive, send)


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
application = OneSyncThread(RequestBodyLimit(django_application))

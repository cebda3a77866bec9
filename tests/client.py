"""Django's test clients, sending each request where gateway.asgi sends it: the admin's
paths through Django's handler and middleware, every other path through the API's handler
(gateway/handler.py) and its middleware, as in production."""

from asgiref.sync import async_to_sync
from django import test
from django.test import client

from completions.providers.client import close_client
from gateway.handler import ApiHandler, is_api_path


class _Routing:
    _api = None

    @property
    def api(self):
        # Made on first use, as Django loads its middleware: after a test's settings.
        if self._api is None:
            self._api = ApiHandler()
        return self._api


class _ClientHandler(_Routing, client.ClientHandler):
    def get_response(self, request):
        if is_api_path(request.path_info):
            return async_to_sync(self._api_response)(request)
        return super().get_response(request)

    async def _api_response(self, request):
        # async_to_sync runs each request on an event loop of its own, which ends with it:
        # the upstream client made on that loop is closed here, or its aiohttp session is
        # left open until the interpreter's exit (tests/test_sync_client.py).
        try:
            return await self.api.get_response(request)
        finally:
            await close_client()


class _AsyncClientHandler(_Routing, client.AsyncClientHandler):
    async def get_response_async(self, request):
        if is_api_path(request.path_info):
            return await self.api.get_response(request)
        return await super().get_response_async(request)


class Client(test.Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handler = _ClientHandler(self.handler.enforce_csrf_checks)


class AsyncClient(test.AsyncClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handler = _AsyncClientHandler(self.handler.enforce_csrf_checks)

"""Django's test clients, sending each request where gateway.asgi sends it: the admin's
paths through Django's handler and middleware, every other path through the API's handler
(gateway/handler.py) and its middleware, as in production."""

from asgiref.sync import async_to_sync
from django import test
from django.test import client

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
            return async_to_sync(self.api.get_response)(request)
        return super().get_response(request)


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

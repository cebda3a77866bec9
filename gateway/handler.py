"""The API's own request handler: every path but the admin's, natively async, no thread.

    daphne ─ RequestBodyLimit ─ gateway.asgi.route ─┬─ /admin, /static: Django's ASGIHandler
                                                    │  (settings.MIDDLEWARE, Django's own)
                                                    └─ anything else: ApiHandler
                                                       (settings.API_MIDDLEWARE, the gateway's)

Django's handler runs the sync parts of each request (its request_started and
request_finished receivers, the response's close(), every hook of a MiddlewareMixin) in a
thread made for that request, and the admin needs that. The API's views, middleware and
responses are async throughout, so this handler runs them on the event loop: a request to
/v1/ makes no thread at all. It still reads the same URLconf, renders the same error
handlers (gateway.views) and uses Django's request class, so a view cannot tell the two
apart.
"""

import asyncio
import io
import logging

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import resolve, set_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

from gateway.errors import InvalidRequest, error_response

logger = logging.getLogger("django.request")


def is_api_path(path_info):
    """Whether a path (below the script prefix) is the API's rather than Django's admin's.

    The admin and its static files are Django's; every other path is the API's, unknown
    ones included, so that they are answered with OpenAI's error object.
    """
    static = "/" + settings.STATIC_URL.strip("/") + "/"
    return not (path_info == "/admin" or path_info.startswith(("/admin/", static)))


def path_info(scope):
    """Return the path of an ASGI scope below its root path, as Django's request has it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class ApiHandler:
    """Answer an API request: the middleware in settings.API_MIDDLEWARE, then the view.

    Each middleware is an async callable made from the next one, as Django's are, and any
    exception one raises is turned into the response Django's error handlers give
    (gateway.views: OpenAI's error object), which the middleware outside it then sees.
    """

    def __init__(self):
        chain = convert_exception_to_response(self._view)
        for path in reversed(settings.API_MIDDLEWARE):
            chain = convert_exception_to_response(import_string(path)(chain))
        self._chain = chain

    async def __call__(self, scope, receive, send):
        """Serve one ASGI HTTP request."""
        # Code a view runs with sync_to_async(thread_sensitive=True) gets a thread of this
        # request's own, as asgiref promises; no API view does, so none is made.
        async with ThreadSensitiveContext():
            await self._handle(scope, receive, send)

    async def get_response(self, request):
        """Return the response to a request, as Django's BaseHandler.get_response_async."""
        response = await self._chain(request)
        response._resource_closers.append(request.close)
        if not response.streaming and not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        if response.status_code >= 400:
            # The same log line Django writes; logging is no reason to leave the loop.
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return response

    async def _view(self, request):
        match = resolve(request.path_info)
        request.resolver_match = match
        view = match.func
        if not iscoroutinefunction(view):
            view = sync_to_async(view)
        return await view(request, *match.args, **match.kwargs)

    async def _handle(self, scope, receive, send):
        body = await _read_body(receive)
        if body is None:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            request = ASGIRequest(scope, body)
        except UnicodeDecodeError:
            response = error_response(InvalidRequest("The request's path is not UTF-8."))
            await _send(response, send, head=False)
            return
        response = None

        async def answer():
            nonlocal response
            response = await self.get_response(request)
            await _send(response, send, head=request.method == "HEAD")

        # As Django's handler does: a client that goes away cancels its request, and with it
        # the stream being sent (whose generator then closes its upstream).
        disconnect = asyncio.create_task(_disconnected(receive))
        answering = asyncio.create_task(answer())
        try:
            await asyncio.wait([disconnect, answering], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (disconnect, answering):
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if response is not None:
                # On the loop: the API's responses hold nothing that blocks to close, and
                # request_finished's receiver closes this thread's database connections,
                # of which the event loop's thread has none (the ORM refuses to run here).
                response.close()
        if disconnect.done() and not disconnect.cancelled():
            # Retrieved, so that asyncio does not log it as never retrieved.
            disconnect.exception()
        if answering.done() and not answering.cancelled():
            exception = answering.exception()
            if exception is not None and not isinstance(exception, (OSError, RequestAborted)):
                raise exception


async def _read_body(receive):
    """Return the request's body as a file, or None if the client left before sending it.

    The body is whole in memory: RequestBodyLimit (gateway.middleware) ends it past
    MAX_REQUEST_BYTES, so it holds at most that and one message more.
    """
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return io.BytesIO(b"".join(chunks))


async def _disconnected(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()


async def _send(response, send, head):
    """Send a response over ASGI; to a HEAD request, its head alone."""
    headers = [
        (name.encode("ascii"), value.encode("latin1")) for name, value in response.items()
    ] + [
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
        for cookie in response.cookies.values()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if head:
        await send({"type": "http.response.body"})
    elif response.streaming:
        content = aiter(response)
        try:
            async for part in content:
                for chunk, _ in ASGIHandler.chunk_bytes(part):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            if hasattr(content, "aclose"):
                await content.aclose()
        await send({"type": "http.response.body"})
    else:
        await send({"type": "http.response.body", "body": response.content})

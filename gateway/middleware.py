import secrets

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class RequestIdMiddleware:
    """Give every request an id, sent back as `x-request-id` and kept on usage records."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        request.id = "req_" + secrets.token_hex(16)
        response = await self.get_response(request)
        response["x-request-id"] = request.id
        return response

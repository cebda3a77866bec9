"""Views of the gateway itself: health, and OpenAI-style errors for unknown paths."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from gateway.errors import GatewayError, NotFound, error_response


async def healthz(request):
    return JsonResponse({"status": "ok"})


@csrf_exempt
async def not_found(request, path=""):
    return error_response(
        NotFound(f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
    )


def server_error(request):
    return error_response(GatewayError())


def page_not_found(request, exception):
    return error_response(NotFound(f"Unknown request URL: {request.method} {request.path}."))

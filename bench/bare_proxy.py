"""The floor to compare the gateway with: an async Django view that only forwards the body
to the upstream with the gateway's own shared HTTP client, and returns the answer.

Run by bench/run.py as `daphne bench.bare_proxy:application` with bench.bare_settings.
"""

import os

from django.core.asgi import get_asgi_application
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

application = get_asgi_application()

# Imported once Django is set up: the providers package loads the gateway's models.
from completions.providers.client import get_client  # noqa: E402


@csrf_exempt
async def forward(request):
    response = await get_client().post(os.environ["BENCH_UPSTREAM_URL"], content=request.body)
    return HttpResponse(
        response.content, status=response.status_code, content_type="application/json"
    )


urlpatterns = [path("forward", forward)]

"""The key holder's own endpoints: GET /v1/key and GET /v1/usage (apikeys/self_service.py).

Both are read endpoints: a read-only key may call them, they count against the key's
request rate, and they spend nothing.
"""

from django.http import JsonResponse

from apikeys import self_service
from apikeys.serializers import UsageQuerySerializer
from completions.serializers import validate_body
from gateway.db import off_the_request_thread
from gateway.decorators import api_endpoint


@api_endpoint(methods=["GET"])
async def key_detail(request):
    return JsonResponse(await _describe_key(request.api_key))


@api_endpoint(methods=["GET"])
async def usage(request):
    query = validate_body(UsageQuerySerializer, request.GET).validated_data
    buckets = await _usage_buckets(
        request.api_key, query["start"], query["end"], query["bucket"], query["group_by"]
    )
    # OpenAI's page of usage buckets; one page holds them all (at most MAX_RESULTS rows).
    return JsonResponse({"object": "page", "data": buckets, "has_more": False, "next_page": None})


_describe_key = off_the_request_thread(self_service.describe_key)
_usage_buckets = off_the_request_thread(self_service.usage_buckets)

"""The Responses API: POST /v1/responses, and GET and DELETE /v1/responses/{id}.

A response is a chat completion underneath, for every chat model (completions/responses.py
translates the request, completions/response_events.py the answer), through the chat
view's pipeline: the same model lookup, fallbacks, limits and one usage record per request.
Cloudflare's own /ai/v1/responses (gpt-oss) is not used: its chat endpoint serves gpt-oss
too, and one path keeps the limits, fallbacks and usage records alike for every model.

Responses are stored (unless `store: false`) with the key that made them, so that a
conversation can go on from one (`previous_response_id`); only that key finds them, and
none older than RESPONSES_RETENTION_DAYS.
"""

import uuid

from django.http import JsonResponse

from apikeys.permissions import require_write
from apikeys.throttling import hold_seconds
from completions import worst_case
from completions.fallbacks import call_with_fallbacks
from completions.models import StoredResponse
from completions.providers.base import deltas_of_result
from completions.response_events import ResponseEvents
from completions.responses import (
    ResponseRequestSerializer,
    chat_request,
    input_items,
    refuse_unsupported,
)
from completions.serializers import validate_body
from completions.views import _answering_name, _stream, prepare_chat, reserve
from gateway.db import off_the_request_thread
from gateway.decorators import api_endpoint, json_body
from gateway.errors import NotFound


@api_endpoint(methods=["POST"], write=True)
async def create_response(request):
    data = validate_body(ResponseRequestSerializer, json_body(request)).validated_data
    refuse_unsupported(data)
    items = input_items(data.get("input"))
    if data.get("previous_response_id"):
        previous = await _find(request.api_key, data["previous_response_id"])
        if previous is None:
            raise _not_found(data["previous_response_id"], param="previous_response_id")
        items = previous.input_items + previous.output_items + items
    chat = chat_request(data, items)
    model, candidates, meter, chat_for = await prepare_chat(
        request, chat.validated_data, chat.sampling_params(), "/v1/responses", image_param="input"
    )
    await reserve(
        request,
        meter,
        worst_case.chat(chat.validated_data, candidates),
        hold_seconds(data["stream"], len(candidates)),
    )
    response_id = "resp_" + uuid.uuid4().hex
    events = ResponseEvents(response_id, data["model"], data, meter)

    async def keep(finish_reason):
        body = events.conclude(finish_reason)
        if data["store"]:
            await _store(request.api_key, response_id, items, events.output, body)

    if data["stream"]:
        return await _stream(
            candidates,
            meter,
            lambda provider, candidate: provider.stream_chat(chat_for(candidate)),
            events,
            None,
            before_finish=keep,
        )

    async def call(provider, candidate):
        return await provider.chat(chat_for(candidate))

    answered, _, result = await call_with_fallbacks(candidates, meter, call)
    meter.first_token()
    meter.succeeded(result.usage)
    await meter.save()
    events.model = _answering_name(data["model"], model, answered)
    for delta in deltas_of_result(result):
        events.feed(delta)
    await keep(result.finish_reason)
    return JsonResponse(events.response())


@api_endpoint(methods=["GET", "DELETE"])
async def response_detail(request, response_id):
    if request.method == "DELETE":
        require_write(request.api_key)
    stored = await _find(request.api_key, response_id)
    if stored is None:
        raise _not_found(response_id)
    if request.method == "DELETE":
        await _delete(stored)
        return JsonResponse({"id": response_id, "object": "response.deleted", "deleted": True})
    return JsonResponse(stored.body)


def _not_found(response_id, param=None):
    # Another key's response is answered as one that does not exist.
    return NotFound(f"No response with id '{response_id}' was found.", param=param)


@off_the_request_thread
def _find(key, response_id):
    return StoredResponse.objects.kept().filter(id=response_id, api_key=key).first()


@off_the_request_thread
def _store(key, response_id, items, output, body):
    StoredResponse.objects.create(
        id=response_id,
        api_key=key,
        model=body["model"],
        input_items=items,
        output_items=output,
        body=body,
    )


@off_the_request_thread
def _delete(stored):
    stored.delete()

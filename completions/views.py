"""The OpenAI endpoints: plain async views, each step of the pipeline named by its module.

authenticate and authorize (gateway/decorators.py, apikeys/) -> validate
(serializers.py) -> find the model (registry.py) -> call the provider (providers/) ->
record usage (apikeys/usage.py).
"""

import asyncio
import time
import uuid

from django.http import JsonResponse

from apikeys.usage import UsageMeter
from completions.providers import get_provider
from completions.providers.base import ChatRequest
from completions.registry import list_models, resolve_model
from completions.serializers import ChatCompletionSerializer, validate_body
from completions.stop import StopFilter, cut_at_stop
from completions.streaming import ChatChunks, sse_response
from gateway.db import aclose_connections
from gateway.decorators import api_endpoint, json_body
from gateway.errors import GatewayError, InvalidRequest


def _model_object(model_id, model):
    return {
        "id": model_id,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.provider.name,
        "capabilities": model.capabilities,
    }


@api_endpoint(methods=["GET"])
async def models_list(request):
    entries = await list_models(request.api_key)
    return JsonResponse(
        {"object": "list", "data": [_model_object(name, model) for name, model in entries]}
    )


@api_endpoint(methods=["GET"])
async def model_detail(request, model_id):
    model = await resolve_model(model_id, request.api_key)
    return JsonResponse(_model_object(model_id, model))


@api_endpoint(methods=["POST"], write=True)
async def chat_completions(request):
    serializer = validate_body(ChatCompletionSerializer, json_body(request))
    data = serializer.validated_data
    model = await resolve_model(data["model"], request.api_key)
    if not model.capabilities["chat"]:
        raise InvalidRequest(
            f"The model '{data['model']}' does not support chat completions.", param="model"
        )
    provider = get_provider(model.provider)
    chat = ChatRequest(
        model=model.name, messages=data["messages"], params=serializer.sampling_params()
    )
    stops = None if provider.takes_stop else data.get("stop")
    meter = UsageMeter(
        request, model, "/v1/chat/completions", data["stream"], requested_model=data["model"]
    )
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    if data["stream"]:
        include_usage = data.get("stream_options", {}).get("include_usage", False)
        return await _stream_chat(
            provider, chat, meter, stops, ChatChunks(completion_id, data["model"], include_usage)
        )

    try:
        result = await provider.chat(chat)
    except GatewayError as error:
        meter.failed(error)
        await meter.save()
        raise
    meter.first_token()
    meter.succeeded(result.usage)
    await meter.save()
    content, stopped = cut_at_stop(result.content, stops) if stops else (result.content, False)
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": data["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "stop" if stopped else result.finish_reason,
                }
            ],
            "usage": result.usage.as_dict(),
        }
    )


async def _stream_chat(provider, chat, meter, stops, chunks):
    deltas = provider.stream_chat(chat)
    # Wait for the upstream's first event before answering, so that an upstream that
    # refuses the request is answered with a real HTTP error status, not a broken stream.
    try:
        first = await anext(deltas)
    except GatewayError as error:
        meter.failed(error)
        await meter.save()
        raise
    except StopAsyncIteration:
        first = None
    # An open stream holds no database connection: the usage write opens its own.
    await aclose_connections()
    return sse_response(_chat_events(deltas, first, meter, stops, chunks))


async def _chat_events(deltas, first, meter, stops, chunks):
    stop_filter = StopFilter(stops) if stops else None
    finish_reason = "stop"
    try:
        yield chunks.role()
        async for delta in _prepend(first, deltas):
            text = delta.text
            if text:
                # Workers AI sends one token per event: the count of a cut stream.
                meter.completion_tokens_seen += 1
                text = stop_filter.feed(text) if stop_filter else text
                if text:
                    meter.first_token()
                    yield chunks.content(text)
            if delta.usage is not None:
                meter.succeeded(delta.usage)
            finish_reason = delta.finish_reason or finish_reason
        if stop_filter:
            rest = stop_filter.flush()
            if rest:
                yield chunks.content(rest)
            if stop_filter.stopped:
                finish_reason = "stop"
        # Recorded before the last events, so a client that has seen [DONE] can count on
        # the record being there.
        await meter.save()
        yield chunks.finish(finish_reason)
        if chunks.include_usage and meter.usage is not None:
            yield chunks.usage(meter.usage)
        yield chunks.done()
    except GatewayError as error:
        meter.failed(error)
        await meter.save()
        yield chunks.error(error)
        yield chunks.done()
    except (asyncio.CancelledError, GeneratorExit):
        meter.client_closed()
        raise
    except Exception as error:
        meter.failed(error)
        raise
    finally:
        await deltas.aclose()
        await meter.save()


async def _prepend(first, rest):
    if first is not None:
        yield first
    async for item in rest:
        yield item

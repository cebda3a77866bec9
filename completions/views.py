"""The OpenAI endpoints: plain async views, each step of the pipeline named by its module.

authenticate, authorize and limit (gateway/decorators.py, apikeys/) -> validate
(serializers.py) -> find the model and its fallbacks (registry.py) -> call the provider,
falling back while it fails (fallbacks.py, providers/) -> record usage (apikeys/usage.py).
"""

import asyncio
import base64
import logging
import math
import struct
import time
import uuid

from django.http import JsonResponse

from apikeys.throttling import areserve, hold_seconds
from apikeys.usage import UsageMeter
from completions import worst_case
from completions.affinity import session_affinity
from completions.fallbacks import call_with_fallbacks
from completions.image_urls import inline_images
from completions.matryoshka import shorten
from completions.providers import get_provider
from completions.providers.base import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
    first_image_message,
)
from completions.providers.workers_ai_schema import schema_of
from completions.registry import fallback_chain, list_models, resolve_model
from completions.serializers import (
    ChatCompletionSerializer,
    CompletionSerializer,
    EmbeddingSerializer,
    avalidate_body,
)
from completions.stop import StopFilter, cut_at_stop
from completions.streaming import ChatChunks, TextCompletionChunks, sse_response
from gateway.decorators import api_endpoint, json_body
from gateway.errors import GatewayError, InvalidRequest

logger = logging.getLogger(__name__)

# Upstream calls one request may have in flight at once (prompts of a legacy completion,
# batches of embeddings), so that one request cannot exhaust the upstream's concurrency.
MAX_PARALLEL_CALLS = 4


def _model_object(model_id, model):
    return {
        "id": model_id,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.provider.name,
        "capabilities": {**model.capabilities, **model.features},
        # Not in OpenAI's model object, which clients read leniently: when the provider
        # stops serving the model (a date, or null).
        "deprecation_date": model.deprecation_date,
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
    serializer = await avalidate_body(ChatCompletionSerializer, json_body(request))
    data = serializer.validated_data
    model, candidates, meter, chat_for = await prepare_chat(
        request, data, serializer.sampling_params(), "/v1/chat/completions"
    )
    await reserve(
        request,
        meter,
        worst_case.chat(data, candidates),
        hold_seconds(data["stream"], len(candidates)),
    )

    completion_id = "chatcmpl-" + uuid.uuid4().hex
    if data["stream"]:
        chunks = ChatChunks(completion_id, data["model"], serializer.include_usage)
        return await _stream(
            candidates,
            meter,
            lambda provider, candidate: provider.stream_chat(chat_for(candidate)),
            chunks,
            data.get("stop"),
        )

    async def call(provider, candidate):
        return await provider.chat(chat_for(candidate))

    answered, provider, result = await call_with_fallbacks(candidates, meter, call)
    meter.first_token()
    meter.succeeded(result.usage)
    await meter.save()
    content, finish_reason = result.content, result.finish_reason
    if content and data.get("stop") and not provider.applies_stop(answered):
        content, stopped = cut_at_stop(content, data["stop"])
        finish_reason = "stop" if stopped else finish_reason
    message = {"role": "assistant", "content": content}
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _answering_name(data["model"], model, answered),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": result.usage.as_dict(),
        }
    )


async def prepare_chat(request, data, params, endpoint, image_param="messages[{}].content"):
    """Find the model of a chat and its fallbacks, and refuse what the model cannot take.

    `data` holds the chat's validated fields (model, messages, stream, tools, tool_choice,
    response_format, prompt_cache_key) and `params` its sampling parameters. Returns
    (model, candidates, meter, chat_for): chat_for(candidate) is the ChatRequest sent to it.
    """
    model = await resolve_model(data["model"], request.api_key, "chat")
    images_at = first_image_message(data["messages"])
    if images_at is not None and not model.accepts_images:
        raise InvalidRequest(
            f"The model '{data['model']}' cannot take content parts of type 'image_url'; "
            "send text, or choose a model that takes images.",
            param=image_param.format(images_at),
        )
    candidates = fallback_chain(
        model,
        request.api_key,
        "chat",
        suits=lambda fallback: images_at is None or fallback.accepts_images,
    )
    messages = await inline_images(
        data["messages"], [get_provider(candidate.provider) for candidate in candidates]
    )
    affinity = session_affinity(request.api_key, data)

    def chat_for(candidate):
        return ChatRequest(
            model=candidate.name,
            messages=messages,
            params=params,
            tools=data.get("tools"),
            tool_choice=data.get("tool_choice"),
            response_format=data.get("response_format"),
            schema=schema_of(candidate),
            context_window=candidate.context_window,
            default_max_tokens=candidate.default_max_tokens,
            session_affinity=affinity,
            prompt_cache_key=data.get("prompt_cache_key") or None,
        )

    # What the model's schema cannot take is refused before any provider is called.
    chat = chat_for(model)
    get_provider(model.provider).check_chat(chat)
    meter = UsageMeter(
        request,
        model,
        endpoint,
        data["stream"],
        requested_model=data["model"],
        prompt_tokens=estimate_prompt_tokens(chat),
    )
    return model, candidates, meter, chat_for


@api_endpoint(methods=["POST"], write=True)
async def completions(request):
    serializer = await avalidate_body(CompletionSerializer, json_body(request))
    data = serializer.validated_data
    model = await resolve_model(data["model"], request.api_key, "completions")
    params = serializer.sampling_params()
    if data.get("suffix"):
        if not get_provider(model.provider).takes_suffix:
            raise InvalidRequest(
                f"The model '{data['model']}' cannot insert text before a suffix; "
                "leave 'suffix' out.",
                param="suffix",
            )
        params["suffix"] = data["suffix"]
    candidates = fallback_chain(
        model,
        request.api_key,
        "completions",
        suits=lambda fallback: (
            "suffix" not in params or get_provider(fallback.provider).takes_suffix
        ),
    )
    prompts = data["prompt"]

    def completion_for(candidate, prompt):
        return CompletionRequest(
            model=candidate.name,
            prompt=prompt,
            params=params,
            schema=schema_of(candidate),
            context_window=candidate.context_window,
        )

    get_provider(model.provider).check_completion(completion_for(model, prompts[0]))
    # Each prompt's tokens as the gateway counts them, paid for if its call fails.
    prompt_tokens = [estimate_prompt_tokens(completion_for(model, p)) for p in prompts]
    meter = UsageMeter(
        request,
        model,
        "/v1/completions",
        data["stream"],
        requested_model=data["model"],
        prompt_tokens=sum(prompt_tokens),
    )
    rounds = math.ceil(len(prompts) / MAX_PARALLEL_CALLS)
    await reserve(
        request,
        meter,
        worst_case.completions(data, candidates),
        hold_seconds(data["stream"], len(candidates), rounds),
    )

    completion_id = "cmpl-" + uuid.uuid4().hex
    if data["stream"]:
        [prompt] = prompts
        chunks = TextCompletionChunks(
            completion_id,
            data["model"],
            serializer.include_usage,
            echo_prompt=prompt if data["echo"] else "",
        )
        return await _stream(
            candidates,
            meter,
            lambda provider, candidate: provider.stream_complete(completion_for(candidate, prompt)),
            chunks,
            data.get("stop"),
        )

    async def call(provider, candidate):
        return await _all(
            [provider.complete(completion_for(candidate, prompt)) for prompt in prompts],
            meter,
            prompt_tokens,
        )

    answered, provider, results = await call_with_fallbacks(candidates, meter, call)
    usage = sum((result.usage for result in results), Usage())
    meter.first_token()
    meter.succeeded(usage)
    await meter.save()
    choices = []
    for index, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        text, finish_reason = result.content or "", result.finish_reason
        if data.get("stop") and not provider.applies_stop(answered, chat=False):
            text, stopped = cut_at_stop(text, data["stop"])
            finish_reason = "stop" if stopped else finish_reason
        choices.append(
            {
                "text": (prompt if data["echo"] else "") + text,
                "index": index,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        )
    return JsonResponse(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": _answering_name(data["model"], model, answered),
            "choices": choices,
            "usage": usage.as_dict(),
        }
    )


@api_endpoint(methods=["POST"], write=True)
async def embeddings(request):
    serializer = await avalidate_body(EmbeddingSerializer, json_body(request))
    data = serializer.validated_data
    model = await resolve_model(data["model"], request.api_key, "embeddings")
    provider = get_provider(model.provider)
    # A Matryoshka model's vectors are cut by the gateway (shorten below); other models
    # shorten only where their upstream takes `dimensions` itself.
    cut_to = data.get("dimensions") if model.shortens_embeddings else None
    if "dimensions" in data and cut_to is None and not provider.takes_dimensions:
        raise InvalidRequest(
            f"The model '{data['model']}' cannot shorten its embeddings; leave 'dimensions' out.",
            param="dimensions",
        )
    params = {k: data[k] for k in ("dimensions", "user") if k in data}
    if cut_to is not None:
        del params["dimensions"]
    texts = data["input"]
    size = provider.embedding_batch_size
    batches = [texts[start : start + size] for start in range(0, len(texts), size)]
    # Each batch's tokens as the gateway counts them: what Workers AI's embeddings, which
    # report none, are recorded with, and what a failed batch is paid for.
    batch_tokens = [sum(estimate_tokens(text) for text in batch) for batch in batches]
    meter = UsageMeter(
        request,
        model,
        "/v1/embeddings",
        False,
        requested_model=data["model"],
        prompt_tokens=sum(batch_tokens),
    )
    rounds = math.ceil(len(batches) / MAX_PARALLEL_CALLS)
    await reserve(
        request, meter, worst_case.embeddings(texts, model), hold_seconds(False, 1, rounds)
    )

    async def call(provider, candidate):
        return await _all(
            [
                provider.embed(EmbeddingRequest(model=candidate.name, texts=batch, params=params))
                for batch in batches
            ],
            meter,
            batch_tokens,
        )

    # No fallbacks: another model's vectors live in another space, and mixing them in
    # one index would go unnoticed.
    _, _, results = await call_with_fallbacks([model], meter, call)
    usage = Usage()
    for tokens, result in zip(batch_tokens, results, strict=True):
        usage += result.usage or Usage(prompt_tokens=tokens, estimated=True)
    # The texts were embedded: paid for even if the vectors are refused below.
    meter.succeeded(usage)
    vectors = [vector for result in results for vector in result.vectors]
    if cut_to is not None:
        if any(len(vector) < cut_to for vector in vectors):
            error = InvalidRequest(
                f"The model '{data['model']}' makes vectors of {len(vectors[0])} dimensions; "
                f"'dimensions' must be at most that.",
                param="dimensions",
            )
            meter.failed(error)
            await meter.save()
            raise error
        vectors = [shorten(vector, cut_to) for vector in vectors]
    await meter.save()
    return JsonResponse(
        {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _encode(vector, data["encoding_format"]),
                }
                for index, vector in enumerate(vectors)
            ],
            "model": data["model"],
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }
    )


async def reserve(request, meter, worst, hold):
    """Reserve the request's worst case against its limits (429 if it does not fit), for
    `hold` seconds at most; the meter's record settles it."""
    meter.reservation = await areserve(request, worst.tokens, worst.cost, hold)


async def _stream(candidates, meter, open_deltas, chunks, stop, before_finish=None):
    """Answer with the stream of the first candidate that sends its first event.

    `before_finish(finish_reason)`, if given, is awaited once the stream has ended well,
    before its last events are sent (the Responses API keeps the answer there).
    """

    async def first_event(provider, candidate):
        deltas = open_deltas(provider, candidate)
        try:
            return deltas, await anext(deltas)
        except StopAsyncIteration:
            return deltas, None

    # Wait for the upstream's first event before answering, so that an upstream that
    # refuses the request is answered with a real HTTP error status (or replaced by a
    # fallback), not a broken stream.
    answered, provider, (deltas, first) = await call_with_fallbacks(candidates, meter, first_event)
    # From here on, whatever becomes of the stream, its prompt is paid for.
    meter.reached()
    chunks.model = _answering_name(chunks.model, candidates[0], answered)
    applies_stop = provider.applies_stop(answered, chat=isinstance(chunks, ChatChunks))
    stops = None if applies_stop else stop

    async def abandon(dropped):
        # Not one event was sent: the upstream's stream is closed, and the record keeps
        # the prompt it read and what the upstream sent of its answer (`first`).
        if first is not None:
            _count(meter, first)
        if dropped:
            # A failure of the gateway's own (status gateway_error): another answer was sent.
            meter.failed(RuntimeError("The stream was dropped for another answer."))
        else:
            meter.client_closed()
        await _end_stream(deltas, meter)

    # An open stream holds no database connection: nothing on the request path opens one
    # in the request's thread (gateway/db.py), and the usage writer has its own.
    return sse_response(
        _events(deltas, first, meter, stops, chunks, before_finish), on_abandon=abandon
    )


async def _events(deltas, first, meter, stops, chunks, before_finish=None):
    stop_filter = StopFilter(stops) if stops else None
    finish_reason = "stop"
    try:
        for event in chunks.opening():
            yield event
        async for delta in _prepend(first, deltas):
            _count(meter, delta)
            if delta.reasoning:
                meter.first_token()
                event = chunks.reasoning(delta.reasoning)
                if event is not None:
                    yield event
            text = delta.text
            if text:
                text = stop_filter.feed(text) if stop_filter else text
                if text:
                    meter.first_token()
                    yield chunks.content(text)
            if delta.tool_calls:
                meter.first_token()
                yield chunks.tool_calls(delta.tool_calls)
            finish_reason = delta.finish_reason or finish_reason
        if stop_filter:
            rest = stop_filter.flush()
            if rest:
                yield chunks.content(rest)
            if stop_filter.stopped:
                finish_reason = "stop"
        await deltas.aclose()
        # Recorded before the last events, so a client that has seen [DONE] can count on
        # the record being there.
        await meter.save()
        if before_finish is not None:
            await before_finish(finish_reason)
    except (asyncio.CancelledError, GeneratorExit):
        meter.client_closed()
        await _end_stream(deltas, meter)
        raise
    except Exception as error:
        # The head is sent: daphne can no longer answer a 500, and a generator that raises
        # leaves the client's connection open. Every failure ends the stream instead.
        if not isinstance(error, GatewayError):
            logger.exception("A stream failed after its head")
        # Too late for the record when the failure was its write: the writer keeps it.
        meter.failed(error)
        await _end_stream(deltas, meter)
        yield chunks.error(error if isinstance(error, GatewayError) else GatewayError())
        yield chunks.done()
        return
    yield chunks.finish(finish_reason)
    if chunks.include_usage and meter.usage is not None:
        yield chunks.usage(meter.usage)
    yield chunks.done()


def _count(meter, delta):
    """Count what the upstream sent in one event, whether or not it reaches the client: its
    usage, and a token for its text and one for its reasoning (Workers AI sends one token
    an event: the count of a stream cut before its usage)."""
    meter.completion_tokens_seen += bool(delta.text) + bool(delta.reasoning)
    if delta.usage is not None:
        meter.succeeded(delta.usage)


async def _end_stream(deltas, meter):
    """Close the upstream's stream and write the record of a stream that failed or was
    left; a failure here is logged, as the stream has its own to report."""
    try:
        await deltas.aclose()
    except Exception:
        logger.exception("Closing the upstream's stream failed")
    finally:
        try:
            await meter.save()
        except Exception:
            # The writer keeps the record and writes it later (apikeys/writer.py).
            logger.exception("The usage record of a failed stream was not written")


async def _prepend(first, rest):
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def _all(calls, meter=None, prompt_tokens=None):
    """Await the calls, at most MAX_PARALLEL_CALLS at once; return their results in order.

    The first failure cancels the calls still running and is raised; so is the request's
    cancellation. Given a meter, the calls are text calls whose results have a `usage`
    (None if the upstream reported none), and `prompt_tokens` the tokens of each one's
    prompt as the gateway counts them: on a failure or a cancellation, the meter is first
    given what was spent (_spent), so that the calls that succeeded are not lost with the
    one that failed.
    """
    calls = list(calls)
    limit = asyncio.Semaphore(MAX_PARALLEL_CALLS)
    sent = [False] * len(calls)

    async def bounded(index, call):
        async with limit:
            sent[index] = True
            return await call

    tasks = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bounded(i, call)) for i, call in enumerate(calls)]
    except BaseExceptionGroup as failures:
        if meter is not None:
            meter.spent(_spent(tasks, sent, prompt_tokens))
        raise failures.exceptions[0] from None
    except asyncio.CancelledError:
        if meter is not None:
            meter.spent(_spent(tasks, sent, prompt_tokens))
        raise
    return [task.result() for task in tasks]


def _spent(tasks, sent, prompt_tokens):
    """Return the Usage of calls of which one failed or all were cancelled.

    A call that succeeded counts its usage (its prompt estimated if none was reported);
    one that failed, its prompt if its error says a model may have read it (prompt_spent);
    one cancelled while in flight, its prompt, as a client that leaves does; one that had
    not started, nothing.
    """
    usage = Usage()
    for task, started, tokens in zip(tasks, sent, prompt_tokens, strict=True):
        if task.cancelled():
            read = started
        elif task.exception() is not None:
            read = getattr(task.exception(), "prompt_spent", False)
        else:
            usage += task.result().usage or Usage(prompt_tokens=tokens, estimated=True)
            continue
        if read:
            usage += Usage(prompt_tokens=tokens, estimated=True)
    return usage


def _answering_name(requested_name, requested, answered):
    """Return the name a response shows: the one asked for, or the fallback's that answered."""
    return requested_name if answered == requested else answered.name


def _encode(vector, encoding_format):
    if encoding_format == "base64":
        # OpenAI's base64 is the vector's little-endian float32 bytes.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector

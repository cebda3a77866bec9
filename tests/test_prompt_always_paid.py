"""A prompt that reached the provider is paid for, whatever became of the answer.

When the upstream reports no usage (the client left, the upstream cut its stream, failed
after reading the request, or one of several calls failed), the record carries the
prompt's tokens as the gateway counts them (estimate_tokens, marked estimated) and the
completion tokens seen, and the cost follows at the model's prices. Calls that succeeded
keep the usage their upstream reported.

A request the upstream refused before its model ran (a 4xx answer) or that never reached
it (nothing listening) costs nothing: no model read the prompt.
"""

import asyncio
import json
import socket
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from apikeys.usage import cost_of
from completions.models import Model, Provider
from completions.providers.openai import OpenAIProvider
from gateway.asgi import application
from tests import fake_upstream
from tests.asgi_scope import chat_scope
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

# USD per million tokens: 0.001 USD a prompt token, 0.002 USD a completion token.
INPUT_PRICE = Decimal("1000")
OUTPUT_PRICE = Decimal("2000")
# A hostile client's prompt: 10,000 words.
LONG_PROMPT = " ".join(["lorem"] * 10_000)
# LONG_PROMPT as the gateway counts it (providers/estimates.py estimate_tokens): 59,999 ASCII
# characters at 4 a token.
LONG_PROMPT_TOKENS = 15_000
SHORT_PROMPT = "hello there world"
# Seconds to wait for the record of a request the client left.
RECORD_TIMEOUT = 5
BGE = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture
def priced(cloudflare, openai_upstream):
    """Every model of both fake providers priced, and the OpenAI ones the tests need."""
    for name in ["gpt-test-slow", "gpt-test-hang"]:
        Model.objects.create(name=name, provider=openai_upstream)
    Model.objects.create(
        name="text-embed-test", provider=openai_upstream, task=Model.TEXT_EMBEDDINGS
    )
    Model.objects.update(input_price=INPUT_PRICE, output_price=OUTPUT_PRICE)


async def _record():
    for _ in range(RECORD_TIMEOUT * 20):
        record = await UsageRecord.objects.afirst()
        if record is not None:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError("no usage record was written")


@sync_to_async
def _model(name):
    return Model.objects.get(name=name)


async def _assert_priced(record):
    """The record's cost is its tokens at its model's prices."""
    model = await _model(record.model)
    assert record.cost == cost_of(model, record.prompt_tokens, record.completion_tokens)
    assert record.cost > 0


async def _leave(persona, body, leave_when=None, upstream=None, path="/v1/chat/completions"):
    """POST a request to the ASGI app as daphne would; the client goes away once
    `leave_when(events sent so far)` is true, or once `upstream` has as many requests as
    the body has prompts. Return the events it was sent."""
    encoded = json.dumps(body).encode()
    leaving = asyncio.Event()
    requested = False
    events = []

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": encoded, "more_body": False}
        if upstream is not None:
            calls = len(body["prompt"]) if "prompt" in body else 1
            while len(upstream.requests) < calls:
                await asyncio.sleep(0.05)
            leaving.set()
        await leaving.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            events.append(message["body"].decode())
        if leave_when is not None and leave_when(events):
            leaving.set()

    scope = {**chat_scope(persona.headers["Authorization"]), "path": path}
    scope["raw_path"] = path.encode()
    await asyncio.wait_for(application(scope, receive, send), RECORD_TIMEOUT)
    return events


def _first_token_sent(events):
    return any('"content":"' in event and '"content":""' not in event for event in events)


@pytest.mark.parametrize("model", ["@cf/test/drip", "gpt-test-slow"])
async def test_a_long_streamed_prompt_dropped_after_the_first_token_pays_for_its_prompt(
    alice, priced, model
):
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": LONG_PROMPT}]}

    await _leave(alice, body, _first_token_sent)

    record = await _record()
    assert record.status == UsageRecord.CLIENT_CLOSED
    assert record.prompt_tokens == LONG_PROMPT_TOKENS
    assert 1 <= record.completion_tokens <= 3
    assert record.tokens_estimated is True
    await _assert_priced(record)
    # The prompt is most of the cost: 15 USD, and a few thousandths for the answer.
    assert record.cost >= Decimal("15")


@pytest.mark.parametrize("model", ["@cf/test/hang", "gpt-test-hang"])
async def test_a_plain_request_the_client_abandons_while_waiting_pays_for_its_prompt(
    alice, priced, upstream, model
):
    body = {"model": model, "messages": [{"role": "user", "content": LONG_PROMPT}]}

    # The client leaves once the provider has the request, while it is still thinking.
    await _leave(alice, body, upstream=upstream)

    record = await _record()
    assert record.status == UsageRecord.CLIENT_CLOSED
    assert (record.prompt_tokens, record.completion_tokens) == (LONG_PROMPT_TOKENS, 0)
    assert record.tokens_estimated is True
    await _assert_priced(record)


async def _chat(api, persona, model, content=SHORT_PROMPT, **body):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": [{"role": "user", "content": content}], **body},
        content_type="application/json",
        headers=persona.headers,
    )


async def _read(response):
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


@pytest.mark.parametrize("model", ["@cf/test/cut-stream", "gpt-test-cut-stream"])
async def test_a_stream_the_upstream_cuts_pays_for_its_prompt(api, alice, priced, model):
    response = await _chat(api, alice, model, LONG_PROMPT, stream=True)
    body = await _read(response)

    assert '"code":"stream_cut"' in body
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.prompt_tokens == LONG_PROMPT_TOKENS
    assert record.completion_tokens >= 1
    assert record.tokens_estimated is True
    await _assert_priced(record)


@pytest.mark.parametrize("model", ["@cf/test/fail-500", "gpt-test-fail-500"])
async def test_an_upstream_that_fails_after_reading_the_prompt_is_paid_for(
    api, alice, priced, model
):
    response = await _chat(api, alice, model, LONG_PROMPT)

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert (record.prompt_tokens, record.completion_tokens) == (LONG_PROMPT_TOKENS, 0)
    assert record.tokens_estimated is True
    await _assert_priced(record)


async def test_an_upstream_that_times_out_after_reading_the_prompt_is_paid_for(
    api, alice, priced, settings
):
    settings.UPSTREAM_TIMEOUT = 0.5

    response = await _chat(api, alice, "@cf/test/hang", LONG_PROMPT)

    assert response.status_code == 504
    record = await _record()
    assert record.prompt_tokens == LONG_PROMPT_TOKENS
    await _assert_priced(record)


async def test_a_stream_that_fails_before_its_first_event_is_paid_for(api, alice, priced):
    response = await _chat(api, alice, "@cf/test/fail-500", LONG_PROMPT, stream=True)

    assert response.status_code == 502
    record = await _record()
    assert (record.stream, record.prompt_tokens) == (True, LONG_PROMPT_TOKENS)
    await _assert_priced(record)


async def test_a_prompt_hidden_in_tool_definitions_is_paid_for(api, alice, priced):
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "description": LONG_PROMPT, "parameters": {}},
        }
    ]

    response = await _chat(api, alice, "@cf/test/fail-500", tools=tools)

    assert response.status_code == 502
    record = await _record()
    assert record.prompt_tokens > LONG_PROMPT_TOKENS
    await _assert_priced(record)


async def test_a_prompt_hidden_in_a_completions_suffix_is_paid_for(api, alice, priced):
    response = await api.post(
        "/v1/completions",
        data={"model": "gpt-test-fail-500", "prompt": "def f():", "suffix": LONG_PROMPT},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    record = await _record()
    assert record.prompt_tokens > LONG_PROMPT_TOKENS
    await _assert_priced(record)


@pytest.mark.parametrize("model", ["@cf/test/bad-request", "@cf/test/rate-limited"])
async def test_a_request_the_upstream_refused_before_its_model_ran_costs_nothing(
    api, alice, priced, model
):
    response = await _chat(api, alice, model, LONG_PROMPT)

    assert response.status_code in (400, 503)
    record = await _record()
    assert (record.prompt_tokens, record.completion_tokens, record.cost) == (0, 0, 0)


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_request_that_never_reached_the_upstream_costs_nothing(
    api, alice, priced, cloudflare
):
    await Provider.objects.filter(pk=cloudflare.pk).aupdate(
        base_url=f"http://127.0.0.1:{_closed_port()}/client/v4"
    )

    response = await _chat(api, alice, LLAMA, LONG_PROMPT)

    assert response.status_code == 502
    record = await _record()
    assert (record.prompt_tokens, record.cost) == (0, 0)


async def test_a_responses_stream_the_upstream_cuts_pays_for_its_prompt(api, alice, priced):
    response = await api.post(
        "/v1/responses",
        data={"model": "@cf/test/cut-stream", "input": LONG_PROMPT, "stream": True},
        content_type="application/json",
        headers=alice.headers,
    )
    await _read(response)

    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.prompt_tokens == LONG_PROMPT_TOKENS
    await _assert_priced(record)


async def test_a_response_that_fails_after_reading_the_prompt_is_paid_for(api, alice, priced):
    response = await api.post(
        "/v1/responses",
        data={"model": "@cf/test/fail-500", "input": LONG_PROMPT},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    record = await _record()
    assert record.prompt_tokens == LONG_PROMPT_TOKENS
    await _assert_priced(record)


@pytest.mark.parametrize("model", [LLAMA, "gpt-test-mini"])
async def test_a_failed_prompt_of_several_keeps_the_others_usage_and_pays_its_own(
    api, alice, priced, model
):
    # The fake counts words: the first two prompts are 3 and 2 tokens, their answers
    # ("Echo: ...") 4 and 3; the third fails once the others have answered, and is paid
    # for as the gateway counts it: 30 characters, 8 tokens.
    failing = f"some words then {fake_upstream.FAIL_LATER}"

    response = await api.post(
        "/v1/completions",
        data={"model": model, "prompt": ["one two three", "four five", failing]},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.prompt_tokens == 3 + 2 + 8
    assert record.completion_tokens == 4 + 3
    assert record.tokens_estimated is True
    await _assert_priced(record)


async def test_prompts_of_a_completion_the_client_abandons_while_waiting_are_paid_for(
    alice, priced, upstream
):
    prompts = [LONG_PROMPT, SHORT_PROMPT]
    body = {"model": "@cf/test/hang", "prompt": prompts}

    await _leave(alice, body, upstream=upstream, path="/v1/completions")

    record = await _record()
    assert record.status == UsageRecord.CLIENT_CLOSED
    # SHORT_PROMPT's 17 characters are 5 tokens.
    assert record.prompt_tokens == LONG_PROMPT_TOKENS + 5
    await _assert_priced(record)


async def test_a_failed_batch_of_embeddings_keeps_the_others_usage_and_pays_its_own(
    api, alice, priced, monkeypatch
):
    monkeypatch.setattr(OpenAIProvider, "embedding_batch_size", 2)
    # The fake counts a word a token: the first batch is 3 tokens; the second fails once
    # the first has answered, and is paid for as the gateway counts it: 18 and 20
    # characters, 5 tokens each.
    texts = ["alpha beta", "gamma", "delta epsilon zeta", f"omega {fake_upstream.FAIL_LATER}"]

    response = await api.post(
        "/v1/embeddings",
        data={"model": "text-embed-test", "input": texts},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    record = await _record()
    assert record.prompt_tokens == 3 + 5 + 5
    assert record.tokens_estimated is True
    await _assert_priced(record)


async def test_a_failed_batch_of_workers_ai_embeddings_pays_for_every_text(api, alice, priced):
    # Workers AI reports no tokens for embeddings: every batch is estimated. The second
    # of two batches (of 100 and 50) fails. Each text is 4 tokens (13 to 15 characters),
    # the failing one 8 (30 characters).
    texts = [f"text number {n}" for n in range(150)]
    texts[120] += f" {fake_upstream.FAIL_LATER}"

    response = await api.post(
        "/v1/embeddings",
        data={"model": BGE, "input": texts},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    record = await _record()
    assert record.prompt_tokens == 149 * 4 + 8
    await _assert_priced(record)


async def test_embeddings_refused_for_their_dimensions_after_the_upstream_ran_are_paid_for(
    api, alice, priced, cloudflare
):
    await Model.objects.acreate(
        name="@cf/google/embeddinggemma-300m",
        provider=cloudflare,
        task=Model.TEXT_EMBEDDINGS,
        shortens_embeddings=True,
        input_price=INPUT_PRICE,
    )

    response = await api.post(
        "/v1/embeddings",
        data={"model": "@cf/google/embeddinggemma-300m", "input": LONG_PROMPT, "dimensions": 4096},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 400
    record = await _record()
    assert record.prompt_tokens == LONG_PROMPT_TOKENS
    await _assert_priced(record)

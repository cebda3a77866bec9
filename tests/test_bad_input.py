"""Malformed, oversized and hostile bodies: each refused with a 4xx in OpenAI's format.

tests/test_errors.py covers each field's types and ranges; these are the limits and the
inputs that would otherwise reach the gateway's internals (the JSON parser, the encoder of
the upstream's body, the size of what is read at all).
"""

import asyncio
import json

import pytest
from django.test import override_settings

from completions.serializers import MAX_MESSAGE_CHARACTERS, MAX_MESSAGES, MAX_STOP_CHARACTERS
from gateway.asgi import application
from tests.asgi_scope import chat_scope
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

USER = {"role": "user", "content": "hello there"}
VALID = {"model": LLAMA, "messages": [USER]}
# The smallest MAX_REQUEST_BYTES the settings accept.
SMALL_LIMIT = 1024


async def _post(api, persona, data, content_type="application/json", path="/v1/chat/completions"):
    return await api.post(path, data=data, content_type=content_type, headers=persona.headers)


def _error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def _asgi_post(body_chunks, persona, uploaded_at_once, extra_headers=()):
    """Post to the ASGI application as a server would, one body message per chunk.

    Only the first `uploaded_at_once` chunks are there at once; the rest come once the
    answer has started, as from a client still uploading. Returns (status, JSON body,
    number of chunks read before the answer started).
    """
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(body_chunks) - 1}
        for index, chunk in enumerate(body_chunks)
    ]
    read = 0
    sent = []
    read_before_answer = None
    answered = asyncio.Event()

    async def receive():
        nonlocal read
        if read >= uploaded_at_once:
            await answered.wait()
        if read < len(messages):
            read += 1
            return messages[read - 1]
        # The client stays until it has its answer.
        await asyncio.Event().wait()

    async def send(message):
        nonlocal read_before_answer
        if message["type"] == "http.response.start":
            read_before_answer = read
            answered.set()
        sent.append(message)

    scope = chat_scope(persona.headers["Authorization"], *extra_headers)
    # Seconds: an application that waits for the whole body never answers.
    await asyncio.wait_for(application(scope, receive, send), 10)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read_before_answer


async def test_it_refuses_a_chunked_body_over_the_limit_without_reading_it_all(
    alice, cloudflare, upstream
):
    # A chunked upload says nothing of its size: Django alone would read all of it.
    chunks = [b'{"model": "x", "messages": [{"role": "user", "content": "'] + [b"x" * 512] * 40

    with override_settings(MAX_REQUEST_BYTES=SMALL_LIMIT, DATA_UPLOAD_MAX_MEMORY_SIZE=SMALL_LIMIT):
        status, body, read = await _asgi_post(chunks, alice, uploaded_at_once=3)

    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    # 1024 bytes are passed in the third chunk; the answer does not wait for the rest.
    assert read == 3
    assert upstream.requests == []


async def test_it_refuses_a_declared_body_over_the_limit_before_reading_it(
    alice, cloudflare, upstream
):
    chunks = [b"x" * 512] * 40
    declared = [(b"content-length", str(512 * 40).encode())]

    with override_settings(MAX_REQUEST_BYTES=SMALL_LIMIT, DATA_UPLOAD_MAX_MEMORY_SIZE=SMALL_LIMIT):
        status, body, read = await _asgi_post(
            chunks, alice, uploaded_at_once=0, extra_headers=declared
        )

    assert status == 413
    assert body["error"]["type"] == "invalid_request_error"
    assert read == 0


async def test_it_reads_a_chunked_body_under_the_limit_whole(alice, cloudflare, upstream):
    raw = json.dumps(VALID).encode()
    chunks = [raw[i : i + 10] for i in range(0, len(raw), 10)]

    with override_settings(MAX_REQUEST_BYTES=SMALL_LIMIT, DATA_UPLOAD_MAX_MEMORY_SIZE=SMALL_LIMIT):
        status, body, read = await _asgi_post(chunks, alice, uploaded_at_once=len(chunks))

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "Echo: hello there"
    assert read == len(chunks)


async def test_it_refuses_more_messages_than_the_limit(api, alice, cloudflare, upstream):
    body = {**VALID, "messages": [USER] * (MAX_MESSAGES + 1)}

    error = _error(await _post(api, alice, body), 400)

    assert error["param"] == "messages"
    assert str(MAX_MESSAGES) in error["message"]
    assert upstream.requests == []


async def test_it_accepts_as_many_messages_as_the_limit(api, alice, cloudflare):
    body = {**VALID, "messages": [USER] * MAX_MESSAGES}

    response = await _post(api, alice, body)

    assert response.status_code == 200


async def test_it_refuses_a_message_longer_than_the_limit(api, alice, cloudflare, upstream):
    long = {"role": "user", "content": "x" * (MAX_MESSAGE_CHARACTERS + 1)}

    error = _error(await _post(api, alice, {**VALID, "messages": [USER, long]}), 400)

    assert error["param"] == "messages[1].content"
    assert "Too long" in error["message"]
    assert upstream.requests == []


async def test_it_counts_a_messages_text_parts_together(api, alice, cloudflare, upstream):
    half = {"type": "text", "text": "x" * (MAX_MESSAGE_CHARACTERS // 2 + 1)}
    message = {"role": "user", "content": [half, half]}

    error = _error(await _post(api, alice, {**VALID, "messages": [message]}), 400)

    assert error["param"] == "messages[0].content"


async def test_it_refuses_a_stop_sequence_longer_than_the_limit(api, alice, cloudflare, upstream):
    body = {**VALID, "stop": ["ok", "y" * (MAX_STOP_CHARACTERS + 1)]}

    error = _error(await _post(api, alice, body), 400)

    assert error["param"] == "stop"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_it_refuses_a_body_that_is_not_sent_as_json(api, alice, cloudflare, content_type):
    response = await _post(api, alice, json.dumps(VALID), content_type=content_type)

    error = _error(response, 400)
    assert error["code"] == "unsupported_content_type"


async def test_it_takes_json_with_a_charset(api, alice, cloudflare):
    response = await _post(
        api, alice, json.dumps(VALID), content_type="application/json; charset=utf-8"
    )

    assert response.status_code == 200


async def test_it_ignores_unknown_fields_and_does_not_pass_them_on(
    api, alice, cloudflare, upstream
):
    body = {**VALID, "frobnicate": {"deep": [1, 2]}, "metadata": {"team": "a"}, "store": True}

    response = await _post(api, alice, body)

    assert response.status_code == 200
    sent = upstream.requests[-1]["json"]
    assert not {"frobnicate", "metadata", "store"} & set(sent)


async def test_it_refuses_json_nested_deeper_than_the_parser_goes(api, alice, cloudflare):
    # Deep enough to exhaust Python's recursion limit in json.loads.
    body = '{"model": "x", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"

    error = _error(await _post(api, alice, body), 400)

    assert error["code"] == "invalid_json"


async def test_it_refuses_a_body_that_is_not_utf8(api, alice, cloudflare):
    body = b'{"model": "x", "messages": [{"role": "user", "content": "\xff\xfe"}]}'

    error = _error(await _post(api, alice, body), 400)

    assert error["code"] == "invalid_json"


async def test_it_refuses_text_with_a_lone_surrogate_instead_of_failing(
    api, alice, cloudflare, upstream
):
    # Valid JSON, but no valid Unicode: no UTF-8 encoder can send it on.
    body = json.dumps({**VALID, "messages": [{"role": "user", "content": "a LONE"}]})
    body = body.replace("LONE", "\\ud800")

    error = _error(await _post(api, alice, body), 400)

    assert error["code"] == "invalid_text"
    assert upstream.requests == []


async def test_it_streams_a_refusal_of_a_lone_surrogate_as_an_http_error(
    api, alice, cloudflare, upstream
):
    body = json.dumps({**VALID, "stream": True, "messages": [{"role": "user", "content": "LONE"}]})
    body = body.replace("LONE", "\\udfff")

    response = await _post(api, alice, body)

    assert response.status_code == 400
    assert not response.streaming


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": LLAMA, "prompt": 5}, "prompt"),
        ("/v1/completions", {"model": LLAMA, "prompt": "hi", "max_tokens": "16"}, "max_tokens"),
        ("/v1/completions", {"model": LLAMA}, "prompt"),
        ("/v1/embeddings", {"model": LLAMA, "input": {"text": "hi"}}, "input"),
        ("/v1/embeddings", {"model": LLAMA, "input": []}, "input"),
        (
            "/v1/embeddings",
            {"model": LLAMA, "input": "hi", "encoding_format": "hex"},
            "encoding_format",
        ),
    ],
)
async def test_the_other_endpoints_refuse_wrong_types_naming_the_parameter(
    api, alice, cloudflare, upstream, path, body, param
):
    error = _error(await _post(api, alice, body, path=path), 400)

    assert error["param"] == param
    assert upstream.requests == []

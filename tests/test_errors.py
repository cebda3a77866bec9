"""Requests the gateway refuses itself, each answered with OpenAI's error object."""

import json

import pytest
from django.test import override_settings

from tests.client import AsyncClient
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

USER = {"role": "user", "content": "hello"}
VALID = {"model": LLAMA, "messages": [USER]}


async def _post(api, persona, data, content_type="application/json"):
    return await api.post(
        "/v1/chat/completions", data=data, content_type=content_type, headers=persona.headers
    )


def _assert_openai_error(response, status):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        # OpenAI refuses numbers sent as strings; so does the gateway.
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"seed": "42"}, "seed"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"n": 2}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 7}, "stop"),
        ({"user": 12}, "user"),
        ({"model": 12}, "model"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [USER, {"role": "user"}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content",
        ),
    ],
)
async def test_it_refuses_an_invalid_field_naming_it(
    api, alice, cloudflare, upstream, change, param
):
    response = await _post(api, alice, {**VALID, **change})

    error = _assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split(".")[-1].split("[")[0] in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("missing", ["model", "messages"])
async def test_it_refuses_a_body_without_a_required_field(api, alice, cloudflare, missing):
    body = {k: v for k, v in VALID.items() if k != missing}

    response = await _post(api, alice, body)

    error = _assert_openai_error(response, 400)
    assert error["param"] == missing
    assert "required" in error["message"]


async def test_it_refuses_image_content_parts(api, alice, cloudflare):
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {**VALID, "messages": [{"role": "user", "content": [image]}]}

    response = await _post(api, alice, body)

    error = _assert_openai_error(response, 400)
    assert error["param"] == "messages[0].content"
    assert "image_url" in error["message"]


async def test_it_shows_the_expected_shape_of_a_bad_content_part(api, alice, cloudflare):
    body = {**VALID, "messages": [{"role": "user", "content": ["hello"]}]}

    response = await _post(api, alice, body)

    error = _assert_openai_error(response, 400)
    assert error["param"] == "messages[0].content"
    assert '{"type": "text", "text": "..."}' in error["message"]


async def test_it_accepts_an_assistant_message_that_only_calls_tools(api, alice, cloudflare):
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        USER,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "user", "content": "ok"},
    ]

    response = await _post(api, alice, {**VALID, "messages": messages})

    assert response.status_code == 200


async def test_it_refuses_malformed_json(api, alice, cloudflare):
    response = await _post(api, alice, '{"model": "x", "messages": [')

    error = _assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_it_refuses_numbers_that_json_does_not_have(
    api, alice, cloudflare, upstream, constant
):
    # Python's parser takes them; passed on, they would make the upstream's body invalid too.
    body = json.dumps(VALID)[:-1] + f', "temperature": {constant}}}'

    response = await _post(api, alice, body)

    error = _assert_openai_error(response, 400)
    assert error["param"] == "temperature"
    assert upstream.requests == []


@pytest.mark.parametrize("body", [[VALID], "hello", 42, None])
async def test_it_refuses_a_body_that_is_not_an_object(api, alice, cloudflare, body):
    response = await _post(api, alice, json.dumps(body))

    error = _assert_openai_error(response, 400)
    assert "JSON object" in error["message"]


async def test_it_refuses_a_body_that_is_not_json(api, alice, cloudflare):
    response = await _post(api, alice, "model=x", content_type="application/x-www-form-urlencoded")

    error = _assert_openai_error(response, 400)
    assert error["code"] == "unsupported_content_type"


async def test_it_refuses_a_body_over_the_size_limit(api, alice, cloudflare, upstream):
    # 1024 bytes is the smallest MAX_REQUEST_BYTES the settings accept.
    body = {**VALID, "messages": [{"role": "user", "content": "x" * 2000}]}

    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024, MAX_REQUEST_BYTES=1024):
        response = await _post(api, alice, body)

    error = _assert_openai_error(response, 413)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"
    assert "1024" in error["message"]
    assert upstream.requests == []


async def test_it_accepts_a_body_under_the_size_limit(api, alice, cloudflare):
    body = {**VALID, "messages": [{"role": "user", "content": "x" * 500}]}

    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024, MAX_REQUEST_BYTES=1024):
        response = await _post(api, alice, body)

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/models/", "/nothing", "/v2/chat/completions"])
async def test_it_answers_an_unknown_path_with_a_json_404(api, alice, path):
    response = await api.get(path, headers=alice.headers)

    error = _assert_openai_error(response, 404)
    assert error["type"] == "invalid_request_error"
    assert path in error["message"]


async def test_it_answers_a_post_to_an_unknown_path_with_a_json_404(api, alice):
    response = await api.post(
        "/v1/completion", data=VALID, content_type="application/json", headers=alice.headers
    )

    _assert_openai_error(response, 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/v1/chat/completions", "POST"),
        ("put", "/v1/chat/completions", "POST"),
        ("post", "/v1/models", "GET"),
        ("delete", f"/v1/models/{LLAMA}", "GET"),
    ],
)
async def test_it_answers_a_wrong_method_with_405_and_allow(api, alice, method, path, allowed):
    response = await getattr(api, method)(path, headers=alice.headers)

    error = _assert_openai_error(response, 405)
    assert response["Allow"] == allowed
    assert error["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/healthz", 200),
        ("get", "/v1/models", 200),
        ("get", "/v1/models", 401),
        ("get", "/v1/nothing", 404),
        ("get", "/v1/models/@cf/nobody/nothing", 404),
        ("get", "/v1/chat/completions", 405),
        ("post", "/v1/chat/completions", 400),
        ("post", "/v1/chat/completions", 200),
    ],
)
async def test_it_gives_every_response_a_request_id(api, alice, cloudflare, method, path, status):
    headers = {} if status == 401 else alice.headers
    data = VALID if status == 200 else {"model": LLAMA}
    kwargs = {"data": data, "content_type": "application/json"} if method == "post" else {}

    response = await getattr(api, method)(path, headers=headers, **kwargs)

    assert response.status_code == status
    assert response["x-request-id"].startswith("req_")


async def test_it_gives_each_request_its_own_id(api, alice):
    first = await api.get("/v1/models", headers=alice.headers)
    second = await api.get("/v1/models", headers=alice.headers)

    assert first["x-request-id"] != second["x-request-id"]


async def test_it_answers_an_unexpected_failure_with_a_json_500(alice, cloudflare, monkeypatch):
    async def fail(name, key):
        raise RuntimeError("internal detail /srv/gateway")

    monkeypatch.setattr("completions.views.resolve_model", fail)
    api = AsyncClient(raise_request_exception=False)

    response = await _post(api, alice, VALID)

    error = _assert_openai_error(response, 500)
    assert error["type"] == "server_error"
    assert "internal detail" not in response.content.decode()
    assert response["x-request-id"].startswith("req_")

"""Checks that the fake upstream speaks the formats the gateway tests rely on."""

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_upstream import (
    CLOUDFLARE_ACCOUNT,
    CLOUDFLARE_TOKEN,
    OPENAI_KEY,
    FakeUpstream,
)

CLOUDFLARE_HEADERS = {"Authorization": f"Bearer {CLOUDFLARE_TOKEN}"}
OPENAI_HEADERS = {"Authorization": f"Bearer {OPENAI_KEY}"}
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]


@pytest.fixture(scope="module")
def running_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream().start() as upstream:
        yield upstream


@pytest.fixture
def upstream(running_upstream: FakeUpstream) -> FakeUpstream:
    running_upstream.reset()
    return running_upstream


def run_url(upstream: FakeUpstream, model: str) -> str:
    return f"{upstream.cloudflare_base_url}/accounts/{CLOUDFLARE_ACCOUNT}/ai/run/{model}"


def sse_data(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.split("\n\n") if line]


def test_cloudflare_non_stream_answer_and_usage(upstream: FakeUpstream) -> None:
    response = httpx.post(
        run_url(upstream, "@cf/meta/llama-3.1-8b-instruct"),
        json={"messages": MESSAGES},
        headers=CLOUDFLARE_HEADERS,
    )

    assert response.status_code == 200
    assert response.json() == {
        "result": {
            "response": "Echo: hello there world",
            # Prompt: "Be brief." (2) + "hello there world" (3); answer: 4 words.
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        },
        "success": True,
        "errors": [],
        "messages": [],
    }
    recorded = upstream.requests[-1]
    assert recorded["method"] == "POST"
    assert recorded["path"].endswith("/ai/run/@cf/meta/llama-3.1-8b-instruct")
    assert recorded["headers"]["authorization"] == f"Bearer {CLOUDFLARE_TOKEN}"
    assert recorded["json"] == {"messages": MESSAGES}


def test_cloudflare_max_tokens_truncates_answer(upstream: FakeUpstream) -> None:
    response = httpx.post(
        run_url(upstream, "@cf/meta/llama-3.1-8b-instruct"),
        json={"messages": MESSAGES, "max_tokens": 2},
        headers=CLOUDFLARE_HEADERS,
    )

    result = response.json()["result"]
    assert result["response"] == "Echo: hello"
    assert result["usage"]["completion_tokens"] == 2


def test_cloudflare_stream_ends_with_usage_then_done(upstream: FakeUpstream) -> None:
    response = httpx.post(
        run_url(upstream, "@cf/meta/llama-3.1-8b-instruct"),
        json={"messages": MESSAGES, "stream": True},
        headers=CLOUDFLARE_HEADERS,
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_data(response.text)
    assert events[-1] == "[DONE]"
    words = [json.loads(event) for event in events[:-2]]
    assert "".join(word["response"] for word in words) == "Echo: hello there world"
    assert [word["response"] for word in words] == ["Echo:", " hello", " there", " world"]
    assert json.loads(events[-2]) == {
        "response": "",
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }


def test_fail_500_returns_error_envelope_with_secrets(upstream: FakeUpstream) -> None:
    response = httpx.post(
        run_url(upstream, "@cf/test/fail-500"),
        json={"messages": MESSAGES},
        headers=CLOUDFLARE_HEADERS,
    )

    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    message = body["errors"][0]["message"]
    assert CLOUDFLARE_TOKEN in message
    assert CLOUDFLARE_ACCOUNT in message
    assert upstream.cloudflare_base_url in message


def test_wrong_token_gets_401(upstream: FakeUpstream) -> None:
    cloudflare = httpx.post(
        run_url(upstream, "@cf/meta/llama-3.1-8b-instruct"),
        json={"messages": MESSAGES},
        headers={"Authorization": "Bearer wrong"},
    )
    openai = httpx.get(f"{upstream.openai_base_url}/models")

    assert cloudflare.status_code == 401
    assert cloudflare.json()["success"] is False
    assert openai.status_code == 401
    assert openai.json()["error"]["code"] == "invalid_api_key"


def test_cut_stream_breaks_the_body(upstream: FakeUpstream) -> None:
    received = []
    body = {"messages": [{"role": "user", "content": "one two three four"}], "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", run_url(upstream, "@cf/test/cut-stream"), json=body, headers=CLOUDFLARE_HEADERS
        ) as response,
    ):
        for line in response.iter_lines():
            if line:
                received.append(line)

    assert len(received) == 3


def test_drip_notices_client_disconnect(upstream: FakeUpstream) -> None:
    with httpx.stream(
        "POST",
        run_url(upstream, "@cf/test/drip"),
        json={"messages": MESSAGES, "stream": True},
        headers=CLOUDFLARE_HEADERS,
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert upstream.open_streams == 1

    assert upstream.drip_closed.wait(timeout=2)
    assert upstream.open_streams == 0


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_stream_includes_usage_only_when_asked(
    upstream: FakeUpstream, include_usage: bool
) -> None:
    body = {"model": "gpt-test-mini", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}

    response = httpx.post(
        f"{upstream.openai_base_url}/chat/completions", json=body, headers=OPENAI_HEADERS
    )

    events = sse_data(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(
        choice["delta"].get("content", "") for chunk in chunks for choice in chunk["choices"]
    )
    assert content == "Echo: hello there world"
    usage_chunks = [chunk for chunk in chunks if chunk.get("usage")]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 5,
            "completion_tokens": 4,
            "total_tokens": 9,
        }
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    else:
        assert usage_chunks == []
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

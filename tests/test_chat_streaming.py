"""POST /v1/chat/completions with stream true: OpenAI's chat.completion.chunk events."""

import json

import pytest

from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
ANSWER = "Echo: hello there world"
USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 4,
    "total_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 0},
}


async def _stream(api, persona, **body):
    body.setdefault("messages", MESSAGES)
    body["stream"] = True
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=persona.headers
    )


async def _events(response):
    """Return the data of every event of a streamed response, in order, as strings."""
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert raw.endswith("\n\n")
    return [event.removeprefix("data: ") for event in raw.split("\n\n") if event]


def _chunks(events):
    return [json.loads(event) for event in events if event != "[DONE]"]


def _content(chunks):
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


async def test_it_streams_server_sent_events(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    events = await _events(response)
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1


async def test_it_opens_with_the_assistant_role(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA)

    first = _chunks(await _events(response))[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == LLAMA
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None


async def test_it_streams_content_that_adds_up_to_the_answer(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA)

    chunks = _chunks(await _events(response))
    assert _content(chunks) == ANSWER
    # One event per upstream word, not the answer in one piece.
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 4


async def test_it_gives_every_chunk_the_same_id_and_model(api, alice, cloudflare):
    response = await _stream(api, alice, model="gpt-4o-mini")

    chunks = _chunks(await _events(response))
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"gpt-4o-mini"}


async def test_it_ends_with_a_finish_reason(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA)

    chunks = _chunks(await _events(response))
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert all(reason is None for reason in finishes[:-1])
    assert chunks[-1]["choices"][0]["delta"] == {}


async def test_it_reports_length_when_max_tokens_cuts_the_stream(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA, max_tokens=2)

    chunks = _chunks(await _events(response))
    assert _content(chunks) == "Echo: hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_it_sends_no_usage_unless_asked(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA)

    chunks = _chunks(await _events(response))
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_it_sends_usage_last_when_asked(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA, stream_options={"include_usage": True})

    events = await _events(response)
    assert events[-1] == "[DONE]"
    chunks = _chunks(events)
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == USAGE
    # As OpenAI does: "usage": null on every other chunk.
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_it_sends_no_usage_when_include_usage_is_false(api, alice, cloudflare):
    response = await _stream(api, alice, model=LLAMA, stream_options={"include_usage": False})

    chunks = _chunks(await _events(response))
    assert all(c["choices"] for c in chunks)


async def test_it_holds_back_a_stop_sequence_split_across_events(api, alice, cloudflare):
    # The upstream streams "Echo:", " hello", " there", " world"; "lo th" spans two events.
    response = await _stream(api, alice, model=LLAMA, stop="lo th")

    chunks = _chunks(await _events(response))
    assert _content(chunks) == "Echo: hel"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_it_streams_through_an_openai_compatible_provider(
    api, alice, openai_upstream, upstream
):
    response = await _stream(
        api, alice, model="gpt-test-mini", stream_options={"include_usage": True}
    )

    chunks = _chunks(await _events(response))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert _content(chunks) == ANSWER
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == USAGE
    [sent] = [r for r in upstream.requests if r["path"] == "/openai/v1/chat/completions"]
    assert sent["json"]["stream"] is True


async def test_it_streams_the_echo_model_word_by_word(api, alice, no_echo_delay):
    response = await _stream(api, alice, model="echo", stream_options={"include_usage": True})

    chunks = _chunks(await _events(response))
    assert _content(chunks) == "hello there world"
    assert chunks[-1]["usage"] == {**USAGE, "completion_tokens": 3, "total_tokens": 8}

"""POST /v1/completions, OpenAI's legacy text completions, on Workers AI and passed through."""

import json

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)


async def _complete(api, persona, **body):
    body.setdefault("model", LLAMA)
    return await api.post(
        "/v1/completions", data=body, content_type="application/json", headers=persona.headers
    )


async def _events(response):
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    data = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


def _run_requests(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_answers_with_a_text_completion(api, alice, cloudflare):
    response = await _complete(api, alice, prompt="Say this is a test")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == LLAMA
    assert body["choices"] == [
        {"text": "Echo: Say this is a test", "index": 0, "logprobs": None, "finish_reason": "stop"}
    ]
    # The fake counts words: 5 in the prompt, 6 in the answer.
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 6,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_it_sends_workers_ai_the_prompt_with_openais_default_of_16_tokens(
    api, alice, cloudflare, upstream
):
    await _complete(api, alice, prompt="Say this", temperature=0.5, top_k=40, user="u-1")

    [sent] = _run_requests(upstream)
    assert sent["json"] == {
        "prompt": "Say this",
        "stream": False,
        "max_tokens": 16,
        "temperature": 0.5,
        "top_k": 40,
    }


async def test_it_answers_each_prompt_of_a_list_in_order(api, alice, cloudflare, upstream):
    response = await _complete(api, alice, prompt=["one", "two words", "three more words"])

    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert [c["text"] for c in choices] == [
        "Echo: one",
        "Echo: two words",
        "Echo: three more words",
    ]
    assert len(_run_requests(upstream)) == 3
    # Usage of the three calls, summed: prompts 1 + 2 + 3 words, answers 2 + 3 + 4.
    assert response.json()["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 9,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    [record] = await _records()
    assert (record.endpoint, record.total_tokens) == ("/v1/completions", 15)


async def test_it_puts_the_prompt_before_the_text_with_echo(api, alice, cloudflare):
    response = await _complete(api, alice, prompt="Hello there", echo=True)

    assert response.json()["choices"][0]["text"] == "Hello thereEcho: Hello there"


async def test_it_reports_length_when_max_tokens_cuts_the_text(api, alice, cloudflare):
    response = await _complete(api, alice, prompt="one two three four", max_tokens=2)

    [choice] = response.json()["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("Echo: one", "length")


async def test_it_cuts_the_text_at_a_stop_sequence(api, alice, cloudflare):
    response = await _complete(api, alice, prompt="one two three", stop="two")

    [choice] = response.json()["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("Echo: one ", "stop")


async def test_it_streams_text_completion_chunks(api, alice, cloudflare):
    response = await _complete(
        api, alice, prompt="one two", stream=True, stream_options={"include_usage": True}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = await _events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Echo: one two"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    [record] = await _records()
    assert record.stream and record.endpoint == "/v1/completions"
    assert record.total_tokens == 5


async def test_it_streams_the_prompt_first_with_echo(api, alice, cloudflare):
    response = await _complete(api, alice, prompt="one two", stream=True, echo=True)

    chunks = (await _events(response))[:-1]
    assert chunks[0]["choices"][0]["text"] == "one two"
    assert "".join(c["choices"][0]["text"] for c in chunks) == "one twoEcho: one two"


async def test_it_refuses_to_stream_several_prompts(api, alice, cloudflare, upstream):
    response = await _complete(api, alice, prompt=["one", "two"], stream=True)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2], [3]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a"] * 17}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"n": 2}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 5}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"echo": "yes"}, "echo"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
async def test_it_refuses_what_it_cannot_honour_naming_the_parameter(
    api, alice, cloudflare, upstream, change, param
):
    response = await _complete(api, alice, **{"prompt": "hi", **change})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.requests == []


async def test_it_says_token_arrays_are_not_supported(api, alice, cloudflare):
    response = await _complete(api, alice, prompt=[1, 2, 3])

    assert "token ids" in response.json()["error"]["message"]


async def test_it_refuses_a_suffix_workers_ai_cannot_insert_before(
    api, alice, cloudflare, upstream
):
    response = await _complete(api, alice, prompt="def add(a, b):", suffix="return c")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "suffix"
    assert LLAMA in error["message"]
    assert upstream.requests == []


async def test_it_passes_suffix_and_stop_to_an_openai_compatible_server(
    api, alice, openai_upstream, upstream
):
    response = await _complete(
        api, alice, model="gpt-test-mini", prompt="one two three", suffix="end", stop=["three"]
    )

    assert response.status_code == 200
    [sent] = [r for r in upstream.requests if r["path"].endswith("/completions")]
    assert sent["path"] == "/openai/v1/completions"
    assert sent["json"]["suffix"] == "end"
    assert sent["json"]["stop"] == ["three"]
    assert sent["json"]["prompt"] == "one two three"
    assert response.json()["choices"][0]["text"] == "Echo: one two"


async def test_it_asks_an_openai_compatible_server_for_usage_when_streaming(
    api, alice, openai_upstream, upstream
):
    response = await _complete(api, alice, model="gpt-test-mini", prompt="one", stream=True)

    events = await _events(response)
    [sent] = [r for r in upstream.requests if r["path"].endswith("/completions")]
    assert sent["json"]["stream_options"] == {"include_usage": True}
    # The client did not ask for usage: it gets none, and the record has it all the same.
    assert all("usage" not in chunk for chunk in events[:-1])
    [record] = await _records()
    assert (record.prompt_tokens, record.completion_tokens) == (1, 2)


async def test_it_refuses_an_embedding_model_naming_it(api, alice, cloudflare, upstream):
    response = await _complete(api, alice, model="@cf/baai/bge-small-en-v1.5", prompt="hi")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model"
    assert "@cf/baai/bge-small-en-v1.5" in error["message"]
    assert "completions" in error["message"]
    assert upstream.requests == []


async def test_it_fails_the_whole_list_when_one_prompt_fails(api, alice, cloudflare):
    response = await _complete(api, alice, model="@cf/test/fail-500", prompt=["one", "two"])

    assert response.status_code == 502
    [record] = await _records()
    assert record.status == UsageRecord.UPSTREAM_ERROR


async def test_it_requires_a_read_write_key(api, bob, cloudflare, upstream):
    response = await _complete(api, bob, prompt="hi")

    assert response.status_code == 403
    assert upstream.requests == []

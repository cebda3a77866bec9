"""Chat parameters beyond the basics: mapped, passed through, ignored or refused, as documented."""

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

USER = {"role": "user", "content": "hello there world"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}


async def _chat(api, persona, **body):
    body.setdefault("model", LLAMA)
    body.setdefault("messages", [USER])
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=persona.headers
    )


def _sent(upstream, marker="/ai/run/"):
    [sent] = [r for r in upstream.requests if marker in r["path"]]
    return sent["json"]


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_sends_top_k_to_workers_ai_and_keeps_user_to_itself(
    api, alice, cloudflare, upstream
):
    await _chat(api, alice, top_k=20, user="user-1", parallel_tool_calls=True, logit_bias={})

    sent = _sent(upstream)
    assert sent["top_k"] == 20
    assert {"user", "parallel_tool_calls", "logit_bias"}.isdisjoint(sent)


async def test_it_passes_parameters_to_an_openai_compatible_server(
    api, alice, openai_upstream, upstream
):
    await _chat(
        api,
        alice,
        model="gpt-test-mini",
        user="user-1",
        seed=3,
        top_k=5,
        stop=["x"],
        stream=True,
    )

    sent = _sent(upstream, "/chat/completions")
    assert (sent["user"], sent["seed"], sent["top_k"], sent["stop"]) == ("user-1", 3, 5, ["x"])
    # Usage is always asked for, so that the stream can be accounted for.
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"n": 2}, "n", "separate requests"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"top_logprobs": 3}, "top_logprobs", "not supported"),
        ({"logit_bias": {"123": 5}}, "logit_bias", "Not supported"),
        ({"top_k": 0}, "top_k", "greater than or equal to 1"),
    ],
)
async def test_it_refuses_what_it_cannot_honour_saying_why(
    api, alice, cloudflare, upstream, change, param, words
):
    response = await _chat(api, alice, **change)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]
    assert upstream.requests == []


async def test_it_sends_images_to_a_workers_ai_model_that_takes_them(
    api, alice, cloudflare, upstream
):
    # llama-4-scout takes image_url parts whose url is a data: URI (its schema).
    scout = "@cf/meta/llama-4-scout-17b-16e-instruct"
    await Model.objects.acreate(name=scout, provider=cloudflare, accepts_images=True)
    content = [{"type": "text", "text": "what is this?"}, IMAGE]

    response = await _chat(api, alice, model=scout, messages=[{"role": "user", "content": content}])

    assert response.status_code == 200
    assert _sent(upstream)["messages"] == [{"role": "user", "content": content}]


async def test_it_sends_images_to_an_openai_compatible_model_that_takes_them(
    api, alice, openai_upstream, upstream
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(accepts_images=True)
    messages = [{"role": "user", "content": [IMAGE]}]

    response = await _chat(api, alice, model="gpt-test-mini", messages=messages)

    assert response.status_code == 200
    assert _sent(upstream, "/chat/completions")["messages"] == messages


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": "https://example.com/cat.png"},
        {"type": "image_url"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
async def test_it_refuses_a_malformed_or_unknown_part_even_for_a_model_with_images(
    api, alice, cloudflare, upstream, part
):
    await Model.objects.filter(name=LLAMA).aupdate(accepts_images=True)

    response = await _chat(api, alice, messages=[{"role": "user", "content": [part]}])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content"
    assert upstream.requests == []


async def test_it_estimates_usage_an_upstream_does_not_report_and_marks_it(api, alice, cloudflare):
    await Model.objects.acreate(name="@cf/test/no-usage", provider=cloudflare)

    response = await _chat(api, alice, model="@cf/test/no-usage")

    # "hello there world" is 17 characters, "Echo: hello there world" 23: 5 and 6 tokens
    # at 4 characters a token.
    assert response.json()["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 6,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    [record] = await _records()
    assert record.tokens_estimated is True
    assert record.total_tokens == 11


async def test_it_estimates_the_usage_of_a_stream_without_usage(api, alice, cloudflare):
    await Model.objects.acreate(name="@cf/test/no-usage", provider=cloudflare)

    response = await _chat(
        api,
        alice,
        model="@cf/test/no-usage",
        stream=True,
        stream_options={"include_usage": True},
    )

    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert (
        '"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11,'
        '"prompt_tokens_details":{"cached_tokens":0}}'
    ) in raw
    [record] = await _records()
    assert record.tokens_estimated is True

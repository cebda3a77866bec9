"""Legacy completions, streamed and not: the same cases for every provider kind."""

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from tests.contract.conftest import post, stream_events

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_completes_a_prompt(api, alice, kind):
    response = await post(api, alice, "completions", model=kind.chat_model, prompt="one two three")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["model"] == kind.chat_model
    [choice] = body["choices"]
    assert choice["text"] == kind.answer("one two three")
    assert (choice["index"], choice["finish_reason"]) == (0, "stop")
    assert body["usage"] == kind.usage("one two three", "one two three")
    [record] = await _records()
    assert (record.endpoint, record.total_tokens) == (
        "/v1/completions",
        body["usage"]["total_tokens"],
    )


async def test_it_completes_each_prompt_of_a_list(api, alice, kind):
    response = await post(
        api, alice, "completions", model=kind.chat_model, prompt=["alpha", "beta gamma"]
    )

    choices = response.json()["choices"]
    assert [(c["index"], c["text"]) for c in choices] == [
        (0, kind.answer("alpha")),
        (1, kind.answer("beta gamma")),
    ]


async def test_it_cuts_at_max_tokens(api, alice, kind):
    response = await post(
        api, alice, "completions", model=kind.chat_model, prompt="one two three four", max_tokens=2
    )

    [choice] = response.json()["choices"]
    assert choice["text"] == " ".join(kind.answer("one two three four").split()[:2])
    assert choice["finish_reason"] == "length"


async def test_it_echoes_the_prompt_when_asked(api, alice, kind):
    response = await post(
        api, alice, "completions", model=kind.chat_model, prompt="one two", echo=True
    )

    assert response.json()["choices"][0]["text"] == "one two" + kind.answer("one two")


async def test_it_streams_a_completion(api, alice, kind):
    response, events = await stream_events(
        api,
        alice,
        "completions",
        model=kind.chat_model,
        prompt="one two three",
        stream_options={"include_usage": True},
    )

    assert response.status_code == 200
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == kind.answer(
        "one two three"
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == kind.usage("one two three", "one two three")
    [record] = await _records()
    assert record.stream and record.total_tokens == chunks[-1]["usage"]["total_tokens"]

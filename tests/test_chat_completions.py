"""POST /v1/chat/completions without streaming, through each kind of provider."""

import pytest

from tests import fake_upstream
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
# What the fake upstream answers to MESSAGES: "Echo: " and the last user message.
ANSWER = "Echo: hello there world"
# Prompt: "Be brief." (2 words) + "hello there world" (3); answer: 4 words.
USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 4,
    "total_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 0},
}


async def _chat(api, persona, **body):
    body.setdefault("messages", MESSAGES)
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=persona.headers
    )


def _run_requests(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


async def test_it_answers_with_a_chat_completion(api, alice, cloudflare):
    response = await _chat(api, alice, model=LLAMA)

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == LLAMA
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": ANSWER}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == USAGE


async def test_it_sends_cloudflare_the_messages_params_and_token(api, alice, cloudflare, upstream):
    await _chat(
        api,
        alice,
        model=LLAMA,
        max_tokens=50,
        temperature=0.7,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )

    [sent] = _run_requests(upstream)
    assert sent["path"] == (
        f"/client/v4/accounts/{fake_upstream.CLOUDFLARE_ACCOUNT}/ai/run/{LLAMA}"
    )
    assert sent["headers"]["authorization"] == f"Bearer {fake_upstream.CLOUDFLARE_TOKEN}"
    assert sent["json"] == {
        "messages": MESSAGES,
        "stream": False,
        "max_tokens": 50,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }


async def test_it_sends_max_completion_tokens_as_max_tokens(api, alice, cloudflare, upstream):
    await _chat(api, alice, model=LLAMA, max_completion_tokens=3)

    [sent] = _run_requests(upstream)
    assert sent["json"]["max_tokens"] == 3
    assert "max_completion_tokens" not in sent["json"]


async def test_it_does_not_send_cloudflare_parameters_it_does_not_take(
    api, alice, cloudflare, upstream
):
    await _chat(api, alice, model=LLAMA, user="user-1234", n=1)

    [sent] = _run_requests(upstream)
    # max_tokens is always sent: the gateway's default when the client gave none.
    assert set(sent["json"]) == {"messages", "stream", "max_tokens"}


async def test_it_flattens_text_parts_to_a_string_for_cloudflare(api, alice, cloudflare, upstream):
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}],
        }
    ]

    response = await _chat(api, alice, model=LLAMA, messages=messages)

    assert response.status_code == 200
    [sent] = _run_requests(upstream)
    assert sent["json"]["messages"] == [{"role": "user", "content": "hello\nthere"}]
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello there"


async def test_it_resolves_an_alias_and_echoes_the_name_asked_for(api, alice, cloudflare, upstream):
    response = await _chat(api, alice, model="gpt-4o-mini")

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o-mini"
    [sent] = _run_requests(upstream)
    assert sent["path"].endswith(f"/ai/run/{LLAMA}")


async def test_it_reports_length_when_max_tokens_cuts_the_answer(api, alice, cloudflare):
    response = await _chat(api, alice, model=LLAMA, max_tokens=2)

    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Echo: hello"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


async def test_it_cuts_the_answer_at_a_stop_sequence_for_cloudflare(
    api, alice, cloudflare, upstream
):
    response = await _chat(api, alice, model=LLAMA, stop=[" there", "zzz"])

    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "Echo: hello"
    assert choice["finish_reason"] == "stop"
    # Workers AI takes no stop sequences: the gateway applies them.
    [sent] = _run_requests(upstream)
    assert "stop" not in sent["json"]


async def test_it_answers_through_an_openai_compatible_provider(
    api, alice, openai_upstream, upstream
):
    response = await _chat(api, alice, model="gpt-test-mini", max_tokens=2, user="u-1")

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "gpt-test-mini"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hello"}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {**USAGE, "completion_tokens": 2, "total_tokens": 7}
    [sent] = [r for r in upstream.requests if r["path"] == "/openai/v1/chat/completions"]
    assert sent["headers"]["authorization"] == f"Bearer {fake_upstream.OPENAI_KEY}"
    assert sent["json"] == {
        "model": "gpt-test-mini",
        "messages": MESSAGES,
        "max_tokens": 2,
        "user": "u-1",
    }


async def test_it_passes_stop_sequences_to_an_openai_compatible_provider(
    api, alice, openai_upstream, upstream
):
    await _chat(api, alice, model="gpt-test-mini", stop="\n\n")

    [sent] = [r for r in upstream.requests if r["path"] == "/openai/v1/chat/completions"]
    assert sent["json"]["stop"] == ["\n\n"]


async def test_it_answers_through_the_echo_model(api, alice):
    response = await _chat(api, alice, model="echo")

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "echo"
    assert body["choices"][0]["message"]["content"] == "hello there world"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {**USAGE, "completion_tokens": 3, "total_tokens": 8}


async def test_it_refuses_chat_with_an_embedding_model(api, alice, cloudflare, upstream):
    response = await _chat(api, alice, model="@cf/baai/bge-small-en-v1.5")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert _run_requests(upstream) == []


async def test_it_lets_a_limited_key_use_its_model_by_alias(api, carol, cloudflare):
    response = await _chat(api, carol, model="gpt-4o-mini")

    assert response.status_code == 200

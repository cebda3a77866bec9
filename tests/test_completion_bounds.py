"""The completion bound an OpenAI-compatible upstream is sent.

Admission reserves, for a request that names no maximum, the model's own default bound
(Model.default_max_tokens), else DEFAULT_MAX_TOKENS, bounded by the model's context window
(completions/worst_case.py). The upstream is sent that bound, so that
no answer runs past what was reserved; a maximum the client named is sent as it came. OpenAI's
own API takes the bound of a chat as `max_completion_tokens` (its reasoning models refuse
`max_tokens`); other servers as `max_tokens`.
"""

import json

import httpx
import pytest

from completions.models import Model, Provider
from completions.providers import estimates, get_provider
from completions.providers.types import ChatRequest
from tests.limited_keys import chat, new_key

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there"}]
CHAT_PATH = "/openai/v1/chat/completions"
# A PNG of one pixel.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
COMPLETIONS_PATH = "/openai/v1/completions"


async def _post(api, persona, path, **body):
    body.setdefault("model", "gpt-test-mini")
    return await api.post(path, data=body, content_type="application/json", headers=persona.headers)


async def _chat(api, persona, **body):
    body.setdefault("messages", MESSAGES)
    return await _post(api, persona, "/v1/chat/completions", **body)


def _sent(upstream, path=CHAT_PATH):
    [sent] = [r["json"] for r in upstream.requests if r["path"] == path]
    return sent


async def test_it_sends_the_reserved_bound_when_a_chat_names_none(
    api, alice, openai_upstream, upstream, settings
):
    response = await _chat(api, alice)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello there"
    assert _sent(upstream)["max_tokens"] == settings.DEFAULT_MAX_TOKENS


async def test_it_cuts_an_answer_at_the_gateways_default_when_a_chat_names_no_maximum(
    api, alice, openai_upstream, settings
):
    settings.DEFAULT_MAX_TOKENS = 2

    response = await _chat(api, alice)

    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "Echo: hello"
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_it_bounds_the_default_by_what_the_context_window_leaves_after_the_prompt(
    api, alice, openai_upstream, upstream
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(context_window=100)

    await _chat(api, alice)

    # "hello there": 11 characters, 3 tokens at 4 characters a token, and the 32 tokens a
    # chat template may add that admission allows for (worst_case.PROMPT_OVERHEAD_TOKENS).
    assert _sent(upstream)["max_tokens"] == 100 - 3 - 32


async def test_it_sends_a_streamed_chat_the_bound_too(api, alice, openai_upstream, upstream):
    await Model.objects.filter(name="gpt-test-mini").aupdate(context_window=100)

    response = await _chat(api, alice, stream=True)
    b"".join([chunk async for chunk in response.streaming_content])

    sent = _sent(upstream)
    assert (sent["stream"], sent["max_tokens"]) == (True, 100 - 3 - 32)


async def test_it_leaves_room_in_the_window_for_each_image_of_the_prompt(
    api, alice, openai_upstream, upstream
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(
        context_window=10_000, accepts_images=True
    )
    image = {"type": "image_url", "image_url": {"url": PIXEL}}
    text = {"type": "text", "text": "hello there"}

    await _chat(api, alice, messages=[{"role": "user", "content": [text, image]}])

    # The image's tokens are not estimated: what the largest image may take is left out of
    # the window (worst_case.IMAGE_TOKENS), as admission reserves it.
    assert _sent(upstream)["max_tokens"] == 10_000 - 3 - 32 - 6_404


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
async def test_it_forwards_the_clients_own_maximum_untouched(
    api, alice, openai_upstream, upstream, name
):
    await _chat(api, alice, **{name: 10_000})

    sent = _sent(upstream)
    assert sent["max_tokens"] == 10_000
    assert "max_completion_tokens" not in sent


async def test_it_sends_the_bound_when_a_response_names_no_max_output_tokens(
    api, alice, openai_upstream, upstream, settings
):
    response = await _post(api, alice, "/v1/responses", input="hello there")

    assert response.status_code == 200
    assert _sent(upstream)["max_tokens"] == settings.DEFAULT_MAX_TOKENS


async def test_it_forwards_a_responses_max_output_tokens_untouched(
    api, alice, openai_upstream, upstream
):
    await _post(api, alice, "/v1/responses", input="hello there", max_output_tokens=9_000)

    assert _sent(upstream)["max_tokens"] == 9_000


async def test_it_sends_a_legacy_completion_openais_default_of_16_tokens(
    api, alice, openai_upstream, upstream
):
    await _post(api, alice, "/v1/completions", prompt="hello there")

    assert _sent(upstream, COMPLETIONS_PATH)["max_tokens"] == 16


@pytest.fixture
def openai_itself(db, monkeypatch):
    """A provider at OpenAI's own address, its HTTP answered by the test (the providers'
    one seam, get_client); returns the bodies it was sent."""
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_OPENAI_KEY", "sk-test")
    provider = Provider.objects.create(
        name="openai",
        kind=Provider.OPENAI,
        base_url="https://api.openai.com/v1",
        api_key_env="GATEWAY_PROVIDER_TEST_OPENAI_KEY",
    )
    Model.objects.create(name="gpt-5-mini", provider=provider)
    Model.objects.create(name="gpt-3.5-turbo-instruct", provider=provider)
    bodies = []

    def answer(request):
        bodies.append(json.loads(request.content))
        usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
        if request.url.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "Hi"}}
        else:
            choice = {"index": 0, "text": "Hi"}
        return httpx.Response(
            200, json={"choices": [{**choice, "finish_reason": "stop"}], "usage": usage}
        )

    monkeypatch.setattr(
        "completions.providers.base.get_client",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )
    return bodies


async def test_it_sends_openai_itself_the_bound_as_max_completion_tokens(
    api, alice, openai_itself, settings
):
    response = await _chat(api, alice, model="gpt-5-mini")

    assert response.status_code == 200
    [sent] = openai_itself
    assert sent["max_completion_tokens"] == settings.DEFAULT_MAX_TOKENS
    assert "max_tokens" not in sent


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
async def test_it_sends_openai_itself_the_clients_maximum_as_max_completion_tokens(
    api, alice, openai_itself, name
):
    response = await _chat(api, alice, model="gpt-5-mini", **{name: 300})

    assert response.status_code == 200
    [sent] = openai_itself
    assert sent["max_completion_tokens"] == 300
    assert "max_tokens" not in sent


async def test_it_sends_openai_itself_a_legacy_completions_max_tokens_under_that_name(
    api, alice, openai_itself
):
    response = await _post(
        api, alice, "/v1/completions", model="gpt-3.5-turbo-instruct", prompt="hello"
    )

    assert response.status_code == 200
    [sent] = openai_itself
    assert (sent["max_tokens"], "max_completion_tokens" in sent) == (16, False)


async def test_a_call_reads_its_prompt_once_for_its_bound_and_its_estimated_usage(
    openai_upstream, monkeypatch
):
    flattened = []
    monkeypatch.setattr(
        estimates, "prompt_text", lambda request: flattened.append(request) or "hello there"
    )
    chat = ChatRequest(
        model="gpt-test-no-usage", messages=[{"role": "user", "content": "hello there"}]
    )

    result = await get_provider(openai_upstream).chat(chat)

    assert result.usage.estimated
    # A long prompt is read whole to estimate it (its messages flattened, its tools
    # serialized): once a call, not once for the bound it is sent and again for the usage
    # the upstream did not report.
    assert len(flattened) == 1


# A model's own default bound: a reasoning model (OpenAI's o-series and gpt-5, gpt-oss)
# spends its reasoning inside the bound, so the gateway's default may be too small for it.


async def test_a_models_own_default_bound_is_sent_when_a_chat_names_none(
    api, alice, openai_upstream, upstream, settings
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(default_max_tokens=25_000)

    await _chat(api, alice)

    assert _sent(upstream)["max_tokens"] == 25_000
    assert settings.DEFAULT_MAX_TOKENS != 25_000


async def test_a_models_own_default_bound_is_still_bounded_by_its_context_window(
    api, alice, openai_upstream, upstream
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(
        default_max_tokens=25_000, context_window=100
    )

    await _chat(api, alice)

    # "hello there": 3 tokens at 4 characters a token, and a template's 32.
    assert _sent(upstream)["max_tokens"] == 100 - 3 - 32


async def test_admission_reserves_a_models_own_default_bound(api, openai_upstream, upstream):
    # Room for the gateway's default (4,096) and a prompt, not for 25,000 tokens.
    headers = await new_key(tokens_per_minute=10_000)
    assert (await chat(api, headers, model="gpt-test-mini", max_tokens=None)).status_code == 200

    model = await Model.objects.aget(name="gpt-test-mini")
    model.default_max_tokens = 25_000
    # Saved as in the admin, which clears the catalogue of models the gateway keeps.
    await model.asave()
    response = await chat(api, headers, model="gpt-test-mini", max_tokens=None)

    assert response.status_code == 429
    assert "tokens per minute" in response.json()["error"]["message"]
    assert len([r for r in upstream.requests if r["path"] == CHAT_PATH]) == 1
